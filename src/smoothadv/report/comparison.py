"""The side-by-side table of a reproduced paper table: the paper's P_suc / D_bar next to ours."""

from __future__ import annotations

from collections.abc import Mapping

from smoothadv.attacks import ATTACKS


def _fmt(value: float | None, spec: str = "{:.2f}") -> str:
    return "-" if value is None else spec.format(value)


def comparison_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Headers and string cells of the side-by-side table."""
    headers = [
        "paper column",
        "our model",
        "attack",
        "P_suc paper",
        "P_suc ours",
        "D_bar paper",
        "D_bar ours",
        "N ours",
    ]
    cells = [
        [
            r["column"],
            r["model"] or "n/a",
            ATTACKS.label(r["attack"]),
            _fmt(r["paper_p_success"]),
            _fmt(r["p_success"]),
            _fmt(r["paper_mean_l2"]),
            _fmt(r["mean_l2"]),
            "-" if r["n"] is None else str(r["n"]),
        ]
        for r in rows
    ]
    return headers, cells


def comparison_text(
    table: str, dataset: str, rows: list[dict], notes: list[str], accuracies: dict | None = None,
    paper_accuracy: Mapping[str, float] | None = None,
) -> str:
    """Fixed-width side-by-side table with the notes under it.

    Args:
        rows: one dict per (column, attack) with ``column``, ``model``, ``attack``, the paper's and our
            ``p_success`` / ``mean_l2`` and ``n``. accuracies: our models' clean accuracy.
        paper_accuracy: the paper's accuracy per column name.
    """
    headers, cells = comparison_cells(rows)
    lines = [headers] + cells
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    body = [
        "  ".join(
            c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    extra = [
        f"accuracy of {m} (paper's N/N'): {a['correct']}/{a['total']} = {a['value']:.4f}"
        for m, a in (accuracies or {}).items()
        if a["value"] is not None
    ]
    paper_accuracy = paper_accuracy or {}
    columns = dict.fromkeys(r["column"] for r in rows)
    extra += [f"paper accuracy of {c}: {paper_accuracy[c]:.2f}" for c in columns if c in paper_accuracy]
    return "\n".join([f"{table} ({dataset}): paper vs. ours", *body, *extra, *(f"note: {n}" for n in notes)])


def comparison_markdown(headers: list[str], cells: list[list[str]], notes: list[str]) -> str:
    """The side-by-side table as Markdown, the notes as a list under it."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(headers) - 3)) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"
