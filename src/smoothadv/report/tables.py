"""Result tables: rows of :class:`~smoothadv.evaluation.metrics.AttackStatistics` as CSV, JSON, Markdown."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from smoothadv.attacks import ATTACKS
from smoothadv.evaluation.metrics import AttackStatistics

#: (key, header, format) of each column; format is a str.format spec applied to non-None values.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model", "model", "{}"),
    ("attack", "attack", "{}"),
    ("n_total", "N'", "{}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("n", "N", "{}"),
    ("n_success", "N_suc", "{}"),
    ("p_success", "P_suc", "{:.3f}"),
    ("mean_l2", "D_bar", "{:.3f}"),
    ("median_l2", "D_median", "{:.3f}"),
    ("mean_linf", "Linf_mean", "{:.4f}"),
    ("mean_mad", "MAD_mean", "{:.4g}"),
    ("mean_gradient_evaluations", "grads/img", "{:.1f}"),
    ("seconds", "seconds", "{:.1f}"),
)

def _columns(rows: Sequence[AttackStatistics]) -> list[tuple[str, str, str]]:
    """Drop the MAD column when no row has a MAD score, and the model column when there is one model."""
    columns = list(COLUMNS)
    if all(row.mean_mad is None for row in rows):
        columns = [c for c in columns if c[0] != "mean_mad"]
    if len({row.model for row in rows}) <= 1:
        columns = [c for c in columns if c[0] != "model"]
    return columns


def _cell(row: AttackStatistics, key: str, spec: str) -> str:
    value = getattr(row, key)
    if key == "attack":
        return ATTACKS.label(value)
    return "-" if value is None else spec.format(value)


def table_text(rows: Sequence[AttackStatistics]) -> str:
    """A fixed-width text table for the terminal."""
    columns = _columns(rows)
    cells = [[header for _, header, _ in columns]] + [[_cell(r, k, f) for k, _, f in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(
            c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    )


def table_markdown(rows: Sequence[AttackStatistics]) -> str:
    """A GitHub-flavoured Markdown table."""
    columns = _columns(rows)
    lines = [
        "| " + " | ".join(h for _, h, _ in columns) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(columns))) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, k, f).replace("|", "\\|") for k, _, f in columns) + " |")
    return "\n".join(lines)


def table_csv(rows: Sequence[AttackStatistics]) -> str:
    """CSV with every field of every row (full precision, empty cells for missing values)."""
    buffer = io.StringIO()
    fields = list(AttackStatistics.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        data = row.to_dict()
        data["epsilons"] = " ".join(repr(e) for e in row.epsilons)
        writer.writerow({k: "" if v is None else v for k, v in data.items()})
    return buffer.getvalue()


def write_records_csv(records: Sequence[dict], path: str | Path) -> Path:
    """Write per-image records (dicts with the same keys, in order) as a CSV file with a header row."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


def write_tables(
    rows: Sequence[AttackStatistics], out_dir: str | Path, stem: str = "table"
) -> dict[str, Path]:
    """Write ``<stem>.csv``, ``<stem>.json`` and ``<stem>.md`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out_dir / f"{stem}.csv",
        "json": out_dir / f"{stem}.json",
        "markdown": out_dir / f"{stem}.md",
    }
    paths["csv"].write_text(table_csv(rows), encoding="utf-8")
    paths["json"].write_text(json.dumps([r.to_dict() for r in rows], indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(table_markdown(rows) + "\n", encoding="utf-8")
    return paths
