"""Attacks (paper sections 2.1 and 4): FGSM, I-FGSM, PGD2, qPGD2, C&W, sC&W and DeepFool; and beyond the
paper DDN, FMN, APGD2 and their smooth forms (sDDN, sFMN, sAPGD2, sPGD2; ``KEY+KIND`` for other operators).

``make_attack("scw", model, preset="mnist")`` builds an attack by name with the paper's parameters;
:data:`ATTACKS` is the registry (key, class, label, colour, smoothness, family).
"""

from __future__ import annotations

from smoothadv.attacks.apgd import APGD2, SPGD2, APGDOptions, SPGDOptions
from smoothadv.attacks.base import Attack, AttackResult, FixedDistortionAttack, MinimizationAttack
from smoothadv.attacks.carlini_wagner import CarliniWagnerL2, SmoothCarliniWagnerL2
from smoothadv.attacks.deepfool import DeepFool
from smoothadv.attacks.gradient import FGSM, IFGSM, PGD2, QPGD2, GradientAttack
from smoothadv.attacks.losses import OBJECTIVES, goal_reached, margin_loss
from smoothadv.attacks.minimum_norm import DDN, FMN, DDNOptions, FMNOptions
from smoothadv.attacks.presets import OPERATORS, SMOOTHING, infer_preset, preset_for_size
from smoothadv.attacks.registry import (
    ATTACKS,
    FIXED_DISTORTION_ATTACKS,
    PRESETS,
    SMOOTH_ATTACKS,
    AttackRegistry,
    AttackSpec,
    make_attack,
)
from smoothadv.core.images import quantize_8bit

__all__ = [
    "APGD2",
    "ATTACKS",
    "DDN",
    "FGSM",
    "FMN",
    "OBJECTIVES",
    "OPERATORS",
    "SPGD2",
    "APGDOptions",
    "DDNOptions",
    "FMNOptions",
    "SPGDOptions",
    "FIXED_DISTORTION_ATTACKS",
    "IFGSM",
    "PGD2",
    "PRESETS",
    "QPGD2",
    "SMOOTHING",
    "SMOOTH_ATTACKS",
    "Attack",
    "AttackRegistry",
    "AttackResult",
    "AttackSpec",
    "CarliniWagnerL2",
    "DeepFool",
    "FixedDistortionAttack",
    "GradientAttack",
    "MinimizationAttack",
    "SmoothCarliniWagnerL2",
    "goal_reached",
    "infer_preset",
    "make_attack",
    "margin_loss",
    "preset_for_size",
    "quantize_8bit",
]
