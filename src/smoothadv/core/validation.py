"""Input checks shared by every public entry point (the boundary between the user and the library)."""

from __future__ import annotations

import torch

from smoothadv.core.errors import ConfigError, InputError, NonFiniteError, RangeError, ShapeError


def check_image_batch(images: torch.Tensor, name: str = "images", *, check_range: bool = True) -> None:
    """Check that ``images`` is a finite float batch of shape (B, C, H, W) in [0, 1].

    Raises:
        InputError: not a floating-point tensor.
        ShapeError: not 4-D or with an empty dimension.
        NonFiniteError: NaN or inf values.
        RangeError: values outside [0, 1] (when ``check_range``).
    """
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}.")
    if images.dim() != 4:
        raise ShapeError(
            f"{name} must have shape (B, C, H, W), got {tuple(images.shape)}; "
            "add a batch dimension with images.unsqueeze(0) for a single image."
        )
    if images.numel() == 0:
        raise ShapeError(
            f"{name} is empty (shape {tuple(images.shape)}); every dimension must be at least 1."
        )
    if not images.is_floating_point():
        raise InputError(
            f"{name} must be a floating-point tensor with values in [0, 1], got dtype {images.dtype}; "
            "convert 8-bit images with images.float() / 255."
        )
    check_finite(images, name)
    if check_range:
        lo, hi = float(images.detach().min()), float(images.detach().max())
        if lo < 0.0 or hi > 1.0:
            raise RangeError(
                f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
                "divide 0-255 images by 255 and undo any mean/std normalisation (put it inside the model)."
            )


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise :class:`NonFiniteError` when ``tensor`` holds NaN or inf."""
    if not bool(torch.isfinite(tensor).all()):
        raise NonFiniteError(f"{name} contains NaN or inf values; check the code that produced it.")


def check_same_shape(tensor: torch.Tensor, expected: tuple[int, ...], name: str,
                     reference_name: str) -> None:
    """Raise :class:`ShapeError` unless ``tensor`` has the shape ``expected`` (of ``reference_name``)."""
    if tuple(tensor.shape) != tuple(expected):
        raise ShapeError(
            f"{name} has shape {tuple(tensor.shape)} but {reference_name} has shape "
            f"{tuple(expected)}; they must match."
        )


def check_choice(value: object, choices: tuple, name: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")


def check_positive(value: float, name: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number > 0."""
    if not isinstance(value, (int, float)) or not value > 0 or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number > 0; got {value!r}.")
