"""The pieces attacks share instead of re-implementing them: parametrisations, the per-image Adam, the
record of the best iterates, the set of images still attacked, step schedules.

Parametrisations map the optimised variable to the adversarial image:

* :class:`TanhParametrization` (C&W, eq. 4): ``x = (tanh(w) + 1) / 2``.
* :class:`LatentPerturbation` (eqs. 13, 17-18): ``r = P(z)``, ``x = clip(x_o + r)`` with ``P`` any linear
  perturbation operator (:mod:`smoothadv.smoothing.perturbation`), or the identity (``r = z``, and the
  variable is kept inside the [0, 1] box). Because ``P`` is linear, scaling ``z`` scales ``r`` by the same
  factor: a norm bound on ``r`` is met exactly by rescaling ``z``. The norm attacks measure and bound is
  always that of ``r``, never of ``z``.
"""

from __future__ import annotations

import math

import torch

from smoothadv.attacks.losses import OBJECTIVES, goal_reached
from smoothadv.core.errors import ConfigError
from smoothadv.core.images import quantize_8bit
from smoothadv.core.validation import check_choice, check_positive, check_positive_int
from smoothadv.smoothing import PerturbationOperator, check_operator


def check_options(*, steps, smoothing, loss, positive: dict | None = None, fractions: dict | None = None,
                  flags: dict | None = None) -> None:
    """Validate the fields of an attack's options dataclass; :class:`ConfigError` says which and how.

    Args:
        steps: an int >= 1. smoothing: None or a perturbation operator. loss: a name of
            :data:`~smoothadv.attacks.losses.OBJECTIVES`.
        positive: ``{name: value}`` of finite numbers > 0.
        fractions: ``{name: (value, closed)}`` of numbers in (0, 1) (``(0, 1]`` when ``closed``).
        flags: ``{name: value}`` of booleans.
    """
    check_positive_int(steps, "steps")
    check_operator(smoothing)
    check_choice(loss, tuple(OBJECTIVES), "loss")
    for name, value in (positive or {}).items():
        check_positive(value, name)
    for name, (value, closed) in (fractions or {}).items():
        check_positive(value, name)
        if value > 1 or (value == 1 and not closed):
            raise ConfigError(f"{name} must lie in (0, 1{']' if closed else ')'}; got {value!r}.")
    for name, value in (flags or {}).items():
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False; got {value!r}.")


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) broadcastable against ``like``."""
    return values.view((-1,) + (1,) * (like.dim() - 1))


def l2_norms(values: torch.Tensor) -> torch.Tensor:
    """(B,) L2 norm of each image of a (B, ...) tensor."""
    return values.flatten(1).norm(dim=1)


class TanhParametrization:
    """``x = (tanh(w) + 1) / 2``; ``w`` starts at the original image (C&W's change of variables)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def initial(self) -> torch.Tensor:
        return torch.atanh((2.0 * self.images - 1.0).clamp(-1 + 1e-6, 1 - 1e-6))

    def image_and_perturbation(self, variable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        adversarial = (torch.tanh(variable) + 1.0) / 2.0
        return adversarial, adversarial - self.images


class LatentPerturbation:
    """``r = P(z)``, ``x = clip(x_o + r)``; ``z`` starts at 0 (eqs. 13, 17, 18).

    Args:
        images: (B, C, H, W) original images ``x_o``, which also guide ``P``.
        operator: a perturbation operator configuration (prepared here on ``images``), or None for the
            identity.
    """

    def __init__(self, images: torch.Tensor, operator: PerturbationOperator | None = None):
        self.images = images
        self.operator = None if operator is None else operator.prepare(images)

    def initial(self) -> torch.Tensor:
        return torch.zeros_like(self.images)

    def perturbation(self, variable: torch.Tensor) -> torch.Tensor:
        """``r = P(z)`` (differentiable)."""
        return variable if self.operator is None else self.operator(variable)

    def image_and_perturbation(self, variable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        perturbation = self.perturbation(variable)
        return (self.images + perturbation).clamp(0.0, 1.0), perturbation

    def feasible(self, variable: torch.Tensor) -> torch.Tensor:
        """The identity's variable moved into the box (``x_o + z`` in [0, 1]); a latent is left as is."""
        if self.operator is None:
            return (self.images + variable).clamp(0.0, 1.0) - self.images
        return variable



class ActiveSet:
    """The images of a batch still being attacked: an attack runs the model on these only.

    Args:
        batch: number of images B. device: where the (B,) mask lives.
    """

    def __init__(self, batch: int, device: torch.device):
        self.mask = torch.ones(batch, dtype=torch.bool, device=device)

    @property
    def index(self) -> torch.Tensor:
        """(b,) int64 positions of the active images in the batch."""
        return self.mask.nonzero()[:, 0]

    def stop(self, done: torch.Tensor, index: torch.Tensor | None = None) -> None:
        """Images leave the set where ``done`` is True; ``done`` is (B,) or, with ``index``, (len(index),)."""
        if index is None:
            self.mask &= ~done
        else:
            self.mask[index] &= ~done


def cosine_schedule(start: float, end: float, step: int, steps: int) -> float:
    """Cosine annealing from ``start`` (step 0) to ``end`` (step ``steps``)."""
    return end + (start - end) * (1.0 + math.cos(math.pi * step / max(steps, 1))) / 2.0


def ball_factor(norms: torch.Tensor, epsilon: float) -> torch.Tensor:
    """(B, 1, 1, 1) ``min(1, epsilon / norm)``: the scaling that projects perturbations of these (B,) L2
    ``norms`` onto the ball of radius ``epsilon``."""
    return (epsilon / norms.clamp_min(1e-12)).clamp(max=1.0)[:, None, None, None]


def normalized(gradient: torch.Tensor) -> torch.Tensor:
    """Each image's gradient scaled to unit L2 norm; zero gradients stay zero."""
    return gradient / _per_image(l2_norms(gradient).clamp_min(1e-12), gradient)


class PerImageAdam:
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


class BestIterates:
    """The least distorted successful iterate of each image, checked after 8-bit rounding if asked.

    Checking every improving iterate as it comes costs one forward pass each, and in the last part of an
    optimisation nearly every iterate improves on the one before. So the improving iterates are kept
    aside (:meth:`offer`) and checked in batches (:meth:`settle`): for each image the least distorted one
    first, then older ones only while the rounded ones fail. Usually one check per image and call of
    :meth:`settle` instead of one per iteration.

    Args:
        model: the classifier (for the checks after rounding).
        images, labels, targets: the batch being attacked (targets None when untargeted).
        verify_8bit: check success after rounding to 256 levels and keep rounded images.
        rounding: how iterates are rounded for the check, ``(iterates, originals) -> rounded``, both
            (b, C, H, W); nearest 8-bit levels by default (a fixed-distortion attack passes its rounding
            within the budget).

    Attributes:
        images: (B, C, H, W) best iterate per image (the original until one succeeds).
        l2: (B,) its L2 distortion (inf until one succeeds).
    """

    def __init__(self, model, images, labels, targets, *, verify_8bit: bool, rounding=None):
        self.model, self.originals, self.labels, self.targets = model, images, labels, targets
        self.verify_8bit = verify_8bit
        self.rounding = rounding or (lambda iterates, originals: quantize_8bit(iterates))
        self.images = images.clone()
        self.l2 = torch.full((len(images),), torch.inf, dtype=images.dtype, device=images.device)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (rows, iterates) per offer
        self._pending_l2 = self.l2.clone()
        self._improved = torch.zeros(len(images), dtype=torch.bool, device=images.device)

    @property
    def found(self) -> torch.Tensor:
        """(B,) bool: a successful iterate is kept (after rounding when checked)."""
        return torch.isfinite(self.l2)

    def offer(self, adversarial: torch.Tensor, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Consider the iterates ``adversarial`` (with their ``logits``) of the images ``index``.

        Returns:
            (len(index),) bool: the iterate succeeded (before rounding), not counting those kept aside
            for a check after rounding (:meth:`settle` reports those).
        """
        target_subset = None if self.targets is None else self.targets[index]
        l2 = l2_norms(adversarial - self.originals[index])
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

        The checks go by depth, not by offer: first the newest iterate of every image, in one forward
        pass; then the next older one of each image whose rounded iterate failed; and so on. Each image
        sees the same checks as one by one, in a few passes (the offers of a tenth of an inner loop are
        about ten, and most images' newest iterates lie in different ones). The outcome is that of one by
        one as long as the model's output for an image does not depend on the rest of its batch (a model
        in eval mode).

        Returns:
            improved: (B,) bool, the best iterate changed since the last call.
            verified: (B,) bool, an iterate kept aside succeeded after rounding.
        """
        verified = torch.zeros_like(self._improved)
        if self._pending:
            rows = torch.cat([rows for rows, _ in self._pending])
            iterates = torch.cat([iterates for _, iterates in self._pending])
            age = torch.cat([torch.full_like(rows, len(self._pending) - 1 - offer)
                             for offer, (rows, _) in enumerate(self._pending)])
            order = torch.argsort(rows * len(self._pending) + age)  # by image, newest first
            rows = rows[order]
            counts = torch.bincount(rows, minlength=len(verified))
            depth = torch.arange(len(rows), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
            with torch.no_grad():
                for level in range(int(depth.max()) + 1):
                    pick = (depth == level) & ~verified[rows]
                    if not bool(pick.any()):
                        break
                    level_rows = rows[pick]
                    rounded = self.rounding(iterates[order[pick]], self.originals[level_rows])
                    targets = None if self.targets is None else self.targets[level_rows]
                    still = goal_reached(self.model(rounded), self.labels[level_rows], targets)
                    rounded_l2 = l2_norms(rounded - self.originals[level_rows])
                    keep = still & (rounded_l2 < self.l2[level_rows])
                    self.images[level_rows[keep]] = rounded[keep]
                    self.l2[level_rows[keep]] = rounded_l2[keep]
                    self._improved[level_rows[keep]] = True
                    verified[level_rows[still]] = True
        self._pending.clear()
        self._pending_l2.fill_(torch.inf)
        improved, self._improved = self._improved, torch.zeros_like(self._improved)
        return improved, verified
