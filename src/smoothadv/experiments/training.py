"""Training C4 on MNIST, plainly or adversarially (FGSM, Goodfellow et al. 2015), with a fixed seed.

Adversarial training mixes the two losses half and half, as in cleverhans' tutorial that the authors
used (their "step 1.I"-style adversarial examples, section 5.4)::

    loss = 0.5 * CE(f(x), y) + 0.5 * CE(f(x_adv), y),   x_adv = clip(x + eps * sign(grad_x CE(f(x), y)), 0, 1)

with eps = 0.3 on [0, 1] pixels (L-inf) and x_adv recomputed on every batch with the current weights
(treated as a constant: no gradient flows through its construction).

This module also holds the small FGSM used to *measure* robustness (success rate of an untargeted
FGSM at eps 0.3); the full attack library is ``smoothadv.attacks``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from smoothadv.core.errors import ConfigError
from smoothadv.core.validation import check_choice, make_output_dir
from smoothadv.data import load_mnist
from smoothadv.models import C4, measure_accuracy

# Defaults of cleverhans' MNIST tutorial (6 epochs, batch 128, Adam 1e-3), which the authors trained C4 with;
# we add a cosine decay of the learning rate (see train_c4).
DEFAULT_EPOCHS = 6
DEFAULT_BATCH_SIZE = 128
DEFAULT_LR = 1e-3
DEFAULT_EPS = 0.3


@dataclass
class TrainReport:
    """What :func:`train_c4` did and measured (all accuracies on MNIST; ``fgsm_success`` on test)."""

    adversarial: bool
    epochs: int
    seed: int
    batch_size: int
    lr: float
    eps: float
    lr_schedule: str
    train_size: int
    seconds: float
    valid_accuracy: list[float] = field(default_factory=list)
    test_accuracy: float = float("nan")
    fgsm_success: float = float("nan")
    out: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """Untargeted L-inf FGSM: ``clip(x + eps * sign(grad_x CE(model(x), y)), 0, 1)``.

    Args:
        model: (B, C, H, W) -> (B, K) logits.
        images: (B, C, H, W) in [0, 1].
        labels: (B,) int64 true labels.
        eps: step size on [0, 1] pixels.

    Returns:
        (B, C, H, W) adversarial images in [0, 1] (detached).
    """
    with torch.enable_grad():
        x = images.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(x), labels)
        (grad,) = torch.autograd.grad(loss, x)
    return (images + eps * grad.sign()).clamp(0.0, 1.0).detach()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on (N, C, H, W) ``images`` with (N,) ``labels``."""
    correct, total = measure_accuracy(model, (images, labels), batch_size=batch_size)
    return correct / max(total, 1)


