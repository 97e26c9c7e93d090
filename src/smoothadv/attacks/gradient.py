"""One gradient loop for the target-distortion attacks: FGSM, I-FGSM, PGD2 and qPGD2 (eqs. 10-12).

Each step computes ``g = grad_x l(f(x_k), t)`` (eq. 10), optionally smooths it, ``g <- s_hat_alpha(g)``
(eq. 12, qPGD2), and moves ``x_{k+1} = c(x_k - step * n(g))`` (eq. 11), where ``n`` normalises ``g`` for the
attack's norm (sign for L-inf, unit L2 norm for L2) and ``c`` projects onto the epsilon-ball around
``x_o`` and onto [0, 1]. FGSM is the one-step case with ``step = epsilon``; qPGD2 is PGD2 given a smoother.

The loss is the margin loss of eq. (3): its gradient vanishes once an image is misclassified by the
margin, so a successful image stops moving and keeps a small distortion.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from smoothadv.attacks.base import (
    FixedDistortionAttack,
    RunOutput,
    input_gradient,
    warn_if_zero_gradients,
)
from smoothadv.attacks.losses import margin_loss
from smoothadv.attacks.strategies import ball_factor, l2_norms, normalized
from smoothadv.core.errors import ConfigError
from smoothadv.smoothing import PerturbationOperator, Smoothing, check_operator, describe_operator


class GradientAttack(FixedDistortionAttack):
    """Iterative gradient attack with hooks ``normalize`` and ``project`` for its norm.

    Args:
        model: classifier returning logits.
        epsilon: distortion budget in the attack's norm, on [0, 1] pixel values.
        steps: number of gradient steps.
        step_size: absolute step; None uses ``relative_step * epsilon``.
        relative_step: step as a fraction of ``epsilon`` when ``step_size`` is None (None: the class's
            ``default_relative_step``, the paper's ratio).
        smoothing: if given, each gradient is smoothed by ``s_hat_alpha`` guided by the clean image (eq. 12),
            or by another perturbation operator (:mod:`smoothadv.smoothing.perturbation`).
        margin: margin m of the loss (eq. 3).
        quantize: see :class:`~smoothadv.attacks.base.Attack`.
    """

    norm = "l2"
    reuses_clean_graph = True  # the first step is taken at the clean images
    default_relative_step = 0.6

    def __init__(self, model: nn.Module, epsilon: float, *, steps: int = 10, step_size: float | None = None,
                 relative_step: float | None = None, smoothing: PerturbationOperator | None = None,
                 margin: float = 0.0,
                 quantize: bool = True):
        super().__init__(model, epsilon, quantize=quantize)
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be an integer >= 1; got {steps!r}.")
        if step_size is not None and not step_size > 0:
            raise ConfigError(f"step_size must be > 0; got {step_size!r}.")
        check_operator(smoothing)
        self.steps = steps
        if relative_step is None:
            relative_step = self.default_relative_step
        self.step_size = float(step_size) if step_size is not None else relative_step * self.epsilon
        self.smoothing = smoothing
        self.margin = float(margin)

    def parameters(self) -> dict[str, Any]:
        params = {**super().parameters(), "steps": self.steps, "step_size": self.step_size,
                  "margin": self.margin}
        if self.smoothing is not None:
            params["smoothing"] = describe_operator(self.smoothing)
        return params

    def normalize(self, gradient: torch.Tensor) -> torch.Tensor:
        """Direction of steepest ascent of unit size in the attack's norm; zero gradients stay zero."""
        return normalized(gradient)

    def project(self, perturbation: torch.Tensor) -> torch.Tensor:
        """Project perturbations onto the epsilon-ball of the attack's norm."""
        return perturbation * ball_factor(l2_norms(perturbation), self.epsilon)

    def run(self, images, labels, targets, clean) -> RunOutput:
        smoother = self.smoothing.prepare(images) if self.smoothing is not None else None

        def loss_fn(logits):
            return margin_loss(logits, labels, margin=self.margin, targets=targets)

        adversarial = images.clone()
        for step in range(self.steps):
            losses, gradient = input_gradient(self.model, adversarial, loss_fn, clean if step == 0 else None)
            if step == 0:
                warn_if_zero_gradients(gradient, active=losses > 0)
            if smoother is not None:
                gradient = smoother(gradient)
            # Descend the loss (eq. 11): the margin loss is positive while the goal is not reached.
            candidate = adversarial - self.step_size * self.normalize(gradient)
            adversarial = (images + self.project(candidate - images)).clamp(0.0, 1.0)
        count = torch.full((len(images),), self.steps, dtype=torch.long, device=images.device)
        return RunOutput(adversarial=adversarial, iterations=count, gradient_evaluations=count)


class LinfGradientAttack(GradientAttack):
    """L-inf variant: sign normalisation and box projection (FGSM / I-FGSM)."""

    norm = "linf"

    def normalize(self, gradient: torch.Tensor) -> torch.Tensor:
        return gradient.sign()

    def project(self, perturbation: torch.Tensor) -> torch.Tensor:
        return perturbation.clamp(-self.epsilon, self.epsilon)


# Where the paper gives only epsilon and step (section 5.2.4), I-FGSM and PGD2 run 10 iterations, and at
# the other epsilons of an evaluation grid the step keeps the paper's ratio step / epsilon.
_LINF_GRIDS = {"mnist": [0.05, 0.1, 0.15, 0.2, 0.25, 0.3], "imagenet": [0.01, 0.02, 0.04, 0.08, 0.1255]}
_L2_GRIDS = {"mnist": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "imagenet": [0.5, 1.0, 2.0, 3.0, 5.0]}


class FGSM(LinfGradientAttack):
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one L-inf step of size epsilon."""

    key = "fgsm"
    presets = {"mnist": {"epsilon": 0.3}, "imagenet": {"epsilon": 0.1255}}
    epsilon_grids = _LINF_GRIDS

    def __init__(self, model: nn.Module, epsilon: float, *, margin: float = 0.0, quantize: bool = True):
        super().__init__(model, epsilon, steps=1, relative_step=1.0, margin=margin, quantize=quantize)


class IFGSM(LinfGradientAttack):
    """Iterative FGSM (Kurakin et al. 2017): ``steps`` sign steps projected onto the L-inf ball."""

    key = "ifgsm"
    default_relative_step = 0.08 / 0.3
    presets = {"mnist": {"epsilon": 0.3, "relative_step": 0.08 / 0.3, "steps": 10},
               "imagenet": {"epsilon": 0.1255, "relative_step": 0.08 / 0.1255, "steps": 10}}
    epsilon_grids = _LINF_GRIDS


class PGD2(GradientAttack):
    """L2 projected gradient descent (L2 I-FGSM, the paper's PGD2); given a smoother it is qPGD2."""

    key = "pgd2"
    smooth_key = "qpgd2"
    smoothable = True
    presets = {"mnist": {"epsilon": 5.0, "relative_step": 3.0 / 5.0, "steps": 10},
               "imagenet": {"epsilon": 5.0, "relative_step": 3.0 / 5.0, "steps": 10}}
    epsilon_grids = _L2_GRIDS


class QPGD2(PGD2):
    """qPGD2 (section 4.1.1): PGD2 whose gradient is smoothed by ``s_hat_alpha`` each step (eq. 12).

    This is :class:`PGD2` with a smoother; it only names the combination and requires the smoother.
    """

    def __init__(self, model: nn.Module, epsilon: float, *, smoothing: Smoothing | None = None, **options):
        super().__init__(model, epsilon, smoothing=smoothing or Smoothing(), **options)
