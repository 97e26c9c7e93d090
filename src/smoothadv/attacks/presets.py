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

PRESETS: dict[str, dict[str, Any]] = {
    "mnist": {
        "smoothing": Smoothing(alpha=0.95, kernel="laplacian", sigma=0.1, channels="per_channel"),
        "fgsm": {"epsilon": 0.3},
        "ifgsm": {"epsilon": 0.3, "relative_step": 0.08 / 0.3, "steps": 10},
        "pgd2": {"epsilon": 5.0, "relative_step": 3.0 / 5.0, "steps": 10},
        "qpgd2": {"epsilon": 5.0, "relative_step": 3.0 / 5.0, "steps": 10},
        "cw": {"margin": 1.0, "learning_rate": 0.1, "initial_constant": 15.0, "binary_search_steps": 9,
               "steps": 100},
        "scw": {"margin": 1.0, "learning_rate": 0.1, "initial_constant": 15.0, "binary_search_steps": 9,
                "steps": 100},
        "deepfool": {"steps": 50, "overshoot": 0.02, "candidates": 10},
        "epsilons": {"fgsm": [0.05, 0.1, 0.15, 0.2, 0.25, 0.3], "ifgsm": [0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
                     "pgd2": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "qpgd2": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]},
    },
    "imagenet": {
        "smoothing": Smoothing(alpha=0.997, kernel="gaussian", sigma=(1.0 / 600.0) ** 0.5,
                               channels="per_channel"),
        "fgsm": {"epsilon": 0.1255},
        "ifgsm": {"epsilon": 0.1255, "relative_step": 0.08 / 0.1255, "steps": 10},
        "pgd2": {"epsilon": 5.0, "relative_step": 3.0 / 5.0, "steps": 10},
        "qpgd2": {"epsilon": 5.0, "relative_step": 3.0 / 5.0, "steps": 10},
        "cw": {"margin": 0.0, "learning_rate": 0.1, "initial_constant": 100.0, "binary_search_steps": 9,
               "steps": 100},
        "scw": {"margin": 0.0, "learning_rate": 0.1, "initial_constant": 100.0, "binary_search_steps": 9,
                "steps": 100},
        "deepfool": {"steps": 50, "overshoot": 0.02, "candidates": 10},
        "epsilons": {"fgsm": [0.01, 0.02, 0.04, 0.08, 0.1255], "ifgsm": [0.01, 0.02, 0.04, 0.08, 0.1255],
                     "pgd2": [0.5, 1.0, 2.0, 3.0, 5.0], "qpgd2": [0.5, 1.0, 2.0, 3.0, 5.0]},
    },
}
