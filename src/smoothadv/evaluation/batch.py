"""How one batch of an evaluation runs: a :class:`BatchJob` (one attack, one epsilon, some images), the
attack itself, then the after-batch steps, each usable alone: transfer to other models, MAD, choosing the
images to keep, and turning the outcome into records. Nothing here writes to disk: the driver does
(:mod:`.engine`)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from smoothadv.attacks import Attack, AttackResult
from smoothadv.perceptual import mad_batch


@dataclass(frozen=True)
class BatchJob:
    """One unit of work: ``attack`` at ``epsilon`` on the dataset positions ``indices``.

    Attributes:
        attack: registry key. epsilon: budget (None for minimisation attacks).
        parameters: the attack's recorded parameters. key: the batch key of the records file.
        indices: dataset positions. ids: their image ids.
    """

    attack: str
    epsilon: float | None
    parameters: dict[str, Any]
    key: str
    indices: list[int]
    ids: list[str]


@dataclass
class BatchOutcome:
    """What a batch produced, filled in by the steps.

    Attributes:
        job: the job. images: (B, C, H, W) clean images. labels: (B,) true labels.
        result: the attack's result on the attacked model. predictions / successes: (B,) per model name
            (the attacked one first). mads: batch position -> MAD score of its adversarial image.
    """

    job: BatchJob
    images: torch.Tensor
    labels: torch.Tensor
    result: AttackResult
    predictions: dict[str, torch.Tensor]
    successes: dict[str, torch.Tensor]
    mads: dict[int, float] = field(default_factory=dict)

    def fooled_any(self) -> torch.Tensor:
        """(B,) bool: the adversarial image fools at least one model."""
        return torch.stack(list(self.successes.values())).any(dim=0)


def seed_batch(seed: int, key: str) -> None:
    """Seed torch from the run's seed and the batch key, so a resumed run repeats an uninterrupted one."""
    offset = int(hashlib.sha1(key.encode()).hexdigest()[:12], 16)
    torch.manual_seed((int(seed) * 1_000_003 + offset) % (2**63 - 1))


def attack_batch(job: BatchJob, attack: Attack, images: torch.Tensor, labels: torch.Tensor,
                 model_name: str) -> BatchOutcome:
    """Run ``attack`` on the job's (B, C, H, W) ``images`` with (B,) ``labels``, both on the attacked
    model's device; the outcome holds the attacked model's view."""
    result = attack(images, labels)
    return BatchOutcome(job, images, labels, result, predictions={model_name: result.predictions.cpu()},
                        successes={model_name: result.success.cpu()})


def transfer_step(outcome: BatchOutcome, targets: Mapping[str, nn.Module]) -> None:
    """Classify the adversarial images with each transfer target (Table 3); success = misclassified."""
    adversarial = outcome.result.adversarial.detach()
    for name, net in targets.items():
        with torch.no_grad():
            predictions = net(adversarial).argmax(dim=1).cpu()
        outcome.predictions[name] = predictions
        outcome.successes[name] = predictions != outcome.labels.cpu()


def mad_step(outcome: BatchOutcome, upsample_to: int | None) -> None:
    """MAD (2011 scale) of every adversarial image that fools some model (non-finite scores left out)."""
    index = outcome.fooled_any().nonzero()[:, 0]
    if not len(index):
        return
    scores = mad_batch(outcome.images[index].cpu(), outcome.result.adversarial[index].detach().cpu(),
                       scale="2011", upsample_to=upsample_to)
    outcome.mads = {int(i): float(s.mad) for i, s in zip(index, scores, strict=True) if np.isfinite(s.mad)}


def kept_images_step(outcome: BatchOutcome) -> tuple[list[str], torch.Tensor | None]:
    """The ids and (B', C, H, W) CPU images of the adversarial examples that fool some model: what the
    output folder's image store keeps (None when there are none)."""
    index = outcome.fooled_any().nonzero()[:, 0]
    if not len(index):
        return [], None
    return [outcome.job.ids[int(i)] for i in index], outcome.result.adversarial[index].detach().cpu()


def batch_records(outcome: BatchOutcome, source_model: str) -> list[dict]:
    """One ``attack`` record per image and evaluated model (see :mod:`.records`)."""
    job, result = outcome.job, outcome.result
    l2, linf = result.l2.cpu(), result.linf.cpu()
    iterations, evaluations = result.iterations.cpu(), result.gradient_evaluations.cpu()
    labels = outcome.labels.cpu()
    per_image_seconds = result.seconds / len(job.indices)
    return [
        {
            "kind": "attack",
            "model": model,
            "source_model": source_model,
            "attack": job.attack,
            "epsilon": job.epsilon,
            "parameters": job.parameters,
            "image_id": job.ids[k],
            "index": job.indices[k],
            "label": int(labels[k]),
            "prediction": int(outcome.predictions[model][k]),
            "success": bool(outcome.successes[model][k]),
            "l2": float(l2[k]),
            "linf": float(linf[k]),
            "iterations": int(iterations[k]),
            "gradient_evaluations": int(evaluations[k]),
            "seconds": per_image_seconds,
            "batch": job.key,
            "mad": outcome.mads.get(k) if bool(outcome.successes[model][k]) else None,
        }
        for model in outcome.predictions
        for k in range(len(job.indices))
    ]
