"""Classification losses on logits (paper section 2.1.3)."""

from __future__ import annotations

import torch


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
    classes = labels if targets is None else targets
    chosen = logits.gather(1, classes[:, None])[:, 0]
    others = logits.masked_fill(torch.nn.functional.one_hot(classes, logits.shape[1]).bool(), -torch.inf)
    best_other = others.amax(dim=1)
    gap = chosen - best_other if targets is None else best_other - chosen
    return (gap + margin).clamp_min(0.0)


def goal_reached(logits: torch.Tensor, labels: torch.Tensor,
                 targets: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) bool: prediction differs from the true label (untargeted) or equals the target (targeted)."""
    predictions = logits.argmax(dim=1)
    return predictions != labels if targets is None else predictions == targets
