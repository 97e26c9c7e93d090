"""Small layers shared by the model definitions: TensorFlow "SAME" convolution and input normalisation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from smoothadv.core.errors import ConfigError


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's "SAME" mode along one axis.

    The output has ``ceil(size / stride)`` samples; the total padding is split with the extra pixel (if
    any) after, as TensorFlow does (PyTorch's symmetric ``padding=`` cannot express the odd case).
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from the input size at each call.

    Shape:
        (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("padding", 0) not in (0, "valid"):
            raise ConfigError("Conv2dSame computes its own padding; do not pass `padding`.")
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` in front of a model, so the whole takes [0, 1] pixels.

    Args:
        mean: one value, or one per channel (in the units of the model's input, e.g. 0.485 for [0, 1]).
        std: one value, or one per channel; all > 0.

    Shape:
        (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean_t.numel() == 0 or std_t.numel() == 0:
            raise ConfigError("mean and std need at least one value each.")
        if not bool(torch.isfinite(mean_t).all()) or not bool(torch.isfinite(std_t).all()):
            raise ConfigError("mean and std must be finite numbers.")
        if mean_t.numel() > 1 and std_t.numel() > 1 and mean_t.numel() != std_t.numel():
            raise ConfigError(
                f"mean has {mean_t.numel()} values but std has {std_t.numel()}; give one per channel each."
            )
        if bool((std_t <= 0).any()):
            raise ConfigError(f"std values must be > 0, got {std_t.tolist()}.")
        self.register_buffer("mean", mean_t.reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.reshape(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Preprocessed(nn.Module):
    """A model preceded by a fixed input transform: ``model(transform(x))``."""

    def __init__(self, transform: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.transform = transform
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x))
