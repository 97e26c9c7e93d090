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
(:class:`_BestIterates`), rather than one forward pass per improvement.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from smoothadv.attacks.base import MinimizationAttack, RunOutput, warn_if_zero_gradients
from smoothadv.attacks.losses import goal_reached, margin_loss
from smoothadv.core.errors import ConfigError
from smoothadv.core.images import quantize_8bit
from smoothadv.smoothing import GuidedSmoother, Smoothing

_UPPER_BOUND_NONE = 1e10


class TanhParametrization:
    """``x = (tanh(w) + 1) / 2``; ``w`` starts at the original image."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def initial(self) -> torch.Tensor:
        return torch.atanh((2.0 * self.images - 1.0).clamp(-1 + 1e-6, 1 - 1e-6))

    def image_and_perturbation(self, variable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        adversarial = (torch.tanh(variable) + 1.0) / 2.0
        return adversarial, adversarial - self.images


class SmoothParametrization:
    """``r = s_hat_alpha(z)``, ``x = clip(x_o + r)``; ``z`` starts at 0 (eqs. 13, 17, 18)."""

    def __init__(self, images: torch.Tensor, smoother: GuidedSmoother):
        self.images = images
        self.smoother = smoother

    def initial(self) -> torch.Tensor:
        return torch.zeros_like(self.images)

    def image_and_perturbation(self, variable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        perturbation = self.smoother(variable)
        return (self.images + perturbation).clamp(0.0, 1.0), perturbation


class CarliniWagnerL2(MinimizationAttack):
    """C&W L2 attack; with ``smoothing`` it is sC&W (the paper's smooth attack).

    Args:
        model: classifier returning logits.
        smoothing: None for C&W; a :class:`~smoothadv.smoothing.Smoothing` for sC&W.
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
    # The authors' experiments: 9 binary-search steps of 100 Adam iterations.
    presets = {
        "mnist": {"margin": 1.0, "learning_rate": 0.1, "initial_constant": 15.0, "binary_search_steps": 9,
                  "steps": 100},
        "imagenet": {"margin": 0.0, "learning_rate": 0.1, "initial_constant": 100.0, "binary_search_steps": 9,
                     "steps": 100},
    }

    def __init__(self, model: nn.Module, *, smoothing: Smoothing | None = None, binary_search_steps: int = 9,
                 steps: int = 100, learning_rate: float = 0.1, initial_constant: float = 15.0,
                 margin: float = 1.0, abort_early: bool = True, quantize: bool = True):
        super().__init__(model, quantize=quantize)
        for value, label in ((binary_search_steps, "binary_search_steps"), (steps, "steps")):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{label} must be an integer >= 1; got {value!r}.")
        if not learning_rate > 0 or not initial_constant > 0 or margin < 0:
            raise ConfigError("learning_rate and initial_constant must be > 0, margin >= 0.")
        if smoothing is not None and not isinstance(smoothing, Smoothing):
            raise ConfigError("smoothing must be a smoothadv.Smoothing configuration or None.")
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
            params["smoothing"] = vars(self.smoothing).copy()
        return params

    def parametrization(self, images: torch.Tensor):
        if self.smoothing is None:
            return TanhParametrization(images)
        return SmoothParametrization(images, self.smoothing.prepare(images))

    def run(self, images, labels, targets, clean) -> RunOutput:
        batch = len(images)
        device = images.device
        parametrization = self.parametrization(images)
        constant = torch.full((batch,), self.initial_constant, dtype=images.dtype, device=device)
        lower = torch.zeros_like(constant)
        upper = torch.full_like(constant, _UPPER_BOUND_NONE)
        best = _BestIterates(self.model, images, labels, targets, verify_8bit=self.quantize)
        iterations = torch.zeros(batch, dtype=torch.long, device=device)
        abort_window = max(self.steps // 10, 1)

        for _ in range(self.binary_search_steps):
            variable = parametrization.initial()
            optimizer = _PerImageAdam(variable, self.learning_rate)
            succeeded = torch.zeros(batch, dtype=torch.bool, device=device)
            active = torch.ones(batch, dtype=torch.bool, device=device)
            for step in range(self.steps):
                index = active.nonzero()[:, 0]
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
                        active &= ~(succeeded & ~improved)
            succeeded |= best.settle()[1]
            lower, upper, constant = _update_constants(succeeded, constant, lower, upper)
        return RunOutput(adversarial=best.images, iterations=iterations,
                         gradient_evaluations=iterations.clone())


class _BestIterates:
    """The least distorted successful iterate of each image, checked after 8-bit rounding if asked.

    Checking every improving iterate as it comes costs one forward pass each, and in the last part of an
    optimisation nearly every iterate improves on the one before. So the improving iterates are kept
    aside (:meth:`offer`) and checked in batches (:meth:`settle`, once per abort window): for each image
    the least distorted one first, then older ones only while the rounded ones fail. Usually one check
    per image and window instead of one per iteration.

    Args:
        model: the classifier (for the checks after rounding).
        images, labels, targets: the batch being attacked (targets None when untargeted).
        verify_8bit: check success after rounding to 256 levels and keep rounded images.

    Attributes:
        images: (B, C, H, W) best iterate per image (the original until one succeeds).
        l2: (B,) its L2 distortion (inf until one succeeds).
    """

    def __init__(self, model, images, labels, targets, *, verify_8bit: bool):
        self.model, self.originals, self.labels, self.targets = model, images, labels, targets
        self.verify_8bit = verify_8bit
        self.images = images.clone()
        self.l2 = torch.full((len(images),), torch.inf, dtype=images.dtype, device=images.device)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (rows, iterates) per offer
        self._pending_l2 = self.l2.clone()
        self._improved = torch.zeros(len(images), dtype=torch.bool, device=images.device)

    def offer(self, adversarial: torch.Tensor, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Consider the iterates ``adversarial`` (with their ``logits``) of the images ``index``.

        Returns:
            (len(index),) bool: the iterate succeeded (before rounding), not counting those kept aside
            for a check after rounding (:meth:`settle` reports those).
        """
        target_subset = None if self.targets is None else self.targets[index]
        l2 = (adversarial - self.originals[index]).flatten(1).norm(dim=1)
        success = goal_reached(logits, self.labels[index], target_subset)
        better = success & (l2 < torch.minimum(self.l2[index], self._pending_l2[index]))
        if not bool(better.any()):
            return success
        rows = index[better]
        if not self.verify_8bit:
            self.images[rows], self.l2[rows] = adversarial[better], l2[better]
            self._improved[rows] = True
            return success
        self._pending.append((rows, adversarial[better]))
        self._pending_l2[rows] = l2[better]
        return success & ~better

    def settle(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Check the iterates kept aside, newest (least distorted) first per image.

        Returns:
            improved: (B,) bool, the best iterate changed since the last call.
            verified: (B,) bool, an iterate kept aside succeeded after rounding.
        """
        verified = torch.zeros_like(self._improved)
        for rows, iterates in reversed(self._pending):
            unresolved = ~verified[rows]
            if not bool(unresolved.any()):
                continue
            rows, rounded = rows[unresolved], quantize_8bit(iterates[unresolved])
            targets = None if self.targets is None else self.targets[rows]
            still = goal_reached(self.model(rounded), self.labels[rows], targets)
            rounded_l2 = (rounded - self.originals[rows]).flatten(1).norm(dim=1)
            keep = still & (rounded_l2 < self.l2[rows])
            self.images[rows[keep]], self.l2[rows[keep]] = rounded[keep], rounded_l2[keep]
            self._improved[rows[keep]] = True
            verified[rows[still]] = True
        self._pending.clear()
        self._pending_l2.fill_(torch.inf)
        improved, self._improved = self._improved, torch.zeros_like(self._improved)
        return improved, verified


class _PerImageAdam:
    """Adam (Kingma & Ba 2015) with a step count per image, updating only the images it is given.

    ``torch.optim.Adam`` shares one step count and moves every image (its moments keep moving frozen
    ones); per-image state lets images that have stopped leave the batch.
    """

    def __init__(self, variable: torch.Tensor, learning_rate: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.learning_rate, self.betas, self.eps = learning_rate, betas, eps
        self.first = torch.zeros_like(variable)
        self.second = torch.zeros_like(variable)
        self.steps = torch.zeros(len(variable), dtype=variable.dtype, device=variable.device)

    def step(self, variable: torch.Tensor, gradient: torch.Tensor, index: torch.Tensor) -> None:
        """Update ``variable[index]`` in place from ``gradient[index]``."""
        beta1, beta2 = self.betas
        g = gradient[index]
        self.first[index] = beta1 * self.first[index] + (1 - beta1) * g
        self.second[index] = beta2 * self.second[index] + (1 - beta2) * g * g
        self.steps[index] += 1
        shape = (-1,) + (1,) * (variable.dim() - 1)
        correction1 = (1 - beta1 ** self.steps[index]).view(shape)
        correction2 = (1 - beta2 ** self.steps[index]).view(shape)
        update = (self.first[index] / correction1) / ((self.second[index] / correction2).sqrt() + self.eps)
        variable[index] -= self.learning_rate * update


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
