"""The dataset presets of the paper (section 5.2.4): their smoothing, and how a model's preset is inferred.

Each attack class carries its own parameters per preset (``presets``, and ``epsilon_grids`` for the
fixed-distortion attacks); this module holds what they share. Where the paper is silent we chose, and say so:

* ImageNet smoothing uses the kernel the authors ran, ``exp(-300 d^2)`` (Gaussian, sigma = 1/sqrt(600)),
  per channel, solved exactly instead of their 50 CG iterations (which leave about 3.5% error).
* MNIST smoothing: Laplacian kernel ``exp(-10 |d|)`` (sigma = 0.1), alpha 0.95, solved exactly by a sparse
  factorisation (on CPU faster than the precomputed dense inverse the paper used).
"""

from __future__ import annotations

from typing import Any

from smoothadv.core.errors import ConfigError
from smoothadv.smoothing import DCTSubspace, GaussianLowPass, Smoothing

#: The smoother of the smooth attacks (qPGD2, sC&W) per preset.
SMOOTHING: dict[str, Smoothing] = {
    "mnist": Smoothing(alpha=0.95, kernel="laplacian", sigma=0.1, channels="per_channel"),
    "imagenet": Smoothing(alpha=0.997, kernel="gaussian", sigma=(1.0 / 600.0) ** 0.5, channels="per_channel"),
}
PRESET_NAMES = tuple(SMOOTHING)

#: The perturbation operators of the smooth forms (``ATTACK+KIND``) per preset. The image-agnostic
#: baselines are matched to the guided smoothing by the share of white-noise energy each operator keeps,
#: ``E||P(n)||^2 / E||n||^2`` (its effective degrees of freedom per pixel), averaged over test images:
#: ``python benchmarks/operators.py`` measures it (MNIST: guided 0.031, DCT 5x5 of 28x28 frequencies 0.032;
#: ImageNet at 224: guided 0.0031, DCT 13x13 0.0034). The DCT ratio is rounded to whole frequencies.
OPERATORS: dict[str, dict[str, Any]] = {
    preset: {"guided": SMOOTHING[preset], "lowpass": GaussianLowPass(sigma=sigma),
             "dct": DCTSubspace(ratio=ratio)}
    for preset, sigma, ratio in (("mnist", 1.74, 0.178), ("imagenet", 5.29, 0.058))
}
#: Inputs with a side below this many pixels take the MNIST preset, larger ones the ImageNet preset.
IMAGENET_MIN_SIDE = 64


def check_preset(preset: str) -> str:
    """Return ``preset`` or raise :class:`ConfigError` naming the known ones."""
    if preset not in SMOOTHING:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}.")
    return preset


def preset_for_size(side: int) -> str:
    """The preset of images whose shorter side is ``side`` pixels: ``mnist`` below 64, else ``imagenet``."""
    return "mnist" if side < IMAGENET_MIN_SIDE else "imagenet"


def infer_preset(model: Any) -> tuple[str, str]:
    """The preset of a model that declares its input, and why: ``(preset, reason)``.

    A model declares its input with an ``input_shape`` attribute ``(C, H, W)``; every model that
    :func:`smoothadv.models.load_model` returns has one when its input size is known.

    Raises:
        ConfigError: the model declares no input shape (say the preset instead).
    """
    shape = getattr(model, "input_shape", None)
    if shape is None or len(tuple(shape)) != 3:
        raise ConfigError(
            "cannot tell which preset fits this model: pass preset='mnist' (small grey images such as "
            "28x28 digits) or preset='imagenet' (photos of 64 pixels or more), or give the model an "
            "input_shape attribute (C, H, W)."
        )
    side = min(int(shape[1]), int(shape[2]))
    preset = preset_for_size(side)
    relation = "<" if preset == "mnist" else ">="
    return preset, f"the model's input_shape {tuple(shape)} (side {side} {relation} {IMAGENET_MIN_SIDE})"
