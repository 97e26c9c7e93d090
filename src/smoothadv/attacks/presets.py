"""Named parameter sets of the paper (section 5.2.4) and of the authors' experiments (DESIGN notes).

``PRESETS[name]`` holds the smoothing configuration and the keyword arguments of every attack. Where the
paper is silent we chose, and say so:

* I-FGSM and PGD2 run 10 iterations (the paper gives epsilon and step only); at other epsilons of an
  evaluation grid the step keeps the paper's ratio step/epsilon (I-FGSM 0.08/0.3, PGD2 3/5).
* C&W and sC&W use 9 binary-search steps of 100 Adam iterations (the authors' experiments).
* ImageNet smoothing uses the kernel the authors ran, ``exp(-300 d^2)`` (Gaussian, sigma = 1/sqrt(600)),
  per channel, solved exactly instead of their 50 CG iterations (which leave about 3.5% error).
* MNIST smoothing: Laplacian kernel ``exp(-10 |d|)`` (sigma = 0.1), alpha 0.95, solved exactly by a sparse
  factorisation (on CPU faster than the precomputed dense inverse the paper used).
"""

from __future__ import annotations

from typing import Any

from smoothadv.smoothing import Smoothing


def _preset(smoothing: Smoothing, *, linf_epsilon: float, cw_margin: float, cw_constant: float,
            linf_grid: list[float], l2_grid: list[float]) -> dict[str, Any]:
    """One dataset's parameters; C&W and sC&W share theirs, as do PGD2 and qPGD2."""
    l2_gradient = {"epsilon": 5.0, "relative_step": 3.0 / 5.0, "steps": 10}
    cw = {"margin": cw_margin, "learning_rate": 0.1, "initial_constant": cw_constant,
          "binary_search_steps": 9, "steps": 100}
    return {
        "smoothing": smoothing,
        "fgsm": {"epsilon": linf_epsilon},
        "ifgsm": {"epsilon": linf_epsilon, "relative_step": 0.08 / linf_epsilon, "steps": 10},
        "pgd2": dict(l2_gradient),
        "qpgd2": dict(l2_gradient),
        "cw": dict(cw),
        "scw": dict(cw),
        "deepfool": {"steps": 50, "overshoot": 0.02, "candidates": 10},
        "epsilons": {"fgsm": list(linf_grid), "ifgsm": list(linf_grid), "pgd2": list(l2_grid),
                     "qpgd2": list(l2_grid)},
    }


PRESETS: dict[str, dict[str, Any]] = {
    "mnist": _preset(
        Smoothing(alpha=0.95, kernel="laplacian", sigma=0.1, channels="per_channel"),
        linf_epsilon=0.3, cw_margin=1.0, cw_constant=15.0,
        linf_grid=[0.05, 0.1, 0.15, 0.2, 0.25, 0.3], l2_grid=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    ),
    "imagenet": _preset(
        Smoothing(alpha=0.997, kernel="gaussian", sigma=(1.0 / 600.0) ** 0.5, channels="per_channel"),
        linf_epsilon=0.1255, cw_margin=0.0, cw_constant=100.0,
        linf_grid=[0.01, 0.02, 0.04, 0.08, 0.1255], l2_grid=[0.5, 1.0, 2.0, 3.0, 5.0],
    ),
}
