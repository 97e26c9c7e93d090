"""APGD-L2 (Croce & Hein, ICML 2020), a fixed-distortion attack; and sPGD2, PGD2 on the smooth latent.

APGD moves within the L2 ball of radius ``epsilon`` around ``x_o`` with momentum and a step size that
halves at checkpoints where progress stalled:

* ``u = Pi(r_k - eta d_k)``, ``r_{k+1} = Pi(r_k + a (u - r_k) + (1 - a)(r_k - r_{k-1}))`` (``a = 0.75``;
  the first step has no momentum), with ``d_k`` the normalised gradient of the objective and ``Pi`` the
  projection onto the ball (and, for the plain attack, the box ``x_o + r`` in [0, 1]);
* checkpoints at the fractions ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
  0.06)`` of the iterations. At a checkpoint an image halves ``eta`` and restarts from its best point when
  fewer than ``rho = 0.75`` of the steps since the last checkpoint improved the objective, or when neither
  ``eta`` nor its best objective changed since the last checkpoint;
* ``eta`` starts at ``2 epsilon``; the objective is the cross-entropy or the DLR loss.

Given a perturbation operator ``P`` the iterate is a latent: ``r = P(z)``, ``x = clip(x_o + r)``. The steps
and momentum act on ``z``; the direction is the gradient in ``z`` (``P^T grad_r``) scaled so that its
image under ``P`` has unit norm, so ``eta`` stays a step in the norm of ``r``; the projection rescales
``z`` (exact, since ``P`` is linear). ``r`` is carried along with ``z`` by the same linear combinations;
each iteration applies the adjoint to the gradient and ``P`` to the new direction (two solves for the
guided smoothing, as sC&W's forward and backward).

The attack returns, per image, the least distorted iterate that succeeded (with 8-bit output: that still
succeeds once rounded within the budget, checked at the checkpoints), else the one with the best
objective; the fixed-distortion family then rounds it to 8 bits within the budget.

sPGD2 is the same loop without momentum or step-size schedule, with PGD2's step ``0.6 epsilon``, 10
iterations and the margin objective: the paper's PGD2 run on the latent ``z``, next to qPGD2 (PGD2 whose
gradient is smoothed, eq. 12).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from smoothadv.attacks.base import FixedDistortionAttack, RunOutput, warn_if_zero_gradients
from smoothadv.attacks.gradient import PGD2
from smoothadv.attacks.losses import OBJECTIVES, check_objective
from smoothadv.attacks.strategies import (
    BestIterates,
    LatentPerturbation,
    ball_factor,
    check_options,
    l2_norms,
)
from smoothadv.core.errors import ConfigError
from smoothadv.smoothing import PerturbationOperator, Smoothing


@dataclass(frozen=True)
class APGDOptions:
    """Options of :class:`APGD2` (besides ``epsilon``).

    Attributes:
        steps: iterations (one gradient each).
        loss: objective: ``"ce"`` (cross-entropy), ``"dlr"`` (needs 3 classes, 4 targeted) or ``"margin"``.
        relative_step: initial step ``eta`` as a multiple of ``epsilon`` (2 in the APGD paper).
        momentum: weight ``a`` of the new step (0.75; 1 is no momentum).
        adaptive: halve the step at stalled checkpoints (APGD); False keeps it fixed (PGD).
        rho: share of improving steps below which a checkpoint halves the step.
        smoothing: None (plain) or a perturbation operator (``Smoothing()`` for sAPGD2).
    """

    steps: int = 100
    loss: str = "ce"
    relative_step: float = 2.0
    momentum: float = 0.75
    adaptive: bool = True
    rho: float = 0.75
    smoothing: PerturbationOperator | None = None

    def __post_init__(self):
        check_options(steps=self.steps, smoothing=self.smoothing, loss=self.loss,
                      positive={"relative_step": self.relative_step},
                      fractions={"momentum": (self.momentum, True), "rho": (self.rho, True)},
                      flags={"adaptive": self.adaptive})


def checkpoints(steps: int) -> set[int]:
    """Iterations at which APGD may halve its step: ``ceil(p_j * steps)`` for the fractions ``p_j`` < 1."""
    fractions = [0.0, 0.22]
    while True:
        following = fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06)
        if following >= 1:
            break
        fractions.append(following)
    return {math.ceil(p * steps - 1e-9) for p in fractions[1:]}  # 0.57 * 100 is 57, not 58


class APGD2(FixedDistortionAttack):
    """Auto-PGD in L2 (Croce & Hein 2020); given a smoother it is sAPGD2.

    ``APGD2(model, epsilon=2.0)`` or ``APGD2(model, epsilon=2.0, smoothing=Smoothing())``; options in
    :class:`APGDOptions`.
    """

    key = "apgd2"
    smooth_key = "sapgd2"
    smoothable = True
    Options = APGDOptions
    presets = {"mnist": {"epsilon": 2.0, "steps": 100, "loss": "ce"},
               "imagenet": {"epsilon": 1.0, "steps": 100, "loss": "ce"}}
    epsilon_grids = {"mnist": [1.0, 1.5, 2.0, 2.5, 3.0, 4.0], "imagenet": [0.25, 0.5, 1.0, 2.0, 3.0]}

    def run(self, images, labels, targets, clean) -> RunOutput:
        options = self.options
        batch = len(images)
        check_objective(options.loss, clean.logits.shape[1], targets is not None)
        parametrization = LatentPerturbation(images, options.smoothing)
        operator = parametrization.operator
        objective_fn = OBJECTIVES[options.loss]
        # With 8-bit output, an iterate counts once it succeeds rounded as the family rounds (within epsilon):
        # the least distorted successes sit on the boundary, and plain rounding loses many of them.
        best = BestIterates(self.model, images, labels, targets, verify_8bit=self.quantize,
                            rounding=lambda iterates, originals: self.quantize_images(iterates, originals))
        every = torch.arange(batch, device=images.device)
        epsilon = self.epsilon

        def project(variable, perturbation):
            """Onto the ball of radius epsilon (and the box, plain), applied to z and r alike."""
            shrink = ball_factor(l2_norms(perturbation), epsilon)
            variable, perturbation = variable * shrink, perturbation * shrink
            if operator is None:
                variable = perturbation = parametrization.feasible(variable)
            return variable, perturbation

        def evaluate(perturbation, with_gradient: bool = True):
            """Objective and (unless the last iterate) its gradient in r at x = clip(x_o + r)."""
            with torch.enable_grad():
                perturbation = perturbation.detach().requires_grad_(with_gradient)
                adversarial = (images + perturbation).clamp(0.0, 1.0)
                logits = self.model(adversarial)
                objectives = objective_fn(logits, labels, targets=targets)
                gradient = (torch.autograd.grad(objectives.sum(), perturbation)[0] if with_gradient
                            else torch.zeros_like(perturbation))
            best.offer(adversarial.detach(), logits.detach(), every)
            return objectives.detach(), gradient

        def direction(gradient_r):
            """(d, P(d)): the descent direction in z whose image under P has unit norm."""
            gradient = gradient_r if operator is None else operator.adjoint(gradient_r)
            image = gradient if operator is None else operator(gradient)
            scale = l2_norms(image).clamp_min(1e-12)[:, None, None, None]
            return gradient / scale, image / scale

        variable = parametrization.initial()
        perturbation = torch.zeros_like(images)
        previous = (variable, perturbation)
        eta = torch.full((batch,), options.relative_step * epsilon, dtype=images.dtype, device=images.device)
        objectives, gradient = evaluate(perturbation)
        warn_if_zero_gradients(gradient)
        # (z, r, gradient) of the best objective: a restart resumes there without a new gradient.
        best_objective = objectives.clone()
        best_point = (variable.clone(), perturbation.clone(), gradient.clone())
        marks = checkpoints(options.steps) if options.adaptive else set()
        improving = torch.zeros(batch, dtype=torch.long, device=images.device)
        last_mark, eta_at_mark, best_at_mark = 0, eta.clone(), best_objective.clone()

        for step in range(1, options.steps + 1):  # steps updates; no gradient needed after the last
            step_z, step_r = direction(gradient)
            size = eta[:, None, None, None]
            u_z, u_r = project(variable - size * step_z, perturbation - size * step_r)
            if step == 1:
                new = (u_z, u_r)
            else:
                a = options.momentum
                new = project(
                    variable + a * (u_z - variable) + (1 - a) * (variable - previous[0]),
                    perturbation + a * (u_r - perturbation) + (1 - a) * (perturbation - previous[1]))
            previous, (variable, perturbation) = (variable, perturbation), new
            new_objectives, gradient = evaluate(perturbation, with_gradient=step < options.steps)
            improving += (new_objectives < objectives).long()
            objectives = new_objectives
            better = objectives < best_objective
            best_objective = torch.where(better, objectives, best_objective)
            mask = better[:, None, None, None]
            best_point = tuple(torch.where(mask, current, kept) for current, kept
                               in zip((variable, perturbation, gradient), best_point, strict=True))
            if step in marks:
                stalled = improving.to(images.dtype) < options.rho * (step - last_mark)
                unchanged = (eta == eta_at_mark) & (best_objective == best_at_mark)
                halve = stalled | unchanged
                eta_at_mark, best_at_mark = eta.clone(), best_objective.clone()
                eta = torch.where(halve, eta / 2, eta)
                restart = halve[:, None, None, None]
                variable = torch.where(restart, best_point[0], variable)
                perturbation = torch.where(restart, best_point[1], perturbation)
                previous = (torch.where(restart, variable, previous[0]),
                            torch.where(restart, perturbation, previous[1]))
                gradient = torch.where(restart, best_point[2], gradient)
                objectives = torch.where(halve, best_objective, objectives)
                improving.zero_()
                last_mark = step
            if step in marks or step == options.steps:
                best.settle()
        fallback = (images + best_point[1]).clamp(0.0, 1.0)
        adversarial = torch.where(best.found[:, None, None, None], best.images, fallback)
        count = torch.full((batch,), options.steps, dtype=torch.long, device=images.device)
        return RunOutput(adversarial=adversarial, iterations=count, gradient_evaluations=count.clone())


@dataclass(frozen=True)
class SPGDOptions(APGDOptions):
    """Options of :class:`SPGD2`: :class:`APGDOptions` with PGD2's defaults (10 fixed steps of
    ``0.6 epsilon``, no momentum, margin objective) and the guided smoothing."""

    steps: int = 10
    loss: str = "margin"
    relative_step: float = 0.6
    momentum: float = 1.0
    adaptive: bool = False
    smoothing: PerturbationOperator | None = Smoothing()

    def __post_init__(self):
        super().__post_init__()
        if self.smoothing is None:
            raise ConfigError("sPGD2 needs a perturbation operator; for plain PGD2 use the pgd2 attack.")


class SPGD2(APGD2):
    """sPGD2: PGD2's iterations (fixed step, no momentum, margin objective) on the latent ``r = P(z)``.

    Compare with :class:`~smoothadv.attacks.gradient.QPGD2`, which smooths PGD2's gradient instead.
    """

    key = "spgd2"
    smooth_key = "spgd2"
    Options = SPGDOptions
    presets = {preset: dict(options) for preset, options in PGD2.presets.items()}
    epsilon_grids = PGD2.epsilon_grids
