"""Minimum-norm L2 attacks that adapt a norm budget per image: DDN and FMN, each plain or smooth.

Both move a perturbation ``r`` by normalised gradient steps and rescale it to a per-image norm ``epsilon``
that shrinks while the image is adversarial and grows while it is not. They run on a
:class:`~smoothadv.attacks.strategies.LatentPerturbation`: ``r = z`` (plain, the variable kept in the
[0, 1] box) or ``r = P(z)`` for a perturbation operator ``P`` (smooth: sDDN, sFMN with the guided
``s_hat_alpha``; any other operator the same way). Because ``P`` is linear, the rescaling of ``r`` to
``epsilon`` is applied to ``z`` and is exact; it is folded into the next iteration's forward pass (the
operator runs once forward and once backward per iteration, no extra solve).

With 8-bit output (``quantize``) every iterate is rounded to 256 levels before the model sees it, and the
gradient passes straight through the rounding (as DDN's authors quantise inside the loop): the budget
adapts to what a saved PNG does, and the least distorted successful iterate is already 8-bit.
(Without it, FMN's iterates sit so close to the boundary that most of them fail once rounded.)

* DDN, decoupled direction and norm (Rony et al., CVPR 2019): a step of size ``alpha`` along the
  normalised gradient of the cross-entropy, then ``r`` is rescaled to ``epsilon``, multiplied by
  ``1 - gamma`` after an adversarial iterate and by ``1 + gamma`` otherwise.
* FMN, fast minimum-norm (Pintor et al., NeurIPS 2021): a step along the normalised gradient of the logit
  difference, then a projection onto the ``epsilon``-ball. Until a first adversarial iterate ``epsilon``
  is the linear estimate of the distance to the boundary, ``||r|| + l / ||grad_r l||`` (for a latent, the
  slope along the latent step instead of ``||grad_r l||``); then it shrinks
  to below the best adversarial norm by ``1 - gamma`` while adversarial and grows by ``1 + gamma``
  otherwise. Step and ``gamma`` follow cosine schedules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smoothadv.attacks.base import MinimizationAttack, RunOutput, warn_if_zero_gradients
from smoothadv.attacks.losses import OBJECTIVES, check_objective
from smoothadv.attacks.strategies import (
    BestIterates,
    LatentPerturbation,
    check_options,
    cosine_schedule,
    l2_norms,
    normalized,
)
from smoothadv.core.errors import ConfigError
from smoothadv.core.images import quantize_8bit
from smoothadv.smoothing import PerturbationOperator


@dataclass(frozen=True)
class DDNOptions:
    """Options of :class:`DDN`.

    Attributes:
        steps: iterations (one gradient each).
        initial_norm: starting ``epsilon``, L2 on [0, 1] pixels.
        gamma: relative change of ``epsilon`` per iteration, in (0, 1).
        step_size, final_step_size: the L2 step ``alpha``, cosine-annealed from the first to the second.
        loss: objective (:data:`~smoothadv.attacks.losses.OBJECTIVES`): ``"ce"`` as in the DDN paper.
        smoothing: None (plain DDN) or a perturbation operator (``Smoothing()`` for sDDN).
    """

    steps: int = 500
    initial_norm: float = 1.0
    gamma: float = 0.05
    step_size: float = 1.0
    final_step_size: float = 0.01
    loss: str = "ce"
    smoothing: PerturbationOperator | None = None

    def __post_init__(self):
        check_options(steps=self.steps, smoothing=self.smoothing, loss=self.loss,
                      positive={"initial_norm": self.initial_norm, "step_size": self.step_size,
                                "final_step_size": self.final_step_size},
                      fractions={"gamma": (self.gamma, False)})


@dataclass(frozen=True)
class FMNOptions:
    """Options of :class:`FMN`.

    Attributes:
        steps: iterations (one gradient each).
        step_size, final_step_size: the step, relative to the current ``epsilon``, cosine-annealed.
        gamma, final_gamma: relative change of ``epsilon``, cosine-annealed.
        loss: objective, negative once adversarial: ``"margin"`` (the logit difference of the FMN paper).
        smoothing: None (plain FMN) or a perturbation operator (``Smoothing()`` for sFMN).
    """

    steps: int = 500
    step_size: float = 1.0
    final_step_size: float = 0.01
    gamma: float = 0.05
    final_gamma: float = 0.001
    loss: str = "margin"
    smoothing: PerturbationOperator | None = None

    def __post_init__(self):
        check_options(steps=self.steps, smoothing=self.smoothing, loss=self.loss,
                      positive={"step_size": self.step_size, "final_step_size": self.final_step_size},
                      fractions={"gamma": (self.gamma, False), "final_gamma": (self.final_gamma, False)})
        if self.loss == "ce":
            raise ConfigError(
                "FMN needs an objective that is negative once adversarial: loss 'margin' or 'dlr'.")


class _AdaptiveNormAttack(MinimizationAttack):
    """The loop DDN and FMN share; subclasses give the step and the update of ``epsilon``."""

    smoothable = True

    def run(self, images, labels, targets, clean) -> RunOutput:
        options = self.options
        batch = len(images)
        self.check_goal(clean.logits.shape[1], targets is not None)
        parametrization = LatentPerturbation(images, options.smoothing)
        objective_fn = OBJECTIVES[options.loss]
        # The iterates are already evaluated after rounding (below): no separate check is needed.
        best = BestIterates(self.model, images, labels, targets, verify_8bit=False)
        every = torch.arange(batch, device=images.device)
        variable = parametrization.initial()
        state = self.initial_state(images)
        # (B,) the largest change the [0, 1] box allows each image: no budget needs more.
        state["largest"] = l2_norms(torch.maximum(images, 1.0 - images))
        for step in range(options.steps):
            with torch.enable_grad():
                variable.requires_grad_(True)
                raw = parametrization.perturbation(variable)
                # Rescale to this iteration's budget: a constant per image, so r stays P(z) exactly.
                factor = self.budget_factor(l2_norms(raw.detach()), state)[:, None, None, None]
                variable_now = parametrization.feasible(variable * factor)
                perturbation = variable_now if parametrization.operator is None else raw * factor
                adversarial = (images + perturbation).clamp(0.0, 1.0)
                if self.quantize:  # evaluate the 8-bit image, with the gradient passed straight through
                    adversarial = adversarial + (quantize_8bit(adversarial) - adversarial).detach()
                logits = self.model(adversarial)
                objectives = objective_fn(logits, labels, targets=targets)
                gradient, gradient_r = torch.autograd.grad(objectives.sum(), [variable, perturbation])
            # d/dz is factor * P^T grad_r (masked where the box binds); the scale goes, the step is normalised
            if step == 0:
                warn_if_zero_gradients(gradient)
            variable_now, perturbation = variable_now.detach(), perturbation.detach()
            logits, objectives = logits.detach(), objectives.detach()
            with torch.no_grad():
                succeeded = best.offer(adversarial.detach(), logits, every)  # nothing kept aside: unverified
                # Decrease of the objective per unit of ||r|| along the step: ||grad_r|| for the identity,
                # ||P^T grad_r|| for a latent.
                slope = l2_norms(gradient) / factor.flatten().clamp_min(1e-12)
                if parametrization.operator is not None:
                    # A latent steps along the image-space gradient: r moves along P(grad_r), the gradient
                    # smoothed once (qPGD2's direction, eq. 12). The latent's own gradient P^T grad_r
                    # smooths it twice and cost sDDN 46% more distortion (docs/smooth-attacks.md).
                    gradient = gradient_r
                state = self.update_budget(state, step, succeeded, perturbation, objectives, slope)
                state["epsilon"] = torch.minimum(state["epsilon"], state["largest"])
                size = self.step_length(step, state)
                variable = variable_now - size[:, None, None, None] * normalized(gradient)
        count = torch.full((batch,), options.steps, dtype=torch.long, device=images.device)
        return RunOutput(adversarial=best.images, iterations=count, gradient_evaluations=count.clone())

    def check_goal(self, num_classes: int, targeted: bool) -> None:
        """Refuse an objective the model (its ``num_classes``) or the goal cannot use."""
        check_objective(self.options.loss, num_classes, targeted)

    def initial_state(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-image budget state before the first iterate, each entry (B,)."""
        raise NotImplementedError

    def budget_factor(self, norms: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) the factor that brings the (B,) ``norms`` of ``P(z)`` to this iteration's budget."""
        raise NotImplementedError

    def update_budget(self, state, step, succeeded, perturbation, objectives, slope):
        """The state after an iterate: ``succeeded``, ``perturbation`` r, ``objectives`` and their ``slope``
        (decrease per unit of ``||r||`` along the next step), each per image."""
        raise NotImplementedError

    def step_length(self, step: int, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) the length of the next step in the norm of r."""
        raise NotImplementedError


class DDN(_AdaptiveNormAttack):
    """Decoupled Direction and Norm L2 attack (Rony et al. 2019); given a smoother it is sDDN.

    ``DDN(model)`` or ``DDN(model, smoothing=Smoothing())``; options in :class:`DDNOptions`.
    """

    key = "ddn"
    smooth_key = "sddn"
    Options = DDNOptions
    # MNIST: 500 iterations reach the D_bar of 1000 on C4 (100 test images: 1.348 and 1.349); ImageNet:
    # 100, the budget of the DDN paper's ImageNet runs, as CPUs allow.
    presets = {"mnist": {"steps": 500, "initial_norm": 1.0}, "imagenet": {"steps": 100, "initial_norm": 1.0}}

    def initial_state(self, images):
        epsilon = torch.full((len(images),), self.options.initial_norm, dtype=images.dtype,
                             device=images.device)
        return {"epsilon": epsilon}

    def budget_factor(self, norms, state):
        # The first iterate is the clean image (z = 0); afterwards r is rescaled to epsilon.
        factor = state["epsilon"] / norms.clamp_min(1e-12)
        return torch.where(norms > 0, factor, torch.ones_like(factor))

    def update_budget(self, state, step, succeeded, perturbation, objectives, slope):
        gamma = self.options.gamma
        epsilon = state["epsilon"]
        return {**state, "epsilon": torch.where(succeeded, epsilon * (1 - gamma), epsilon * (1 + gamma))}

    def step_length(self, step, state):
        options = self.options
        size = cosine_schedule(options.step_size, options.final_step_size, step, options.steps)
        return torch.full_like(state["epsilon"], size)


class FMN(_AdaptiveNormAttack):
    """Fast Minimum-Norm L2 attack (Pintor et al. 2021); given a smoother it is sFMN.

    ``FMN(model)`` or ``FMN(model, smoothing=Smoothing())``; options in :class:`FMNOptions`.
    """

    key = "fmn"
    smooth_key = "sfmn"
    Options = FMNOptions
    presets = {"mnist": {"steps": 500}, "imagenet": {"steps": 100}}  # as DDN's (C4: 1.384 at 500 and 1000)

    def check_goal(self, num_classes, targeted):
        super().check_goal(num_classes, targeted)
        if targeted and self.options.loss == "dlr":  # negative once y_s > y_t, not once s wins
            raise ConfigError("targeted FMN needs loss 'margin': targeted DLR is not negative exactly when "
                              "the target class wins.")

    def initial_state(self, images):
        zeros = torch.zeros(len(images), dtype=images.dtype, device=images.device)
        return {"epsilon": zeros, "best_norm": torch.full_like(zeros, torch.inf),
                "found": torch.zeros(len(images), dtype=torch.bool, device=images.device)}

    def budget_factor(self, norms, state):
        # Projection onto the epsilon-ball; before the first estimate (epsilon 0) z = 0 stays as it is.
        factor = (state["epsilon"] / norms.clamp_min(1e-12)).clamp(max=1.0)
        return torch.where((norms > 0) & (state["epsilon"] > 0), factor, torch.ones_like(factor))

    def update_budget(self, state, step, succeeded, perturbation, objectives, slope):
        options = self.options
        gamma = cosine_schedule(options.gamma, options.final_gamma, step, options.steps)
        norms = l2_norms(perturbation)
        best_norm = torch.where(succeeded, torch.minimum(state["best_norm"], norms), state["best_norm"])
        found = state["found"] | succeeded
        boundary = norms + objectives / slope.clamp_min(1e-12)
        # The linear estimate, while no iterate was adversarial, may not run ahead of the perturbation by
        # more than a factor 1 + gamma: with a latent, clipped pixels flatten the gradient and inflate it.
        grown = torch.maximum(state["epsilon"], norms) * (1 + gamma)
        estimate = boundary if step == 0 else torch.minimum(boundary, grown)
        not_adversarial = torch.where(state["found"], state["epsilon"] * (1 + gamma), estimate)
        adversarial = torch.minimum(state["epsilon"] * (1 - gamma), best_norm)
        epsilon = torch.where(succeeded, adversarial, not_adversarial).clamp_min(0.0)
        return {**state, "epsilon": epsilon, "best_norm": best_norm, "found": found}

    def step_length(self, step, state):
        options = self.options
        size = cosine_schedule(options.step_size, options.final_step_size, step, options.steps)
        return size * state["epsilon"].clamp_min(1e-3)
