"""Worst-case panels (like the paper's Figs. 2 and 3): original, adversarial and amplified perturbation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from smoothadv.attacks import ATTACKS
from smoothadv.evaluation.metrics import ImageOutcome, image_outcomes
from smoothadv.evaluation.records import load_adversarial
from smoothadv.report.plots import figure_png


def worst_cases(records: Iterable[dict], model: str, attacks: Sequence[str], count: int = 3) -> list[str]:
    """Ids of the ``count`` images that cost the attacks most.

    Images on which more of ``attacks`` succeed come first (so the panel compares attacks on the same
    image); among those, the largest L2 distortion over the attacks ranks first.
    """
    records = list(records)
    per_image: dict[str, list[ImageOutcome]] = {}
    for attack in attacks:
        for outcome in image_outcomes(records, model, attack):
            per_image.setdefault(outcome.image_id, []).append(outcome)

    def rank(image_id: str) -> tuple[int, float]:
        wins = [o for o in per_image[image_id] if o.success]
        return (len(wins), max((o.l2 for o in wins), default=0.0))

    ranked = sorted((i for i in per_image if rank(i)[0] > 0), key=rank, reverse=True)
    return ranked[:count]


def worst_case_panel(
    records: Iterable[dict],
    out_dir: str | Path,
    originals: dict[str, torch.Tensor],
    model: str,
    attacks: Sequence[str],
    path: str | Path | None,
    *,
    image_ids: Sequence[str] | None = None,
    count: int = 3,
    tile_inches: float = 1.6,
    dpi: int = 110,
) -> tuple[bytes, list[str]]:
    """Draw, for each chosen image, a row of adversarial images and a row of amplified perturbations.

    Columns: the original, then one per attack. Under each adversarial image, its perturbation
    ``r = x_a - x_o`` shown as ``0.5 + g * r`` with its own gain ``g = 0.5 / max |r|`` (printed under it),
    so the shape of every perturbation is visible; the distortion D above compares their strengths.
    Failed attacks leave an empty tile.

    Args:
        records: per-image records. out_dir: the evaluation folder (saved adversarial images).
        originals: image id -> (C, H, W) original in [0, 1] (at least for the chosen images).
        model: model whose successes are shown. attacks: columns, in order.
        path: PNG to write, or None. image_ids: images to show (default :func:`worst_cases`).
        count: how many images when choosing. tile_inches, dpi: size and resolution.

    Returns:
        (PNG bytes, ids of the images shown); empty bytes when no attack succeeded.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = list(records)
    attacks = list(attacks)
    chosen = list(image_ids) if image_ids is not None else worst_cases(records, model, attacks, count)
    if not chosen:
        return b"", []
    outcomes = {a: {o.image_id: o for o in image_outcomes(records, model, a)} for a in attacks}
    columns = 1 + len(attacks)
    figure = Figure(figsize=(tile_inches * columns, (tile_inches + 0.35) * 2 * len(chosen)))
    FigureCanvasAgg(figure)
    for row, image_id in enumerate(chosen):
        original = originals[image_id].float().cpu()
        adversarials: dict[str, torch.Tensor] = {}
        for attack in attacks:
            outcome = outcomes[attack].get(image_id)
            if outcome is not None and outcome.success and outcome.batch:
                image = load_adversarial(out_dir, outcome.batch, image_id)
                if image is not None:
                    adversarials[attack] = image
        rows = 2 * len(chosen)
        _tile(figure, rows, columns, 2 * row * columns + 1, original, f"original\n{image_id}")
        _tile(figure, rows, columns, (2 * row + 1) * columns + 1, None, "perturbation\n0.5 + g r")
        for col, attack in enumerate(attacks, start=2):
            label = ATTACKS.label(attack)
            top, bottom = 2 * row * columns + col, (2 * row + 1) * columns + col
            if attack not in adversarials:
                _tile(figure, rows, columns, top, None, f"{label}\nfailed")
                _tile(figure, rows, columns, bottom, None, "")
                continue
            adversarial = adversarials[attack]
            perturbation = adversarial - original
            gain = 0.5 / max(float(perturbation.abs().max()), 1e-12)
            _tile(figure, rows, columns, top, adversarial, f"{label}\nD={outcomes[attack][image_id].l2:.2f}")
            _tile(figure, rows, columns, bottom, (0.5 + gain * perturbation).clamp(0, 1), f"g={gain:.1f}")
    return figure_png(figure, path, dpi), chosen


def _tile(figure, rows: int, columns: int, index: int, image: torch.Tensor | None, title: str) -> None:
    axes = figure.add_subplot(rows, columns, index)
    axes.set_axis_off()
    if title:
        axes.set_title(title, fontsize=7)
    if image is None:
        return
    array = image.detach().float().clamp(0, 1).cpu()
    if array.shape[0] == 1:
        axes.imshow(array[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        axes.imshow(array.permute(1, 2, 0).numpy(), interpolation="nearest")
