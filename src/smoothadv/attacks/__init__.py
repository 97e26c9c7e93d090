"""Attacks (paper sections 2.1 and 4): FGSM, I-FGSM, PGD2, qPGD2, C&W, sC&W and DeepFool.

``make_attack("scw", model, preset="mnist")`` builds an attack by name with the paper's parameters.
"""

from __future__ import annotations

from torch import nn

from smoothadv.attacks.base import (
    Attack,
    AttackResult,
    FixedDistortionAttack,
    MinimizationAttack,
    quantize_8bit,
)
from smoothadv.attacks.carlini_wagner import CarliniWagnerL2, SmoothCarliniWagnerL2
from smoothadv.attacks.deepfool import DeepFool
from smoothadv.attacks.gradient import FGSM, IFGSM, PGD2, QPGD2, GradientAttack
from smoothadv.attacks.losses import goal_reached, margin_loss
from smoothadv.attacks.presets import PRESETS
from smoothadv.errors import ConfigError

ATTACKS: dict[str, type[Attack]] = {
    "fgsm": FGSM,
    "ifgsm": IFGSM,
    "pgd2": PGD2,
    "qpgd2": QPGD2,
    "cw": CarliniWagnerL2,
    "scw": SmoothCarliniWagnerL2,
    "deepfool": DeepFool,
}
SMOOTH_ATTACKS = ("qpgd2", "scw")
FIXED_DISTORTION_ATTACKS = ("fgsm", "ifgsm", "pgd2", "qpgd2")


def make_attack(name: str, model: nn.Module, *, preset: str = "mnist", **overrides) -> Attack:
    """Build attack ``name`` with the parameters of ``preset``, updated by ``overrides``.

    Args:
        name: one of ``fgsm``, ``ifgsm``, ``pgd2``, ``qpgd2``, ``cw``, ``scw``, ``deepfool``.
        model: classifier returning logits.
        preset: ``"mnist"`` or ``"imagenet"`` (paper section 5.2.4).
        **overrides: attack keyword arguments (``epsilon``, ``steps``, ``smoothing``, ...).
    """
    key = name.lower().replace("-", "").replace("&", "").replace("_", "")
    if key not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}.")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    options = dict(PRESETS[preset][key])
    if key in SMOOTH_ATTACKS:
        options["smoothing"] = PRESETS[preset]["smoothing"]
    options.update(overrides)
    return ATTACKS[key](model, **options)


__all__ = [
    "ATTACKS",
    "FGSM",
    "FIXED_DISTORTION_ATTACKS",
    "IFGSM",
    "PGD2",
    "PRESETS",
    "QPGD2",
    "SMOOTH_ATTACKS",
    "Attack",
    "AttackResult",
    "CarliniWagnerL2",
    "DeepFool",
    "FixedDistortionAttack",
    "GradientAttack",
    "MinimizationAttack",
    "SmoothCarliniWagnerL2",
    "goal_reached",
    "make_attack",
    "margin_loss",
    "quantize_8bit",
]
