"""Statistics of section 5.1, as pure functions of per-image records (see :mod:`.records`).

Given N' test images, only the N that the model classifies correctly count; the accuracy is N / N'. For
each attack, X_suc is the set of those images on which it succeeds and D(x_o) = ||x_a - x_o|| the L2
distortion of a success. Eq. (20):

    P_suc = N_suc / N,        D_bar = (1 / N_suc) * sum_{x_o in X_suc} D(x_o)   (conditional on success)

and the operating characteristic of eq. (21), for D in [0, D_max]:

    P(D) = |{x_o in X_suc : D(x_o) <= D}| / N,   from P(0) = 0 to P(D_max) = P_suc.

A fixed-distortion attack run at several epsilons succeeds on an image if any run does, and the image
keeps the smallest distortion over its successful runs. A transferred attack (crafted on one model,
measured on another) counts the images classified correctly by both.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from smoothadv.core.errors import InputError


@dataclass(frozen=True)
class ImageOutcome:
    """Result of one attack on one image, over all its epsilons.

    Attributes:
        image_id, model, attack: what it is about.
        success: True if any run succeeded.
        l2, linf: distortions of the kept run (the successful one of least L2; None on failure).
        epsilon: epsilon of the kept run (None for minimisation attacks or failures).
        mad: MAD score of the kept run, when computed.
        batch: batch key of the kept run (locates its saved adversarial image).
        runs: how many runs (epsilons) were recorded for the image.
    """

    image_id: str
    model: str
    attack: str
    success: bool
    l2: float | None
    linf: float | None
    epsilon: float | None
    mad: float | None
    batch: str | None
    runs: int


@dataclass(frozen=True)
class AttackStatistics:
    """One row of a results table (eq. 20 plus counts and costs).

    Attributes:
        model: model on which success is measured. source_model: model that was attacked.
        attack: attack name.
        n_total: N', images of the dataset seen by the clean pass.
        n_correct: images classified correctly (clean).
        accuracy: n_correct / n_total.
        n: N, correctly classified images with a result for this attack (equals n_correct once the run
            is complete; for a transferred attack, images correct on both models).
        n_success: N_suc.
        p_success: P_suc = N_suc / N.
        mean_l2: D_bar, mean L2 distortion over successes (None without successes).
        median_l2: median L2 distortion over successes.
        mean_linf: mean L-inf distortion over successes.
        mean_mad: mean MAD score over successes (None when not computed).
        mean_iterations, mean_gradient_evaluations: per image and run, over all runs.
        seconds: total attack time spent on these images.
        epsilons: the epsilon grid seen in the records (empty for minimisation attacks).
    """

    model: str
    source_model: str
    attack: str
    n_total: int
    n_correct: int
    accuracy: float | None
    n: int
    n_success: int
    p_success: float | None
    mean_l2: float | None
    median_l2: float | None
    mean_linf: float | None
    mean_mad: float | None
    mean_iterations: float | None
    mean_gradient_evaluations: float | None
    seconds: float
    epsilons: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["epsilons"] = list(self.epsilons)
        return data


def clean_results(records: Iterable[dict]) -> dict[str, dict[str, bool]]:
    """``{model: {image_id: correct}}`` from the ``clean`` records."""
    table: dict[str, dict[str, bool]] = defaultdict(dict)
    for record in records:
        if record.get("kind") == "clean":
            table[record["model"]][record["image_id"]] = bool(record["correct"])
    return dict(table)


def accuracy(records: Iterable[dict], model: str) -> tuple[int, int]:
    """(N, N'): correctly classified and total images of ``model`` in the clean records."""
    results = clean_results(records).get(model, {})
    return sum(results.values()), len(results)


def image_outcomes(records: Iterable[dict], model: str, attack: str) -> list[ImageOutcome]:
    """Per-image outcome of ``attack`` measured on ``model``, for correctly classified images only.

    Records of images that ``model`` misclassifies (or that have no clean record) are ignored; for an
    attack run at several epsilons, the image succeeds if any run does and keeps its least L2 success.
    Images are returned in the order of their first record.
    """
    records = list(records)
    correct = clean_results(records).get(model, {})
    grouped: dict[str, list[dict]] = {}
    for record in records:
        if record.get("kind") != "attack" or record["model"] != model or record["attack"] != attack:
            continue
        if not correct.get(record["image_id"], False):
            continue
        grouped.setdefault(record["image_id"], []).append(record)
    outcomes = []
    for image_id, runs in grouped.items():
        successes = [r for r in runs if r["success"]]
        if successes:
            best = min(successes, key=lambda r: (r["l2"], _eps_order(r.get("epsilon"))))
            outcomes.append(
                ImageOutcome(
                    image_id,
                    model,
                    attack,
                    True,
                    float(best["l2"]),
                    float(best["linf"]),
                    best.get("epsilon"),
                    best.get("mad"),
                    best.get("batch"),
                    len(runs),
                )
            )
        else:
            outcomes.append(
                ImageOutcome(image_id, model, attack, False, None, None, None, None, None, len(runs))
            )
    return outcomes


def _eps_order(epsilon: float | None) -> float:
    return -1.0 if epsilon is None else float(epsilon)


def success_probability(outcomes: Sequence[ImageOutcome]) -> float | None:
    """P_suc = N_suc / N of eq. (20); None when N = 0."""
    if not outcomes:
        return None
    return sum(o.success for o in outcomes) / len(outcomes)


def mean_distortion(outcomes: Sequence[ImageOutcome]) -> float | None:
    """D_bar of eq. (20): mean L2 distortion over the successes only; None without successes."""
    values = [o.l2 for o in outcomes if o.success]
    return float(np.mean(values)) if values else None


def median_distortion(outcomes: Sequence[ImageOutcome]) -> float | None:
    """Median L2 distortion over the successes; None without successes."""
    values = [o.l2 for o in outcomes if o.success]
    return float(np.median(values)) if values else None


def operating_characteristic(outcomes: Sequence[ImageOutcome]) -> tuple[np.ndarray, np.ndarray]:
    """The operating characteristic P(D) of eq. (21) as the corners of a step curve.

    Returns:
        (D, P): arrays of equal length starting at (0, 0); P jumps to ``P[k]`` at ``D[k]`` and stays
        there until ``D[k + 1]`` (draw with ``step(..., where="post")``). The last point is
        (D_max, P_suc). Tied distortions give one jump. Both arrays are ``[0]`` / ``[0]`` without
        successes; empty when there are no images.
    """
    if not outcomes:
        return np.zeros(0), np.zeros(0)
    n = len(outcomes)
    distortions = np.sort(np.array([o.l2 for o in outcomes if o.success], dtype=np.float64))
    levels, counts = np.unique(distortions, return_counts=True)
    d = np.concatenate([[0.0], levels])
    p = np.concatenate([[0.0], np.cumsum(counts) / n])
    if len(levels) and levels[0] == 0.0:  # a success at zero distortion: P(0) is its share, not 0
        d, p = d[1:], p[1:]
    return d, p


def evaluate_curve(curve: tuple[np.ndarray, np.ndarray], distortion: float) -> float:
    """P(D) at ``distortion`` for a curve from :func:`operating_characteristic` (0 below its first jump)."""
    d, p = curve
    if not math.isfinite(distortion) or distortion < 0:
        raise InputError(f"distortion must be a finite number >= 0, got {distortion!r}.")
    index = np.searchsorted(d, distortion, side="right") - 1
    return float(p[index]) if index >= 0 else 0.0


def attack_statistics(records: Iterable[dict], model: str, attack: str) -> AttackStatistics:
    """The table row of ``attack`` measured on ``model`` (eq. 20, counts, costs)."""
    records = list(records)
    n_correct, n_total = accuracy(records, model)
    outcomes = image_outcomes(records, model, attack)
    kept = {o.image_id for o in outcomes}
    runs = [
        r
        for r in records
        if r.get("kind") == "attack"
        and r["model"] == model
        and r["attack"] == attack
        and r["image_id"] in kept
    ]
    successes = [o for o in outcomes if o.success]
    mads = [o.mad for o in successes if o.mad is not None]
    sources = {r.get("source_model", model) for r in runs}
    epsilons = sorted({float(r["epsilon"]) for r in runs if r.get("epsilon") is not None})
    return AttackStatistics(
        model=model,
        source_model=sources.pop() if len(sources) == 1 else model,
        attack=attack,
        n_total=n_total,
        n_correct=n_correct,
        accuracy=n_correct / n_total if n_total else None,
        n=len(outcomes),
        n_success=len(successes),
        p_success=success_probability(outcomes),
        mean_l2=mean_distortion(outcomes),
        median_l2=median_distortion(outcomes),
        mean_linf=float(np.mean([o.linf for o in successes])) if successes else None,
        mean_mad=float(np.mean(mads)) if mads else None,
        mean_iterations=float(np.mean([r["iterations"] for r in runs])) if runs else None,
        mean_gradient_evaluations=float(np.mean([r["gradient_evaluations"] for r in runs])) if runs else None,
        seconds=float(sum(r.get("seconds", 0.0) for r in runs)),
        epsilons=tuple(epsilons),
    )


def summary_table(records: Iterable[dict]) -> list[AttackStatistics]:
    """One :class:`AttackStatistics` per (model, attack) found in the records, in order of appearance."""
    records = list(records)
    pairs: dict[tuple[str, str], None] = {}
    for record in records:
        if record.get("kind") == "attack":
            pairs[(record["model"], record["attack"])] = None
    return [attack_statistics(records, model, attack) for model, attack in pairs]
