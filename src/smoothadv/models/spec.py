"""A model named once: :class:`ModelSpec` says which network to build and what input it takes.

Every command that loads a model (``attack``, ``predict``, ``evaluate``, ``figure``) builds one of these
from the same options, or reads it from a spec file, so a user model is described in one place::

    # mynet.toml
    model = "mypackage.nets:small_cnn"      # or a TorchScript file, or a registry name
    weights = "small_cnn.safetensors"       # relative paths are relative to this file
    input_size = 32
    channels = 3
    mean = [0.485, 0.456, 0.406]
    std = [0.229, 0.224, 0.225]

``smoothadv evaluate --model mynet.toml --data my_images/ ...``; options given on the command line
replace the file's values.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smoothadv.core.errors import ConfigError, InferredDefaultWarning, ModelError, warn
from smoothadv.core.validation import check_positive_int

SPEC_SUFFIXES = (".toml", ".json")
_LABEL_SETS = ("imagenet", "mnist")


@dataclass(frozen=True)
class ModelSpec:
    """How to build a classifier and feed it images.

    Attributes:
        model: a registry name (``smoothadv models``), ``<name>+bilateral``, a TorchScript file, or
            ``package.module:factory``.
        weights: weights of a factory model (``.safetensors`` or a state dict saved with ``torch.save``);
            for a registered model, replaces its shipped weights.
        input_size: side of the square input of a user model (registered models know theirs).
        channels: 1 (grey) or 3 (RGB) input channels of a user model (default 3).
        mean, std: per-channel normalisation ``(x - mean) / std`` a user model expects on [0, 1] pixels
            (one value, or one per channel); applied inside the loaded model, so attacks still see [0, 1].
        resize: shorter side images are resized to before the centre crop (default: ``input_size``).
        preset: attack parameters, ``mnist`` or ``imagenet`` (default: inferred from the model; checked
            where it is used, :func:`smoothadv.experiments.defaults.resolve_preset`).
        class_names: the classes of a user model's outputs, ``imagenet`` or ``mnist`` (default: numbers).
        name: name of the model in records and reports (default: ``model``).
    """

    model: str
    weights: str | None = None
    input_size: int | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: int | None = None
    preset: str | None = None
    class_names: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        from smoothadv.models.zoo import is_registered

        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("give a model: a registry name (see `smoothadv models`), a TorchScript file "
                              "or package.module:factory.")
        for field_name in ("input_size", "resize"):
            if getattr(self, field_name) is not None:
                check_positive_int(getattr(self, field_name), field_name)
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels!r}.")
        if self.resize is not None and self.input_size is not None and self.resize < self.input_size:
            raise ConfigError(f"resize ({self.resize}) must be at least input_size ({self.input_size}).")
        channels = self.channels or 3
        for field_name in ("mean", "std"):
            values = getattr(self, field_name)
            if values is None:
                continue
            values = _floats(values, field_name)
            if len(values) not in (1, channels):
                raise ConfigError(
                    f"{field_name} has {len(values)} values but the model takes {channels} channel"
                    f"{'s' if channels > 1 else ''}; give one value or one per channel (comma-separated)."
                )
            if field_name == "std" and any(v <= 0 for v in values):
                raise ConfigError(f"std values must be > 0, got {list(values)}.")
            object.__setattr__(self, field_name, values)
        if self.class_names not in (None, *_LABEL_SETS):
            raise ConfigError(
                f"class_names must be one of {', '.join(_LABEL_SETS)}, got {self.class_names!r}."
            )
        if is_registered(self.model):
            declared = [f for f in ("input_size", "channels", "mean", "std", "resize", "class_names")
                        if getattr(self, f) is not None]
            if declared:
                raise ConfigError(
                    f"{self.model} is a registered model that knows its own input; drop "
                    f"{', '.join('--' + f.replace('_', '-') for f in declared)} (they are for user models)."
                )

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> ModelSpec:
        """Read a spec file (TOML or JSON, keys = the attribute names); ``overrides`` that are not None
        replace its values. ``model`` and ``weights`` paths are relative to the file's folder.

        Raises:
            ConfigError: missing or unreadable file, unknown keys, bad values.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"model spec file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".toml":
                import tomllib

                content = tomllib.loads(text)
            else:
                content = json.loads(text)
        except (OSError, UnicodeDecodeError, ValueError) as error:  # TOMLDecodeError is a ValueError
            raise ConfigError(f"cannot read model spec {path}: {error}") from error
        if not isinstance(content, Mapping):
            raise ConfigError(f"{path} must hold a table of model options, got {type(content).__name__}.")
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(content) - set(allowed))
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}.")
        if "model" not in content:
            raise ConfigError(f"{path} does not name its model; add e.g. model = \"mypackage.nets:factory\".")
        content = dict(content)
        for key in ("model", "weights"):
            value = content.get(key)
            relative = isinstance(value, str) and not Path(value).expanduser().is_absolute()
            if relative and (key == "weights" or _is_model_file(value)):
                content[key] = str(path.parent / value)
        content.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**content)

    @classmethod
    def parse(cls, model: str | Path | ModelSpec, **overrides: Any) -> ModelSpec:
        """A spec from what a user gives: a :class:`ModelSpec`, a spec file (``.toml``/``.json``) or a model
        string; ``overrides`` that are not None are applied on top."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if isinstance(model, ModelSpec):
            return dataclasses.replace(model, **overrides)
        model = str(model)
        if model.endswith(SPEC_SUFFIXES):
            return cls.from_file(model, **overrides)
        return cls(model=model, **overrides)

    @property
    def display_name(self) -> str:
        """Name of the model in records and reports."""
        return self.name or self.model

    @property
    def is_user_model(self) -> bool:
        from smoothadv.models.zoo import is_registered

        return not is_registered(self.model)

    def info(self):
        """The :class:`~smoothadv.models.zoo.ModelInfo` of this model, with the declared input.

        Raises:
            ModelError: unknown name or missing model file.
        """
        from smoothadv.models.zoo import model_info

        info = model_info(self.model, input_size=self.input_size, channels=self.channels)
        changes = {"resize": self.resize, "labels": self.class_names}
        return dataclasses.replace(info, **{k: v for k, v in changes.items() if v is not None})

    def require_input_size(self) -> int:
        """The model's input side; raise a :class:`ConfigError` saying how to declare it when unknown."""
        size = self.info().input_size
        if size is None:
            raise ConfigError(
                f"{self.model} is a user model: declare its input with --input-size N (and --channels 1 "
                "for greyscale), or put input_size in a model spec file; it is never guessed."
            )
        return size

    def load(self, device: str | torch.device = "cpu") -> nn.Module:
        """Build the model in eval mode on ``device`` and check it on one blank input.

        The returned model takes (B, C, H, W) images in [0, 1] (normalisation inside) and declares
        ``input_shape`` (C, H, W) when the input size is known.

        Raises:
            ModelError: the model cannot be built, or fails on / returns no (1, K) logits for a (1, C, S, S)
                input (e.g. wrong --channels or --input-size).
        """
        from smoothadv.models.user import is_factory_spec
        from smoothadv.models.zoo import load_model

        model = load_model(self.model, device, weights=self.weights, mean=self.mean, std=self.std)
        if self.is_user_model and is_factory_spec(self.model) and self.weights is None:
            warn(f"{self.model} was given no weights: it runs with whatever weights its factory sets "
                 "(random unless the factory loads them); pass --weights FILE.", InferredDefaultWarning)
        info = self.info()
        if info.input_size is not None:
            shape = (info.channels, info.input_size, info.input_size)
            model.input_shape = shape
            check_model_runs(model, shape, self.model, device)
        return model

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def check_model_runs(model: nn.Module, shape: Sequence[int], name: str, device: str | torch.device) -> int:
    """Forward one blank (1, C, H, W) image; return the number of classes K.

    Raises:
        ModelError: the forward pass fails, or its output is not (1, K) logits with K >= 2.
    """
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    probe = torch.full((1, *shape), 0.5, device=device, dtype=dtype)
    declared = f"a (1, {', '.join(map(str, shape))}) input"
    try:
        with torch.no_grad():
            logits = model(probe)
    except Exception as error:  # a user model may raise anything on a wrong input shape
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(
            f"{name} fails on {declared} ({type(error).__name__}: {message}); check --channels and "
            "--input-size against what the model was built for."
        ) from error
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 1:
        raise ModelError(f"{name} must return (B, K) logits; on {declared} it returned "
                         f"{tuple(getattr(logits, 'shape', ())) or type(logits).__name__}.")
    if logits.shape[1] < 2:
        raise ModelError(f"{name} returns one score per image; attacks need K >= 2 class logits.")
    return int(logits.shape[1])


def parse_floats(text: str, name: str) -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` -> ``(0.485, 0.456, 0.406)``.

    Raises:
        ConfigError: empty, non-numeric or non-finite values.
    """
    try:
        values = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{name} takes comma-separated numbers, e.g. 0.485,0.456,0.406; got {text!r}.")
    return values


def _floats(values: Any, name: str) -> tuple[float, ...]:
    if isinstance(values, str):
        return parse_floats(values, name)
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = (values,)
    try:
        result = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be numbers, got {values!r}.") from None
    if not result or not all(math.isfinite(v) for v in result):
        raise ConfigError(f"{name} must be finite numbers, got {values!r}.")
    return result


def _is_model_file(value: str) -> bool:
    from smoothadv.models.user import is_factory_spec
    from smoothadv.models.zoo import is_registered

    return not is_registered(value) and not is_factory_spec(value)
