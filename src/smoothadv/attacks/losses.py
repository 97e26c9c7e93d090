"""Classification losses on logits (paper section 2.1.3) and the objectives attacks minimise."""

from __future__ import annotations

import torch

from smoothadv.core.errors import ConfigError


def margin_loss(logits: torch.Tensor, labels: torch.Tensor, *, margin: float = 0.0,
                targets: torch.Tensor | None = None) -> torch.Tensor:
    """Margin loss of eq. (3), per sample; it vanishes once the attack goal is met with margin ``m``.

    Untargeted: ``[y_t - max_{i != t} y_i + m]_+`` with t the true label.
    Targeted (``targets`` given): ``[max_{i != s} y_i - y_s + m]_+`` with s the target class.

    Args:
        logits: (B, K) class scores.
        labels: (B,) true labels t.
        margin: confidence margin m >= 0.
        targets: optional (B,) target classes s.

    Returns:
        (B,) non-negative losses.
    """
    return (margin_objective(logits, labels, targets=targets) + margin).clamp_min(0.0)


def goal_reached(logits: torch.Tensor, labels: torch.Tensor,
                 targets: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) bool: prediction differs from the true label (untargeted) or equals the target (targeted)."""
    predictions = logits.argmax(dim=1)
    return predictions != labels if targets is None else predictions == targets


def cross_entropy_objective(logits: torch.Tensor, labels: torch.Tensor, *,
                            targets: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy as an objective to minimise: ``-CE(f(x), t)`` untargeted, ``CE(f(x), s)`` targeted.

    Computed as ``-log p_c = softplus(logsumexp_{j != c} y_j - y_c)``, which keeps its precision (and its
    gradient) where a confident model makes ``log_softmax`` round to 0.

    Returns:
        (B,) objectives; lower is closer to the attack goal.
    """
    classes = labels if targets is None else targets
    chosen = logits.gather(1, classes[:, None])[:, 0]
    others = logits.masked_fill(torch.nn.functional.one_hot(classes, logits.shape[1]).bool(), -torch.inf)
    negative_log_probability = torch.nn.functional.softplus(others.logsumexp(dim=1) - chosen)
    return -negative_log_probability if targets is None else negative_log_probability


def dlr_objective(logits: torch.Tensor, labels: torch.Tensor, *,
                  targets: torch.Tensor | None = None) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020) as an objective to minimise; invariant to shifts
    and scales of the logits.

    Untargeted: ``(y_t - max_{i != t} y_i) / (y_pi1 - y_pi3)``; targeted:
    ``(y_t - y_s) / (y_pi1 - (y_pi3 + y_pi4) / 2)``, with ``y_pi1 >= y_pi2 >= ...`` the sorted logits.
    Needs at least 3 classes (4 when targeted).

    Returns:
        (B,) objectives; negative once the goal is reached (untargeted).
    """
    ordered = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, labels[:, None])[:, 0]
    if targets is None:
        others = logits.masked_fill(torch.nn.functional.one_hot(labels, logits.shape[1]).bool(), -torch.inf)
        return (true - others.amax(dim=1)) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
    target = logits.gather(1, targets[:, None])[:, 0]
    return (true - target) / (ordered[:, 0] - (ordered[:, 2] + ordered[:, 3]) / 2 + 1e-12)


def margin_objective(logits: torch.Tensor, labels: torch.Tensor, *,
                     targets: torch.Tensor | None = None) -> torch.Tensor:
    """The signed logit difference of eq. (3) without the clamp: negative once the goal is reached."""
    classes = labels if targets is None else targets
    chosen = logits.gather(1, classes[:, None])[:, 0]
    others = logits.masked_fill(torch.nn.functional.one_hot(classes, logits.shape[1]).bool(), -torch.inf)
    gap = chosen - others.amax(dim=1)
    return gap if targets is None else -gap


#: Attack objectives by name, each ``f(logits, labels, targets=None) -> (B,)``, lower closer to the goal.
OBJECTIVES = {"margin": margin_objective, "ce": cross_entropy_objective, "dlr": dlr_objective}
#: The fewest classes each objective needs (untargeted, targeted).
OBJECTIVE_MIN_CLASSES = {"margin": (2, 2), "ce": (2, 2), "dlr": (3, 4)}


def check_objective(loss: str, num_classes: int, targeted: bool) -> None:
    """Raise :class:`~smoothadv.core.errors.ConfigError` when the model has too few classes for ``loss``."""
    needed = OBJECTIVE_MIN_CLASSES[loss][1 if targeted else 0]
    if num_classes < needed:
        raise ConfigError(f"loss {loss!r} needs a model with at least {needed} classes "
                          f"({'targeted' if targeted else 'untargeted'}); use 'ce' or 'margin'.")