def fgsm_success_rate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float = DEFAULT_EPS,
    batch_size: int = 500,
) -> float:
    """Fraction of the correctly classified images that an FGSM step of size ``eps`` makes misclassified."""
    attacked = succeeded = 0
    for start in range(0, len(labels), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        with torch.no_grad():
            correct = model(x).argmax(dim=1) == y
        if not bool(correct.any()):
            continue
        x, y = x[correct], y[correct]
        adversarial = fgsm(model, x, y, eps)
        with torch.no_grad():
            fooled = model(adversarial).argmax(dim=1) != y
        attacked += int(correct.sum())
        succeeded += int(fooled.sum())
    return succeeded / max(attacked, 1)


def train_c4(
    *,
    adversarial: bool = False,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    eps: float = DEFAULT_EPS,
    lr_schedule: str = "cosine",
    out: str | Path | None = None,
    train_limit: int | None = None,
    eval_limit: int | None = None,
    threads: int | None = 2,
    progress: bool = True,
) -> tuple[nn.Module, TrainReport]:
    """Train C4 on the MNIST training split (50,000 images) with Adam and a fixed seed.

    Args:
        adversarial: add FGSM examples to every batch (loss 0.5 clean + 0.5 adversarial).
        epochs: passes over the training split.
        seed: seeds the initial weights and the batch order.
        batch_size: images per step.
        lr: Adam learning rate.
        eps: FGSM step (adversarial training and the FGSM measurement), on [0, 1] pixels.
        lr_schedule: ``"cosine"`` (the learning rate decays from ``lr`` to 0 along a half cosine over all
            steps) or ``"constant"``.
        out: write the weights here as safetensors (with the settings and accuracies as metadata).
        train_limit: train on the first ``train_limit`` images only (for quick checks).
        eval_limit: measure on the first ``eval_limit`` validation and test images only (quick checks).
        threads: torch CPU threads while training (restored afterwards); None keeps the current setting.
        progress: show a tqdm progress bar on stderr.

    Returns:
        The trained model (eval mode) and a :class:`TrainReport` with validation accuracy after each epoch,
        test accuracy and FGSM success rate on the 10,000 test images (or the first ``eval_limit``).

    Raises:
        ConfigError: non-positive epochs, batch size, learning rate or eps.
        DataError: MNIST is not available.
    """
    from tqdm import tqdm

    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    for name, value in (("lr", lr), ("eps", eps)):
        if not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value!r}.")
    check_choice(lr_schedule, ("cosine", "constant"), "lr_schedule")
    if out is not None:
        make_output_dir(Path(out).expanduser().parent, "--out")  # before training, not after it
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        train = load_mnist("train", limit=train_limit)
        valid = load_mnist("valid", limit=eval_limit)
        test = load_mnist("test", limit=eval_limit)
        torch.manual_seed(seed)
        model = C4()
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        total_steps = epochs * math.ceil(len(train) / batch_size)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            (lambda t: 0.5 * (1 + math.cos(math.pi * t / total_steps)))
            if lr_schedule == "cosine"
            else (lambda t: 1.0),
        )
        order = torch.Generator().manual_seed(seed)
        report = TrainReport(adversarial, epochs, seed, batch_size, lr, eps, lr_schedule, len(train), 0.0)
        start = time.perf_counter()
        for epoch in range(epochs):
            model.train()
            permutation = torch.randperm(len(train), generator=order)
            steps = range(0, len(train), batch_size)
            bar = tqdm(
                steps,
                desc=f"epoch {epoch + 1}/{epochs}",
                disable=not progress,
                file=sys.stderr,
                unit="batch",
                leave=True,
            )
            for step in bar:
                index = permutation[step : step + batch_size]
                x, y = train.images[index], train.labels[index]
                loss = F.cross_entropy(model(x), y)
                if adversarial:
                    x_adv = fgsm(model, x, y, eps)
                    loss = 0.5 * loss + 0.5 * F.cross_entropy(model(x_adv), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                if step // batch_size % 50 == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}")
            model.eval()
            report.valid_accuracy.append(accuracy(model, valid.images, valid.labels))
            bar.write(
                f"epoch {epoch + 1}: validation accuracy {report.valid_accuracy[-1]:.4f}", file=sys.stderr
            )
        report.seconds = time.perf_counter() - start
        report.test_accuracy = accuracy(model, test.images, test.labels)
        report.fgsm_success = fgsm_success_rate(model, test.images, test.labels, eps)
    finally:
        torch.set_num_threads(previous_threads)
    if out is not None:
        report.out, report.sha256 = str(out), save_c4_weights(model, out, report)
    return model, report


def save_c4_weights(model: nn.Module, path: str | Path, report: TrainReport | None = None) -> str:
    """Write ``model``'s weights as safetensors and return the file's SHA-256.

    The settings and measurements go into one metadata entry, ``"smoothadv"``, as JSON with sorted keys:
    safetensors writes several metadata entries in no fixed order, which would make the file (and its
    hash) differ between two runs that trained identical weights.
    """
    from safetensors.torch import save_file

    path = Path(path)
    make_output_dir(path.parent, "--out")
    info: dict[str, object] = {"architecture": "C4"}
    if report is not None:
        info.update(
            {
                "adversarial": report.adversarial,
                "epochs": report.epochs,
                "seed": report.seed,
                "batch_size": report.batch_size,
                "lr": report.lr,
                "eps": report.eps,
                "lr_schedule": report.lr_schedule,
                "train_size": report.train_size,
                "test_accuracy": round(report.test_accuracy, 6),
                "fgsm_success": round(report.fgsm_success, 6),
            }
        )
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"smoothadv": json.dumps(info, sort_keys=True)})
    return hashlib.sha256(path.read_bytes()).hexdigest()
