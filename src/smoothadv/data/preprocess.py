"""Reading one image file the way a model expects it: channel check, resize of the shorter side, centre crop.

Resizing uses PIL's bilinear filter, which is antialiased when shrinking (its support grows with the
scale factor), on the 8-bit pixels; the result is therefore still on the 8-bit grid, so an adversarial
example quantised with ``round(255 x) / 255`` compares with a clean image that was itself 8-bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from smoothadv.errors import ConfigError, DataError


def resize_center_crop(image: Image.Image, size: int, resize: int | None = None) -> Image.Image:
    """Resize ``image`` so its shorter side is ``resize`` pixels, then crop the central ``size`` x ``size``.

    Args:
        image: a PIL image.
        size: side of the square output.
        resize: shorter side after resizing (>= ``size``); None means ``size`` (crop only the longer side).

    Raises:
        ConfigError: ``resize`` smaller than ``size``.
    """
    resize = size if resize is None else resize
    if resize < size:
        raise ConfigError(f"resize ({resize}) must be at least the crop size ({size}).")
    width, height = image.size
    if min(width, height) != resize:
        scale = resize / min(width, height)
        new_size = (max(resize, round(width * scale)), max(resize, round(height * scale)))
        image = image.resize(new_size, Image.Resampling.BILINEAR)
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def image_channels(image: Image.Image) -> int:
    """Number of colour channels of a PIL image, not counting an alpha channel (1 or 3; 4 for CMYK)."""
    bands = image.getbands()
    if image.mode == "P":
        return 3
    return len([b for b in bands if b != "A"])


def read_image(path: str | Path, *, channels: int, size: int, resize: int | None = None) -> torch.Tensor:
    """Read an image file as a (``channels``, ``size``, ``size``) float32 tensor in [0, 1].

    Args:
        path: PNG, JPEG or any format PIL reads.
        channels: 1 (grey) or 3 (RGB) as the model expects; the file must have that many colour channels
            (an alpha channel is accepted only when fully opaque; palette images count as RGB).
        size: output side (the model's input size).
        resize: shorter side before the centre crop (None: ``size``).

    Raises:
        DataError: unreadable file, wrong number of channels, transparent pixels, or an image whose shorter
            side is below ``size`` (we never enlarge images: it would invent detail).
    """
    path = Path(path)
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}.")
    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable image ({error}); give a PNG or JPEG file.") from error
    found = image_channels(image)
    if found != channels:
        kind = {1: "greyscale", 3: "colour (RGB)"}.get(found, f"{found}-channel ({image.mode})")
        want = {1: "greyscale", 3: "RGB"}[channels]
        raise DataError(
            f"{path}: the image is {kind} but the model expects {want} input "
            f"({channels} channel{'s' if channels > 1 else ''}); convert the file first."
        )
    if "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if alpha.min() < 255:
            raise DataError(f"{path}: the image has transparent pixels; flatten it onto a background first.")
    image = image.convert("L" if channels == 1 else "RGB")
    if min(image.size) < size:
        raise DataError(
            f"{path}: the image is {image.size[0]}x{image.size[1]} pixels, too small for the model's "
            f"{size}x{size} input; give an image whose shorter side is at least {size}."
        )
    image = resize_center_crop(image, size, resize)
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))
