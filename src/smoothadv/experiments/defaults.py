"""The one resolver of defaults that depend on a model: its preset, its dataset, the batch size.

Every experiment (evaluate, reproduce, figures, attack on files) asks here instead of deciding itself.
"""

from __future__ import annotations

from smoothadv.attacks.presets import check_preset, preset_for_size
from smoothadv.core.errors import ConfigError
from smoothadv.data import ImageDataset, load_imagenet_samples, load_mnist
from smoothadv.models import model_info
from smoothadv.models.spec import ModelSpec

#: Images per attack batch by preset: MNIST batches fill a CPU well; ImageNet ones bound the memory.
BATCH_SIZES = {"mnist": 100, "imagenet": 4}


def resolve_preset(model: str | ModelSpec, preset: str | None = None) -> tuple[str, str]:
    """The attack preset of a model and where it comes from (printed by the commands).

    ``preset`` (or the spec's own) wins; else ``mnist`` for C4 models, ``imagenet`` for EfficientNet-Lite;
    user models follow their declared input size (below 64 pixels: ``mnist``).

    Returns:
        (preset, reason), e.g. ``("mnist", "inferred from the 32x32 input (below 64 pixels)")``.

    Raises:
        ModelError: unknown model. ConfigError: a user model of unknown input size and no preset.
    """
    spec = ModelSpec.parse(model)
    if preset is not None or spec.preset is not None:
        return check_preset(preset or spec.preset), "given"
    info = spec.info()
    if info.dataset == "mnist":
        return "mnist", f"{info.name} is an MNIST model"
    if info.dataset == "imagenet-samples":
        return "imagenet", f"{info.name} is an ImageNet model"
    if info.input_size is None:
        raise ConfigError(f"cannot tell the preset of {spec.model!r}: pass --preset mnist or imagenet, or "
                          "declare --input-size.")
    chosen = preset_for_size(info.input_size)
    side = "below" if chosen == "mnist" else "at least"
    return chosen, f"inferred from the {info.input_size}x{info.input_size} input ({side} 64 pixels)"


def preset_for_model(model: str | ModelSpec) -> str:
    """The attack preset of a model, without where it came from (see :func:`resolve_preset`)."""
    return resolve_preset(model)[0]


def batch_size_for(preset: str) -> int:
    """Default images per attack batch under ``preset``."""
    return BATCH_SIZES[check_preset(preset)]


def default_dataset(model_name: str, *, limit: int | None = None, lazy: bool = False) -> ImageDataset:
    """The dataset a registered model is evaluated on: MNIST test for C4 models, the foolbox ImageNet
    photos (preprocessed to the model's input size) for EfficientNet-Lite models and their ``+bilateral``
    variants.

    Args:
        model_name: a registry name (see ``smoothadv models``).
        limit: keep the first ``limit`` samples.
        lazy: read images on demand (ImageNet photos only).

    Raises:
        ModelError: unknown model name.
        ConfigError: the model has no default dataset (user models: load a folder instead).
    """
    info = model_info(model_name)
    if info.dataset == "mnist":
        return load_mnist("test", limit=limit)
    if info.dataset == "imagenet-samples":
        return load_imagenet_samples(info.input_size, resize=info.resize, lazy=lazy).head(limit)
    raise ConfigError(
        f"model {model_name!r} has no default dataset; "
        "load images with smoothadv.data.load_image_folder(...)."
    )
