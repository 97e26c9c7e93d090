"""C&W L2 (eq. 4) and smooth C&W, sC&W (eq. 18): one optimisation loop, two parametrisations.

Both minimise, per image, ``||r||^2 + c * l(f(x), t)`` (``c = 1 / lambda``) with Adam, keep the least
distorted successful iterate, and tune ``c`` per image by a binary search. They differ only in how the
optimised variable maps to the image:

* C&W: ``x = (tanh(w) + 1) / 2`` (the sigmoid change of variables of eq. 4), ``w`` starting at ``x_o``,
  ``r = x - x_o``.
* sC&W: ``r = s_hat_alpha(z)`` guided by ``x_o`` (eq. 17), ``x = c(x_o + r)`` clipped to [0, 1] (eq. 13),
  ``z`` starting at 0. Every iterate is smooth like ``x_o``; the gradient reaches ``z`` through the
  adjoint smoothing (eq. 19).

Binary search (Carlini & Wagner 2017): after each outer step, an image that succeeded sets an upper bound
on ``c`` and an image that failed a lower bound; ``c`` moves to the midpoint once both bounds exist, and
is multiplied by 10 while no success has been seen.

Early abort, per image: past half of an inner loop, an image that has succeeded in it leaves it after a
tenth of the iterations without a less distorted success, and the model then runs on the remaining
images only.
(Carlini & Wagner stop the whole batch when the objective stops decreasing; with the paper's learning
rate of 0.1 the first iterates overshoot and that rule stops after two tenths, far from the optimum.)

With 8-bit output (``quantize``), the kept iterate must still succeed once rounded to 256 levels; the
improving iterates of each tenth of an inner loop are checked together at its end, least distorted first
(:class:`~smoothadv.attacks.strategies.BestIterates`), rather than one forward pass per improvement.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from smoothadv.attacks.base import MinimizationAttack, RunOutput, warn_if_zero_gradients
from smoothadv.attacks.losses import margin_loss
from smoothadv.attacks.strategies import (
    ActiveSet,
    BestIterates,
    LatentPerturbation,
    PerImageAdam,
    TanhParametrization,
)
from smoothadv.core.errors import ConfigError
from smoothadv.smoothing import PerturbationOperator, Smoothing, check_operator, describe_operator

_UPPER_BOUND_NONE = 1e10


class CarliniWagnerL2(MinimizationAttack):
    """C&W L2 attack; with ``smoothing`` it is sC&W (the paper's smooth attack).

    Args:
        model: classifier returning logits.
        smoothing: None for C&W; a :class:`~smoothadv.smoothing.Smoothing` for sC&W. Any other perturbation
            operator (:class:`~smoothadv.smoothing.GaussianLowPass`, ``DCTSubspace``) is used the same way:
            eq. (18) with ``P`` in place of ``s_hat_alpha``.
        binary_search_steps: outer steps of the search on ``c``.
        steps: Adam iterations per outer step.
        learning_rate: Adam step size (paper: 0.1).
        initial_constant: starting ``c = 1 / lambda`` (paper: 15 on MNIST, 100 on ImageNet).
        margin: margin m of eq. (3) (paper: 1 on MNIST, 0 on ImageNet).
        abort_early: past half of an inner loop, an image that has succeeded in it leaves it after a tenth
            of the iterations without a less distorted success (see the module docstring).
        quantize: keep only iterates that still succeed after 8-bit rounding (checked in one forward
            pass of the improved images per tenth of the iterations) and return 8-bit images.
    """

    key = "cw"
    smooth_key = "scw"
    smoothable = True
    # The authors' experiments: 9 binary-search steps of 100 Adam iterations.
    presets = {
        "mnist": {"margin": 1.0, "learning_rate": 0.1, "initial_constant": 15.0, "binary_search_steps": 9,
                  "steps": 100},
        "imagenet": {"margin": 0.0, "learning_rate": 0.1, "initial_constant": 100.0, "binary_search_steps": 9,
                     "steps": 100},
    }

    def __init__(self, model: nn.Module, *, smoothing: PerturbationOperator | None = None,
                 binary_search_steps: int = 9,
                 steps: int = 100, learning_rate: float = 0.1, initial_constant: float = 15.0,
                 margin: float = 1.0, abort_early: bool = True, quantize: bool = True):
        super().__init__(model, quantize=quantize)
        for value, label in ((binary_search_steps, "binary_search_steps"), (steps, "steps")):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{label} must be an integer >= 1; got {value!r}.")
        if not learning_rate > 0 or not initial_constant > 0 or margin < 0:
            raise ConfigError("learning_rate and initial_constant must be > 0, margin >= 0.")
        check_operator(smoothing)
        self.smoothing = smoothing
        self.binary_search_steps = binary_search_steps
        self.steps = steps
        self.learning_rate = float(learning_rate)
        self.initial_constant = float(initial_constant)
        self.margin = float(margin)
        self.abort_early = abort_early

    def parameters(self) -> dict[str, Any]:
        params = {
            **super().parameters(),
            "binary_search_steps": self.binary_search_steps,
            "steps": self.steps,
            "learning_rate": self.learning_rate,
            "initial_constant": self.initial_constant,
            "margin": self.margin,
            "abort_early": self.abort_early,
        }
        if self.smoothing is not None:
            params["smoothing"] = describe_operator(self.smoothing)
        return params

    def parametrization(self, images: torch.Tensor):
        if self.smoothing is None:
            return TanhParametrization(images)
        return LatentPerturbation(images, self.smoothing)

    def run(self, images, labels, targets, clean) -> RunOutput:
        batch = len(images)
        device = images.device
        parametrization = self.parametrization(images)
        constant = torch.full((batch,), self.initial_constant, dtype=images.dtype, device=device)
        lower = torch.zeros_like(constant)
        upper = torch.full_like(constant, _UPPER_BOUND_NONE)
        best = BestIterates(self.model, images, labels, targets, verify_8bit=self.quantize)
        iterations = torch.zeros(batch, dtype=torch.long, device=device)
        abort_window = max(self.steps // 10, 1)

        for _ in range(self.binary_search_steps):
            variable = parametrization.initial()
            optimizer = PerImageAdam(variable, self.learning_rate)
            succeeded = torch.zeros(batch, dtype=torch.bool, device=device)
            active = ActiveSet(batch, device)
            for step in range(self.steps):
                index = active.index
                if len(index) == 0:
                    break
                # The smoothing runs on the whole batch (cheap); the model only on the active images.
                with torch.enable_grad():
                    variable.requires_grad_(True)
                    adversarial, perturbation = parametrization.image_and_perturbation(variable)
                    adversarial, perturbation = adversarial[index], perturbation[index]
                    logits = self.model(adversarial)
                    target_subset = None if targets is None else targets[index]
                    distortion = perturbation.flatten(1).pow(2).sum(dim=1)
                    classification = margin_loss(logits, labels[index], margin=self.margin,
                                                 targets=target_subset)
                    objective = (distortion + constant[index] * classification).sum()
                    (gradient,) = torch.autograd.grad(objective, variable)
                variable = variable.detach()
                if step == 0 and iterations.sum() == 0:
                    warn_if_zero_gradients(gradient[index], active=classification.detach() > 0)
                optimizer.step(variable, gradient, index)
                iterations[index] += 1
                with torch.no_grad():
                    succeeded[index] |= best.offer(adversarial.detach(), logits.detach(), index)
                if (step + 1) % abort_window == 0:
                    improved, verified = best.settle()
                    succeeded |= verified
                    # Not before half the iterations: with a large learning rate the first successes are
                    # far from the optimum and better ones come only after the overshoot settles.
                    if self.abort_early and step + 1 >= self.steps // 2:
                        active.stop(succeeded & ~improved)
            succeeded |= best.settle()[1]
            lower, upper, constant = _update_constants(succeeded, constant, lower, upper)
        return RunOutput(adversarial=best.images, iterations=iterations,
                         gradient_evaluations=iterations.clone())


def _update_constants(succeeded, constant, lower, upper):
    """Binary search on c per image: success bounds it above, failure below; x10 until bounded."""
    upper = torch.where(succeeded, torch.minimum(upper, constant), upper)
    lower = torch.where(succeeded, lower, torch.maximum(lower, constant))
    bounded = upper < _UPPER_BOUND_NONE
    constant = torch.where(bounded, (lower + upper) / 2.0, constant * 10.0)
    return lower, upper, constant


class SmoothCarliniWagnerL2(CarliniWagnerL2):
    """sC&W (section 4.2): :class:`CarliniWagnerL2` given a smoother (eq. 18); only names the combination."""

    def __init__(self, model: nn.Module, *, smoothing: Smoothing | None = None, **options):
        super().__init__(model, smoothing=smoothing or Smoothing(), **options)
