"""Input checks shared by every public entry point (the boundary between the user and the library)."""

from __future__ import annotations

import difflib
import functools
import inspect
import os
from pathlib import Path

import torch

from smoothadv.core.errors import ConfigError, InputError, NonFiniteError, OptionError, RangeError, ShapeError


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
                f"{name} must lie in [0, 1], got values in {value_range(lo, hi)}; "
                "divide 0-255 images by 255 and undo any mean/std normalisation (put it inside the model)."
            )


def value_range(lo: float, hi: float) -> str:
    """``[lo, hi]`` with enough digits that a value just outside [0, 1] does not print as 0 or 1."""
    def shown(value: float, bound: float) -> str:
        for digits in (4, 6, 8, 10, 17):
            text = f"{value:.{digits}g}"
            if (value == bound) == (float(text) == bound):
                return text
        return repr(value)

    return f"[{shown(lo, 0.0)}, {shown(hi, 1.0)}]"


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


def check_positive_int(value: object, name: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer >= 1 (``True`` is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")


def check_positive(value: float, name: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number > 0."""
    if not isinstance(value, (int, float)) or not value > 0 or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number > 0; got {value!r}.")


def check_keywords(function):
    """Decorator: a keyword argument ``function`` does not take raises :class:`OptionError` naming the
    closest accepted keywords, instead of Python's bare ``TypeError``."""
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return function
    accepted = [name for name, p in parameters.items()
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name != "self"]

    @functools.wraps(function)
    def checked(*args, **kwargs):
        unknown = [key for key in kwargs if key not in parameters]
        if unknown:
            owner = function.__qualname__.removesuffix(".__init__")
            if function.__name__ == "__init__" and args:
                owner = type(args[0]).__name__
            hints = []
            for key in unknown:
                close = " or ".join(map(repr, difflib.get_close_matches(key, accepted, n=2)))
                hints.append(f"{key!r}" + (f" (did you mean {close}?)" if close else ""))
            raise OptionError(
                f"{owner}() takes no keyword {', '.join(hints)}; it takes: {', '.join(accepted)}."
            )
        return function(*args, **kwargs)

    return checked


def make_output_dir(path: str | Path, option: str = "output") -> Path:
    """Create the output folder ``path`` (with its parents) and check that it can be written to.

    Raises:
        ConfigError: ``path`` is a file, cannot be created, or is not writable.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file, not a folder; give a folder to write into.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create the {option} folder {path}: {error.strerror or error}; "
            "choose a folder you can write to."
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"the {option} folder {path} is not writable; choose another one.")
    return path
