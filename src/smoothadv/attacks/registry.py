"""The one registry of attacks: key, class, display label, colour, smoothness and family, and ``make_attack``.

Adding an attack is one new module (the class, with its ``key`` and per-preset ``presets``) plus one
``ATTACKS.register(...)`` line below; ``smooth=(label, colour)`` on that line also registers its smooth
variant (the same class given the preset's smoother, recorded under the class's ``smooth_key``).
Reports, plots, the evaluation runner and the CLI read names, labels and colours from here.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from smoothadv.attacks.apgd import APGD2, SPGD2
from smoothadv.attacks.base import Attack, FixedDistortionAttack
from smoothadv.attacks.carlini_wagner import CarliniWagnerL2
from smoothadv.attacks.deepfool import DeepFool
from smoothadv.attacks.gradient import FGSM, IFGSM, PGD2
from smoothadv.attacks.minimum_norm import DDN, FMN
from smoothadv.attacks.presets import OPERATORS, PRESET_NAMES, SMOOTHING, check_preset, infer_preset
from smoothadv.core.errors import ConfigError, InferredDefaultWarning, warn
from smoothadv.smoothing import OPERATOR_KINDS


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack.

    Attributes:
        key: registry name (``"scw"``, ``"ddn+lowpass"``). cls: the attack class. label: display name
        (``"sC&W"``). colour: matplotlib colour of its curves. operator: None for a plain attack, else the
        kind of perturbation operator it is built with (``"guided"``, ``"lowpass"``, ``"dct"``), taken
        from the preset (:data:`~smoothadv.attacks.presets.OPERATORS`).
    """

    key: str
    cls: type[Attack]
    label: str
    colour: str
    operator: str | None = None

    @property
    def smooth(self) -> bool:
        """Built with a perturbation operator (the preset's guided smoothing for sC&W, qPGD2, sDDN, ...)."""
        return self.operator is not None

    @property
    def fixed_distortion(self) -> bool:
        """A target-distortion attack (section 2.1.1): it takes an ``epsilon`` and runs over a grid."""
        return issubclass(self.cls, FixedDistortionAttack)

    @property
    def family(self) -> str:
        """``"fixed-distortion"`` or ``"minimization"``, read from the class."""
        return "fixed-distortion" if self.fixed_distortion else "minimization"

    def options(self, preset: str) -> dict[str, Any]:
        """Keyword arguments of the class under ``preset`` (the operator included for a smooth attack).

        Raises:
            ConfigError: unknown preset, or the attack has no parameters for it.
        """
        check_preset(preset)
        if preset not in self.cls.presets:
            raise ConfigError(
                f"attack {self.key!r} has no {preset!r} preset "
                f"(it has: {', '.join(self.cls.presets) or 'none'}); "
                f"give every parameter yourself with {self.cls.__name__}(model, ...)."
            )
        options = dict(self.cls.presets[preset])
        if self.smooth:
            options["smoothing"] = OPERATORS[preset][self.operator]
        return options

    def epsilon_grid(self, preset: str) -> list[float]:
        """The protocol's epsilons under ``preset`` (fixed-distortion attacks only)."""
        grids = getattr(self.cls, "epsilon_grids", {})
        if preset not in grids:
            raise ConfigError(f"attack {self.key!r} has no epsilon grid for preset {preset!r}.")
        return list(grids[preset])


#: Plot colours of the ``KEY+KIND`` forms (by kind, then by the plain attack's place in the registry).
_FORM_COLOURS = {
    "guided": ("goldenrod", "rosybrown", "cadetblue", "plum"),
    "lowpass": ("darkorange", "saddlebrown", "teal", "crimson", "navy", "gold", "darkkhaki"),
    "dct": ("deepskyblue", "peru", "mediumseagreen", "orchid", "black", "salmon", "slategray"),
}


def _normal(name: str) -> str:
    return str(name).strip().lower().replace("-", "").replace("&", "").replace("_", "").replace(" ", "")


