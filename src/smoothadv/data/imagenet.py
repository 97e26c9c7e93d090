"""ImageNet offline: the 1000 class names (a text asset) and the 20 labelled sample photos foolbox ships.

foolbox is installed with ``--no-deps`` and never imported (it would pull in its own dependencies); we only
read its ``data/imagenet_NN_LABEL.jpg`` files, located with ``importlib.util.find_spec``. The label of
each photo is the number after the last underscore of its name.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from importlib import resources
from pathlib import Path

import torch

from smoothadv.core.errors import DataError, pip_install
from smoothadv.core.images import read_image
from smoothadv.data.dataset import ImageDataset

_SAMPLE_NAME = re.compile(r"^imagenet_(\d+)_(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, indexed by class number (``smoothadv/assets/imagenet_classes.txt``).

    Each name is the first WordNet lemma of the class, as in the class index used by Keras and most
    pretrained-model hubs (so 243 is "bull mastiff", 559 "folding chair"; 134 and 517 are both "crane",
    638 and 639 both "maillot").
    """
    text = resources.files("smoothadv").joinpath("assets/imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:
        raise DataError(f"imagenet_classes.txt holds {len(names)} names, expected 1000; reinstall smoothadv.")
    return names


def foolbox_samples_dir() -> Path:
    """Folder of the sample photos inside the installed ``foolbox`` package (the package is not imported).

    Raises:
        DataError: foolbox or its data folder is missing.
    """
    hint = f"install it with `{pip_install('foolbox==3.3.4')}` (only its sample photos are used)"
    try:
        spec = importlib.util.find_spec("foolbox")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the foolbox package (source of the ImageNet sample photos) is not installed; {hint}."
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "data"
        if any(folder.glob("imagenet_*")):
            return folder
    raise DataError(f"foolbox is installed but has no data/imagenet_*.jpg photos; {hint}.")


def load_imagenet_samples(
    size: int = 224, *, resize: int | None = None, folder: str | Path | None = None, lazy: bool = False
) -> ImageDataset:
    """The 20 labelled ImageNet photos shipped with foolbox, preprocessed for a model with ``size`` input.

    Each photo (512 x 512) is resized so its shorter side is ``resize`` (bilinear, antialiased) and the
    central ``size`` x ``size`` square is kept.

    Args:
        size: model input side (224 for EfficientNet-Lite0, 260 for Lite2).
        resize: shorter side before cropping; default ``size + 32``, the EfficientNet evaluation crop
            (224/256 = 0.875 of the image).
        folder: read ``imagenet_NN_LABEL.jpg`` files from this folder instead of foolbox's.
        lazy: read each photo when a batch needs it instead of now.

    Returns:
        An :class:`ImageDataset` of (3, size, size) images with ground-truth labels and ImageNet class names.

    Raises:
        DataError: foolbox missing, or no sample photos found.
    """
    base = foolbox_samples_dir() if folder is None else Path(folder)
    files = []
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        match = _SAMPLE_NAME.match(path.name)
        if match:
            files.append((int(match.group(1)), int(match.group(2)), path))
    if not files:
        raise DataError(f"no imagenet_NN_LABEL.jpg photos in {base}.")
    files.sort()
    resize = size + 32 if resize is None else resize
    paths = [path for _, _, path in files]
    labels = torch.tensor([label for _, label, _ in files], dtype=torch.int64)
    if int(labels.max()) >= 1000:
        raise DataError(f"{base}: a photo's label is outside 0..999.")

    def load(index: int) -> torch.Tensor:
        return read_image(paths[index], channels=3, size=size, resize=resize)

    images = None if lazy else torch.stack([load(i) for i in range(len(paths))])
    return ImageDataset(
        labels=labels,
        ids=[path.name for path in paths],
        source=f"ImageNet samples ({len(paths)} photos from {base}), resize {resize} + centre crop {size}",
        image_shape=(3, size, size),
        images=images,
        class_names=imagenet_class_names(),
        load=load if lazy else None,
    )
