"""User models: a TorchScript file, or ``package.module:factory`` plus a weights file.

Weights are read without unpickling arbitrary objects: safetensors files directly, other files with
``torch.load(..., weights_only=True)`` (tensors and plain containers only). The input range is declared,
never guessed: by default the model receives [0, 1] pixels; ``mean``/``std`` put a per-channel
normalisation in front of it (e.g. ImageNet's 0.485/0.229 ...).
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from smoothadv.core.errors import ModelError
from smoothadv.models.layers import Normalize, Preprocessed

_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def is_factory_spec(spec: str) -> bool:
    """True when ``spec`` looks like ``package.module:callable``."""
    return bool(_FACTORY.match(spec))


def load_torchscript(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Load a TorchScript model file (``torch.jit.save``) in eval mode.

    Raises:
        ModelError: missing file or not a TorchScript archive.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(path), map_location=device)
    except Exception as error:  # torch raises RuntimeError/ValueError/zip errors for non-TorchScript files
        raise ModelError(
            f"{path} is not a TorchScript file ({type(error).__name__}); save the model with "
            "torch.jit.save(torch.jit.script(model), path), or give `package.module:factory` with --weights."
        ) from error
    return model.eval()


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a ``torch.save`` file (``weights_only=True``).

    A ``torch.save`` file may hold the state dict itself or a dict with it under ``"state_dict"`` or
    ``"model"``.

    Raises:
        ModelError: missing file, unreadable file, or content that is not a mapping of names to tensors
            (files that need arbitrary objects unpickled are refused).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelError(f"cannot read {path} as safetensors ({error}).") from error
    if _is_torchscript_archive(path):
        raise ModelError(f"{path} is a TorchScript file, not a weights file: give it as --model {path} "
                         "(it holds its own weights), without --weights.")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for forbidden objects, RuntimeError/EOFError for bad files
        raise ModelError(
            f"cannot load {path} as a state dict with weights_only=True ({type(error).__name__}: "
            f"{_first_line(error)}); save only tensors: "
            "torch.save(model.state_dict(), path) or safetensors."
        ) from error
    if isinstance(content, Mapping) and not _is_tensor_map(content):
        for key in ("state_dict", "model"):
            if isinstance(content.get(key), Mapping) and _is_tensor_map(content[key]):
                content = content[key]
                break
    if not isinstance(content, Mapping) or not _is_tensor_map(content):
        raise ModelError(f"{path} does not hold a state dict (a mapping of parameter names to tensors).")
    return dict(content)


def _is_torchscript_archive(path: Path) -> bool:
    """True for a ``torch.jit.save`` archive (a zip holding compiled code), which ``torch.load`` rejects."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())


def _first_line(error: Exception) -> str:
    """The first line of an error message without terminal colour codes (torch adds some)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    return text.splitlines()[0] if text else ""


def _is_tensor_map(content: Mapping) -> bool:
    return bool(content) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items()
    )


def build_from_factory(spec: str, *, weights: str | Path | None = None) -> nn.Module:
    """Call ``package.module:factory()`` and load ``weights`` into the module it returns (strictly).

    Raises:
        ModelError: bad spec, import failure, the factory does not return an ``nn.Module``, or the
            weights do not fit.
    """
    if not is_factory_spec(spec):
        raise ModelError(f"{spec!r} is not of the form package.module:factory.")
    module_name, attribute = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelError(
            f"cannot import {module_name} for {spec!r} ({error}); is it on PYTHONPATH?"
        ) from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ModelError(f"{module_name} has no callable {attribute!r}.")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec}() returned {type(model).__name__}, expected a torch.nn.Module.")
    if weights is not None:
        state = load_state_dict_file(weights)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ModelError(f"{weights} does not fit {spec}(): {error}") from error
    return model


def with_normalization(
    model: nn.Module, mean: float | Sequence[float] | None, std: float | Sequence[float] | None
) -> nn.Module:
    """Put ``(x - mean) / std`` in front of ``model`` when either is given (the other defaults to 0 or 1)."""
    if mean is None and std is None:
        return model
    return Preprocessed(Normalize(0.0 if mean is None else mean, 1.0 if std is None else std), model)
