"""The one home of image files and 8-bit values: reading, preprocessing for a model, writing, quantising.

* :func:`open_image` opens a file with the errors every reader shares (missing, a folder, not an image);
  :func:`read_image` returns it as a (C, H, W) float tensor in [0, 1], optionally checked against the
  channels a model expects and resized / centre-cropped to its input (:func:`resize_center_crop`);
  :func:`read_image_uint8` returns the file's 8-bit values as an array (for the full-reference scores).
* :func:`to_uint8` is THE 8-bit conversion, ``round(255 x)`` on values clamped to [0, 1];
  :func:`quantize_8bit` maps images onto those levels (``round(255 x) / 255``, what a PNG stores) and
  :func:`save_image` writes them.

Resizing uses PIL's bilinear filter, which is antialiased when shrinking, on the 8-bit pixels; the result
is therefore still on the 8-bit grid, so an adversarial example quantised with :func:`quantize_8bit`
compares with a clean image that was itself 8-bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from smoothadv.core.errors import ConfigError, DataError, ShapeError
from smoothadv.core.validation import check_finite

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: PIL modes of one-channel images with more than 8 bits (16-bit PNG/TIFF open as "I;16" or "I").
HIGH_DEPTH_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_GREY_MODES = ("L", "1", "LA", *HIGH_DEPTH_GREY_MODES)


def open_image(path: str | Path) -> Image.Image:
    """Open and fully load an image file as a PIL image (the file is closed on return).

    Raises:
        DataError: the path is missing, is a folder, is not a readable image, or holds several frames.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not an image file; give the image files inside it.")
    if not path.is_file():
        hint = ""
        try:
            float(str(path))
            hint = " (a number where a file was expected: write --mean/--std values comma-separated)"
        except ValueError:
            pass
        raise DataError(f"image file not found: {path}{hint}")
    try:
        with Image.open(path) as opened:
            frames = getattr(opened, "n_frames", 1)
            opened.load()
            image = opened.copy()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DataError(
            f"cannot read {path}: not a readable image ({error}); give a PNG or JPEG file."
        ) from error
    if frames > 1:
        raise DataError(f"{path} holds {frames} frames (an animation or a multi-page file); save the frame "
                        "you mean as a PNG.")
    return image


def image_channels(image: Image.Image) -> int:
    """Number of colour channels of a PIL image, not counting an alpha channel (1 or 3; 4 for CMYK)."""
    if image.mode == "P":
        return 3
    return len([band for band in image.getbands() if band != "A"])


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


def read_image(path: str | Path, *, channels: int | None = None, size: int | None = None,
               resize: int | None = None) -> torch.Tensor:
    """Read an image file as a (C, H, W) float32 tensor in [0, 1].

    Args:
        path: PNG, JPEG or any format PIL reads.
        channels: 1 (grey) or 3 (RGB) as a model expects: the file must have that many colour channels
            (an alpha channel is accepted only when fully opaque; palette images count as RGB). None keeps
            the file's own: grey files stay grey, everything else becomes RGB. 16-bit grey files are
            scaled to [0, 1] and rounded to the 8-bit levels every output stores.
        size: resize and centre-crop to ``size`` x ``size`` (a model's input); None keeps the file's size.
        resize: shorter side before the centre crop (None: ``size``).

    Raises:
        DataError: unreadable file, wrong number of channels, transparent pixels, or an image whose shorter
            side is below ``size`` (we never enlarge images: it would invent detail).
    """
    path = Path(path)
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}.")
    image = open_image(path)
    if channels is None:
        channels = 1 if image.mode in _GREY_MODES else 3
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
    high_depth = image.mode in HIGH_DEPTH_GREY_MODES
    image = _unit_float_grey(image) if high_depth else image.convert("L" if channels == 1 else "RGB")
    if size is not None:
        if min(image.size) < size:
            raise DataError(
                f"{path}: the image is {image.size[0]}x{image.size[1]} pixels, too small for the model's "
                f"{size}x{size} input; give an image whose shorter side is at least {size}."
            )
        image = resize_center_crop(image, size, resize)
    array = np.asarray(image, dtype=np.float32)
    # 16-bit files are put on the 8-bit levels every output of ours stores, so a saved clean crop and
    # the tensor the model saw are the same.
    array = np.round(np.clip(array, 0.0, 1.0) * 255.0) / 255.0 if high_depth else array / 255.0
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def _unit_float_grey(image: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer / float) grey image as a PIL "F" image with values in [0, 1].

    PIL's own ``convert("L")`` clips such values at 255 instead of scaling them, which turns a 16-bit
    PNG all white.
    """
    array = np.asarray(image).astype(np.float64)
    if image.mode != "F":
        array = array / 65535.0
    return Image.fromarray(array.astype(np.float32), mode="F")


def read_image_uint8(path: str | Path) -> np.ndarray:
    """The 8-bit values of an image file: (H, W) for grey files, (H, W, 3) otherwise (alpha dropped;
    16-bit grey files are scaled to 8 bits)."""
    image = open_image(path)
    if image.mode in HIGH_DEPTH_GREY_MODES:
        return to_uint8(torch.from_numpy(np.array(_unit_float_grey(image)))).numpy()
    if image.mode != "L":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """THE 8-bit conversion: ``round(255 x)`` of values clamped to [0, 1], as a uint8 tensor (same shape)."""
    return torch.round(images.detach().clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """``round(255 x) / 255``: the values an 8-bit PNG stores, in the dtype of ``images`` (differentiable
    nowhere: use it on results, not inside an objective)."""
    return torch.round(images.clamp(0.0, 1.0) * 255.0) / 255.0


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write a (C, H, W) image in [0, 1] (C = 1 or 3) as an 8-bit file; parent folders are created."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ShapeError(f"expected one image of shape (C, H, W) with C = 1 or 3, got {tuple(image.shape)}.")
    check_finite(image, "image")
    array = to_uint8(image).cpu().numpy()
    array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
