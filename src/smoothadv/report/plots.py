"""Operating characteristic curves P(D) of eq. (21) (paper Figs. 5-7), drawn with matplotlib's Agg canvas."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from smoothadv.attacks import ATTACKS
from smoothadv.evaluation.metrics import image_outcomes, operating_characteristic

MODEL_STYLES = ("-", "--", ":", "-.")


def plot_operating_characteristics(
    records: Iterable[dict],
    path: str | Path | None,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    title: str = "Operating characteristic",
    dpi: int = 120,
) -> bytes:
    """Draw P(D) for each (model, attack) and save it as PNG.

    Each curve is the step function of eq. (21) from (0, 0) to (D_max, P_suc), extended flat to the
    largest D_max of the figure so curves end at a common right edge. One colour per attack, one line
    style per model (the attacked model solid, transfer targets dashed/dotted, as in the paper's Fig. 6).

    Args:
        records: per-image records.
        path: PNG file to write (parent created), or None to only return the bytes.
        pairs: (model, attack) pairs to draw, in legend order; default all in the records.
        title: figure title.
        dpi: resolution.

    Returns:
        the PNG file's bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = list(records)
    if pairs is None:
        seen: dict[tuple[str, str], None] = {}
        for record in records:
            if record.get("kind") == "attack":
                seen[(record["model"], record["attack"])] = None
        pairs = list(seen)
    models = list(dict.fromkeys(model for model, _ in pairs))
    curves = [
        (model, attack, operating_characteristic(image_outcomes(records, model, attack)))
        for model, attack in pairs
    ]
    pooled = [float(v) for c in curves for v in c[2][0]]
    right, axis_cut = distortion_axis_limit(pooled)

    figure = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for model, attack, (d, p) in curves:
        if not len(d):
            continue
        xs = list(d) + [right * 1.02]
        ys = list(p) + [p[-1]]
        label = ATTACKS.label(attack) + (f" ({model})" if len(models) > 1 else "")
        axes.step(
            xs,
            ys,
            where="post",
            color=ATTACKS.colour(attack),
            linewidth=1.6,
            linestyle=MODEL_STYLES[models.index(model) % len(MODEL_STYLES)],
            label=label,
        )
    axes.set_xlim(0, right * 1.02)
    axes.set_ylim(0, 1.02)
    label = "L2 distortion D"
    if axis_cut:
        label += f" (axis cut at {right:.2f}; {sum(1 for v in pooled if v > right)} image(s) beyond)"
    axes.set_xlabel(label)
    axes.set_ylabel("P(D): success probability within distortion D")
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    if curves:
        axes.legend(loc="lower right", fontsize=8)
    return figure_png(figure, path, dpi)


def distortion_axis_limit(distortions: Sequence[float]) -> tuple[float, bool]:
    """Right end of the D axis: the largest distortion, unless a few outliers would squash the curves.

    One FGSM image at D = 34 among D < 5 leaves every curve in the left tenth of the plot; when the
    largest distortion exceeds 1.5 x (1.15 x the 98th percentile), the axis is cut at the latter.

    Returns:
        (right end, whether the axis was cut).
    """
    if not distortions:
        return 1e-9, False
    ordered = sorted(distortions)
    largest = ordered[-1]
    cut = 1.15 * ordered[min(len(ordered) - 1, int(0.98 * len(ordered)))]
    return (cut, True) if largest > 1.5 * cut else (max(largest, 1e-9), False)


def figure_png(figure, path: str | Path | None, dpi: int) -> bytes:
    """Lay out a matplotlib figure, render it as PNG bytes and, when ``path`` is given, write them there."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    data = buffer.getvalue()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return data
