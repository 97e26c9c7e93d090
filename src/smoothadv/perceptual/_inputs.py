"""Turning the images users give to the full-reference scores (paths, arrays, tensors) into 8-bit arrays.

Conventions: NumPy arrays are laid out like image files, (H, W) or (H, W, C); tensors like the rest of
smoothadv, (H, W), (C, H, W) or (1, C, H, W). C is 1, 3 or 4 (alpha is dropped). uint8 values are used as
they are; floating-point values must lie in [0, 1] and are quantised as ``round(255 x)``, the 8-bit
quantisation of the paper's adversarial images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from smoothadv.core.errors import InputError, NonFiniteError, RangeError, ShapeError
from smoothadv.core.images import read_image_uint8, to_uint8
from smoothadv.core.validation import value_range

#: MATLAB ``rgb2gray`` luma weights (used by the original MAD code).
RGB2GRAY_WEIGHTS = (0.298936021293776, 0.587043074451121, 0.114020904255103)


def to_uint8_array(image, name: str = "image") -> np.ndarray:
    """Bring an image (path, array or tensor) to an (H, W) grey or (H, W, 3) colour uint8 array.

    Raises:
        DataError: a path that is missing or not a readable image.
        InputError: an unsupported type or dtype.
        ShapeError: an unsupported layout.
        RangeError: floating-point values outside [0, 1].
        NonFiniteError: NaN or inf values.
    """
    if isinstance(image, (str, Path)):
        return read_image_uint8(image)
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.dim() == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.dim() == 3:
            tensor = tensor.permute(1, 2, 0)
        elif tensor.dim() != 2:
            raise ShapeError(
                f"{name} tensor must be (H, W), (C, H, W) or (1, C, H, W), got {tuple(image.shape)}."
            )
        array = tensor.numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise InputError(
            f"{name} must be an image file path, a NumPy array or a torch tensor, got {type(image).__name__}."
        )
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[..., 0] if array.shape[2] == 1 else array[..., :3]
    elif array.ndim != 2:
        raise ShapeError(
            f"{name} must be a grey (H, W) or colour (H, W, 3) image (tensors: (C, H, W)), got shape "
            f"{tuple(array.shape)}."
        )
    return _quantise(array, name)


def to_gray_uint8(image, name: str = "image") -> np.ndarray:
    """Like :func:`to_uint8_array`, then colour to grey with MATLAB's ``rgb2gray`` (rounded): (H, W) uint8."""
    array = to_uint8_array(image, name)
    return rgb2gray(array) if array.ndim == 3 else array


def rgb2gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint8 with MATLAB's weights, rounded half away from zero."""
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    grey = RGB2GRAY_WEIGHTS[0] * r + RGB2GRAY_WEIGHTS[1] * g + RGB2GRAY_WEIGHTS[2] * b
    return np.clip(np.floor(grey + 0.5), 0, 255).astype(np.uint8)


def _quantise(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise InputError(
            f"{name} must hold numbers (uint8 0-255 or floats in [0, 1]), got dtype {array.dtype}."
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(
            f"{name} has dtype {array.dtype}; give uint8 (0-255) or floats in [0, 1] "
            "(e.g. array.astype(np.uint8))."
        )
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise NonFiniteError(f"{name} contains NaN or inf values.")
    lo, hi = float(values.min()), float(values.max())
    if lo < 0.0 or hi > 1.0:
        raise RangeError(
            f"floating-point {name} must lie in [0, 1], got {value_range(lo, hi)}; divide 0-255 values by "
            "255 or pass a uint8 array."
        )
    return to_uint8(torch.from_numpy(values)).numpy()
