"""DeepFool L2 (Moosavi-Dezfooli et al. 2016), the paper's "target success" example (section 2.1.2).

At each iteration the classifier is linearised around the current point; the smallest step that crosses
the nearest linearised boundary ``f_k - f_t = 0`` among the candidate classes k is
``r = (|f_k - f_t| / ||w_k|| + 1e-4) * w_k / ||w_k||`` with ``w_k = grad(f_k - f_t)``. Steps
accumulate; the image is ``clip(x_o + (1 + overshoot) * r_total)``, and an image stops as soon as it is
misclassified (after 8-bit rounding when ``quantize`` is on).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from smoothadv.attacks.base import MinimizationAttack, RunOutput
from smoothadv.attacks.strategies import ActiveSet
from smoothadv.core.errors import ConfigError
from smoothadv.core.images import quantize_8bit


class DeepFool(MinimizationAttack):
    """Untargeted DeepFool in L2.

    Args:
        model: classifier returning logits.
        steps: iteration cap.
        overshoot: relative overshoot past the linearised boundary (0.02 in the original paper).
        candidates: number of most likely classes considered as targets (all classes if larger).
        quantize: see :class:`~smoothadv.attacks.base.Attack`.
    """

    key = "deepfool"
    presets = {"mnist": {"steps": 50, "overshoot": 0.02, "candidates": 10},
               "imagenet": {"steps": 50, "overshoot": 0.02, "candidates": 10}}
    supports_targeted = False

    def __init__(self, model: nn.Module, *, steps: int = 50, overshoot: float = 0.02, candidates: int = 10,
                 quantize: bool = True):
        super().__init__(model, quantize=quantize)
        if not isinstance(steps, int) or steps < 1 or overshoot < 0 or candidates < 2:
            raise ConfigError("DeepFool needs steps >= 1, overshoot >= 0 and candidates >= 2.")
        self.steps, self.overshoot, self.candidates = steps, float(overshoot), int(candidates)

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "steps": self.steps, "overshoot": self.overshoot,
                "candidates": self.candidates}

    def run(self, images, labels, targets, clean) -> RunOutput:
        batch = len(images)
        logits = clean.logits.detach()
        count = min(self.candidates, logits.shape[1])
        # Candidate classes: the true label first, then the most likely others (fixed for the whole run).
        others = logits.scatter(1, labels[:, None], -torch.inf).topk(count - 1, dim=1).indices
        classes = torch.cat([labels[:, None], others], dim=1)
        total = torch.zeros_like(images)
        adversarial = images.clone()
        active = ActiveSet(batch, images.device)
        iterations = torch.zeros(batch, dtype=torch.long, device=images.device)
        gradient_evaluations = torch.zeros_like(iterations)
        for _ in range(self.steps):
            index = active.index
            if len(index) == 0:
                break
            point = adversarial[index].detach()
            if self.quantize:  # linearise at the 8-bit image, so that success survives saving as PNG
                point = quantize_8bit(point)
            point.requires_grad_(True)
            with torch.enable_grad():
                chosen = self.model(point).gather(1, classes[index])
                still_correct = chosen[:, 1:].amax(dim=1) < chosen[:, 0]
                differences = chosen[:, 1:] - chosen[:, :1]  # f_k - f_t, (b, count - 1)
                gradients = torch.stack([
                    torch.autograd.grad(differences[:, k].sum(), point, retain_graph=k < count - 2)[0]
                    for k in range(count - 1)
                ], dim=1)  # (b, count - 1, C, H, W)
            gradient_evaluations[index] += count - 1
            norms = gradients.flatten(2).norm(dim=2).clamp_min(1e-12)
            distances = differences.detach().abs() / norms
            nearest = distances.argmin(dim=1)
            rows = torch.arange(len(index), device=images.device)
            step = ((distances[rows, nearest] + 1e-4) / norms[rows, nearest])[:, None, None, None]
            step = step * gradients[rows, nearest]
            step = torch.where(still_correct[:, None, None, None], step, torch.zeros_like(step))
            total[index] += step
            adversarial[index] = (images[index] + (1 + self.overshoot) * total[index]).clamp(0.0, 1.0)
            iterations[index] += still_correct.long()
            active.stop(~still_correct, index)
        return RunOutput(adversarial=adversarial, iterations=iterations,
                         gradient_evaluations=gradient_evaluations)
