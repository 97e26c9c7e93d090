"""Reading and writing image files as tensors in [0, 1], with clear errors for files that are not images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from smoothadv._validation import check_finite
from smoothadv.errors import DataError, ShapeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def load_image(path: str | Path, *, mode: str | None = "RGB") -> torch.Tensor:
    """Read an image file as a float tensor of shape (C, H, W) in [0, 1].

    Args:
        path: image file (PNG, JPEG, ...).
        mode: PIL mode to convert to (``"RGB"``, ``"L"``), or None to keep the file's own mode.

    Raises:
        DataError: the file is missing or is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            if mode is not None:
                image = image.convert(mode)
            elif image.mode not in ("L", "RGB"):
                image = image.convert("RGB")
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"cannot read {path} as an image ({error}); give a PNG or JPEG file.") from error
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """Quantise a (C, H, W) image in [0, 1] to an (H, W, C) or (H, W) uint8 array (``round(255 x)``)."""
    if image.dim() != 3:
        raise ShapeError(f"expected one image of shape (C, H, W), got {tuple(image.shape)}.")
    check_finite(image, "image")
    array = (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write a (C, H, W) image in [0, 1] (C = 1 or 3) as an 8-bit file; parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)
    return path