class AttackRegistry(Mapping[str, AttackSpec]):
    """Registered attacks by key, in registration order, with one name resolver.

    Besides the registered keys, ``KEY+KIND`` names any plain attack that takes a perturbation operator
    smoothed by an operator kind of :data:`~smoothadv.smoothing.OPERATOR_KINDS` (``ddn+lowpass``,
    ``cw+dct``); ``KEY+guided`` is the registered smooth key (``cw+guided`` is ``scw``).
    """

    def __init__(self) -> None:
        self._specs: dict[str, AttackSpec] = {}

    def register(self, cls: type[Attack], label: str, colour: str, *,
                 smooth: tuple[str, str] | None = None, operator: str | None = None) -> None:
        """Register ``cls`` under ``cls.key``; ``smooth=(label, colour)`` adds its smooth variant too.

        ``operator`` registers a class that is smooth by itself (sPGD2) with that operator kind.
        """
        self._specs[cls.key] = AttackSpec(cls.key, cls, label, colour, operator)
        if smooth is not None:
            if cls.smooth_key is None:
                raise ConfigError(f"{cls.__name__} has no smooth_key; it cannot register a smooth variant.")
            self._specs[cls.smooth_key] = AttackSpec(cls.smooth_key, cls, smooth[0], smooth[1], "guided")

    def __getitem__(self, key: str) -> AttackSpec:
        if not isinstance(key, str):
            raise KeyError(key)
        if key in self._specs:
            return self._specs[key]
        base, plus, kind = key.partition("+")
        if plus and base in self._specs and self._smoothable(self._specs[base]) and kind in OPERATOR_KINDS:
            spec = self._specs[base]
            if kind == "guided" and spec.cls.smooth_key in self._specs:
                return self._specs[spec.cls.smooth_key]
            palette = _FORM_COLOURS[kind]
            colour = palette[list(self._specs).index(base) % len(palette)]
            return AttackSpec(key, spec.cls, f"{spec.label}+{kind}", colour, kind)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    @staticmethod
    def _smoothable(spec: AttackSpec) -> bool:
        """An L2 attack under its own key (sPGD2 included; not ``scw``, the guided form of ``cw``)."""
        return spec.cls.smoothable and spec.key == spec.cls.key

    def resolve(self, name: str) -> str:
        """The key of ``name`` as users write it (``"I-FGSM"``, ``"sC&W"``, ``"pgd_2"``, ``"DDN+lowpass"``).

        Raises:
            ConfigError: not a registered attack (the message lists them and suggests the closest).
        """
        base, plus, kind = str(name).partition("+")
        if plus:
            return self.smooth_form(self.resolve(base), kind)
        normal = _normal(name)
        if normal in self._specs:
            return normal
        for key, spec in self._specs.items():
            if normal == spec.label.lower().replace("-", "").replace("&", ""):
                return key
        close = difflib.get_close_matches(normal, list(self._specs), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown attack {name!r}{hint}; choose one of {', '.join(self._specs)} "
                          f"(or ATTACK+{'|'.join(OPERATOR_KINDS)} for a smooth form).")

    def smooth_form(self, name: str, kind: str) -> str:
        """The key of attack ``name`` smoothed by operator ``kind``: ``("ddn", "guided")`` -> ``"sddn"``,
        ``("ddn", "lowpass")`` -> ``"ddn+lowpass"``; an attack already smooth by that kind is itself.

        Raises:
            ConfigError: unknown kind, or an attack that takes no perturbation operator.
        """
        key = self.resolve(name)
        kind = str(kind).strip().lower()
        if kind not in OPERATOR_KINDS:
            raise ConfigError(f"unknown smoothing {kind!r}; choose one of {', '.join(OPERATOR_KINDS)}.")
        spec = self[key]
        if spec.operator == kind:
            return key
        if not self._smoothable(spec):
            able = [k for k, s in self._specs.items() if self._smoothable(s)]
            what = "is already smooth" if spec.smooth else "has no smooth form"
            raise ConfigError(f"{spec.label} {what}; the attacks with smooth forms are {', '.join(able)}.")
        return self[f"{key}+{kind}"].key

    def label(self, key: str) -> str:
        """Display label of ``key`` (the key itself when unregistered)."""
        return self[key].label if key in self else key

    def colour(self, key: str) -> str | None:
        """Plot colour of ``key`` (None when unregistered)."""
        return self[key].colour if key in self else None

    def fixed_distortion(self) -> tuple[str, ...]:
        """Keys of the fixed-distortion attacks."""
        return tuple(key for key, spec in self._specs.items() if spec.fixed_distortion)

    def smooth(self) -> tuple[str, ...]:
        """Keys of the smooth attacks."""
        return tuple(key for key, spec in self._specs.items() if spec.smooth)


