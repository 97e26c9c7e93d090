"""The one resolver of defaults that depend on a model: its preset, its dataset, the batch size.

Every experiment (evaluate, reproduce, figures, attack on files) asks here instead of deciding itself.
"""

from __future__ import annotations

from smoothadv.attacks.presets import check_preset, preset_for_size
from smoothadv.core.errors import ConfigError
from smoothadv.data import ImageDataset, load_imagenet_samples, load_mnist
from smoothadv.models import model_info

#: Images per attack batch by preset: MNIST batches fill a CPU well; ImageNet ones bound the memory.
BATCH_SIZES = {"mnist": 100, "imagenet": 4}


def preset_for_model(model_name: str, image_size: int | None = None) -> str:
    """The attack preset of a model: ``mnist`` for C4 models, ``imagenet`` for EfficientNet-Lite; user
    models follow their input size (``image_size`` or the declared one; below 64 pixels: ``mnist``).

    Raises:
        ModelError: unknown model. ConfigError: a user model of unknown input size.
    """
    info = model_info(model_name)
    if info.dataset == "mnist":
        return "mnist"
    if info.dataset == "imagenet-samples":
        return "imagenet"
    size = image_size or info.input_size
    if size is None:
        raise ConfigError(f"cannot tell the preset of {model_name!r}; pass --preset mnist or imagenet.")
    return preset_for_size(size)


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
