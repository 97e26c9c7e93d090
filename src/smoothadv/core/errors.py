"""Typed errors and warnings. Every user-facing error says what was wrong and how to fix it."""

import os
import sys
import warnings


class SmoothAdvError(Exception):
    """Base class of every error raised by smoothadv."""


class InputError(SmoothAdvError, ValueError):
    """A tensor, image or argument given by the user is not acceptable."""


class ShapeError(InputError):
    """A tensor has the wrong number of dimensions or a size that does not match."""


class RangeError(InputError):
    """Values lie outside the range they must lie in (pixels outside [0, 1], alpha outside [0, 1))."""


class NonFiniteError(InputError):
    """A tensor holds NaN or infinite values."""


class ConfigError(SmoothAdvError, ValueError):
    """An option has an unknown or inconsistent value."""


class OptionError(ConfigError, TypeError):
    """A function or class was called with a keyword it does not take (also a ``TypeError``, as Python's)."""


class DataError(SmoothAdvError):
    """A data file or folder cannot be read or does not hold what it should."""


class ModelError(SmoothAdvError):
    """A model cannot be found, loaded or used."""


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped before reaching its tolerance."""


class PreflightWarning(UserWarning):
    """A check before an attack found something suspicious (but not fatal)."""


class InferredDefaultWarning(UserWarning):
    """An option the user left out was inferred (e.g. the attack preset from the model's input size)."""


def pip_install(requirement: str) -> str:
    """The command that installs ``requirement`` (without its dependencies) into the running Python:
    right inside the repository's .venv and in any other environment."""
    import shlex

    return f"{shlex.quote(sys.executable)} -m pip install --no-deps {requirement}"


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def warn(message: str, category: type[Warning]) -> None:
    """Issue a warning attributed to the first caller outside smoothadv: the user's line, however deep
    inside the library it is raised."""
    frame = sys._getframe(1)
    level = 2  # warnings.warn's stacklevel of our caller's frame
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