ATTACKS = AttackRegistry()
ATTACKS.register(FGSM, "FGSM", "tab:blue")
ATTACKS.register(IFGSM, "I-FGSM", "tab:orange")
ATTACKS.register(PGD2, "PGD2", "tab:green", smooth=("qPGD2", "tab:purple"))
ATTACKS.register(CarliniWagnerL2, "C&W", "tab:red", smooth=("sC&W", "tab:brown"))
ATTACKS.register(DeepFool, "DeepFool", "tab:gray")
ATTACKS.register(DDN, "DDN", "tab:olive", smooth=("sDDN", "tab:cyan"))
ATTACKS.register(FMN, "FMN", "tab:pink", smooth=("sFMN", "darkviolet"))
ATTACKS.register(APGD2, "APGD2", "darkgreen", smooth=("sAPGD2", "lime"))
ATTACKS.register(SPGD2, "sPGD2", "indigo", operator="guided")

FIXED_DISTORTION_ATTACKS = ATTACKS.fixed_distortion()
SMOOTH_ATTACKS = ATTACKS.smooth()

#: The presets as one table, derived from the registry: ``PRESETS[preset]["smoothing"]``,
#: ``PRESETS[preset][key]`` (keyword arguments) and ``PRESETS[preset]["epsilons"][key]``.
PRESETS: dict[str, dict[str, Any]] = {
    preset: {
        "smoothing": SMOOTHING[preset],
        **{key: dict(spec.cls.presets[preset])
           for key, spec in ATTACKS.items() if preset in spec.cls.presets},
        "epsilons": {key: ATTACKS[key].epsilon_grid(preset) for key in FIXED_DISTORTION_ATTACKS},
    }
    for preset in PRESET_NAMES
}


def make_attack(name: str, model: nn.Module, *, preset: str | None = None, **overrides) -> Attack:
    """Build attack ``name`` with the parameters of ``preset``, updated by ``overrides``.

    Args:
        name: a registered attack (``fgsm``, ``ifgsm``, ``pgd2``, ``qpgd2``, ``cw``, ``scw``, ``deepfool``,
            ``ddn``, ``sddn``, ``fmn``, ``sfmn``, ``apgd2``, ``sapgd2``, ``spgd2``), written any usual way
            (``"I-FGSM"``, ``"sC&W"``), or ``KEY+KIND`` for a smooth form (``"ddn+lowpass"``).
        model: classifier returning logits.
        preset: ``"mnist"`` or ``"imagenet"`` (paper section 5.2.4). None infers it from the model's
            ``input_shape`` (every model from :func:`smoothadv.models.load_model` declares one) and warns
            which it chose (:class:`~smoothadv.core.errors.InferredDefaultWarning`).
        **overrides: attack keyword arguments (``epsilon``, ``steps``, ``smoothing``, ...).

    Raises:
        ConfigError: unknown attack, preset or option; no preset given and none can be inferred.
    """
    key = ATTACKS.resolve(name)
    spec = ATTACKS[key]
    if preset is None:
        preset, reason = infer_preset(model)
        warn(f"make_attack({name!r}): no preset given; using {preset!r}, inferred from {reason}. "
             "Pass preset= to choose.", InferredDefaultWarning)
    options = spec.options(preset)
    accepted = spec.cls.option_names()
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ConfigError(
            f"{key} has no option {', '.join(map(repr, unknown))}; "
            f"its options are {', '.join(sorted(accepted))}."
        )
    options.update(overrides)
    return spec.cls(model, **options)
