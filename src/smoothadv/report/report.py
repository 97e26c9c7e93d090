"""The report of an evaluation: tables (CSV, JSON, Markdown), OC plot, worst-case panel, one HTML file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from smoothadv.evaluation.runner import EvaluationResult
from smoothadv.report.html import Section, config_text, write_html
from smoothadv.report.panels import worst_case_panel
from smoothadv.report.plots import plot_operating_characteristics
from smoothadv.report.tables import COLUMNS, _cell, _columns, table_markdown, write_tables

REPORT_FILE = "report.html"
PLOT_FILE = "operating_characteristic.png"
PANEL_FILE = "worst_cases.png"


def write_report(
    result: EvaluationResult,
    *,
    title: str | None = None,
    notes: Sequence[str] = (),
    comparison: tuple[Sequence[str], Sequence[Sequence[str]], str] | None = None,
    plot_title: str | None = None,
    plot_file: str = PLOT_FILE,
    panel_count: int = 3,
) -> dict[str, str]:
    """Write the tables, the operating-characteristic plot, the worst-case panel and ``report.html``.

    Args:
        result: what :func:`smoothadv.evaluation.evaluate` returned.
        title: report title (default from the model and data).
        notes: sentences shown at the top of the report (e.g. what a quick run reduced).
        comparison: optional ``(headers, rows, caption)`` table shown before ours (e.g. the paper's values).
        plot_title: title of the OC plot. plot_file: its file name (e.g. ``fig5_mnist.png``).
        panel_count: images in the worst-case panel.

    Returns:
        ``{"report": ..., "plot": ..., "panel": ..., "csv": ..., "json": ..., "markdown": ...}`` paths.
    """
    out_dir = Path(result.out_dir)
    config = result.config
    model = config["model"]
    rows = result.table
    files = {key: str(path) for key, path in write_tables(rows, out_dir).items()}
    plot = plot_operating_characteristics(
        result.records, out_dir / plot_file, title=plot_title or f"Operating characteristic, {model}"
    )
    files["plot"] = str(out_dir / plot_file)
    correct_ids = {
        r["image_id"]: r["index"]
        for r in result.records
        if r["kind"] == "clean" and r["model"] == model and r["correct"]
    }
    attacks = list(config["attacks"])
    from smoothadv.report.panels import worst_cases

    chosen = worst_cases(result.records, model, attacks, panel_count)
    originals = {i: result.dataset.batch([correct_ids[i]]).images[0] for i in chosen}
    panel, shown = worst_case_panel(
        result.records, out_dir, originals, model, attacks, None, image_ids=chosen
    )
    if panel:
        (out_dir / PANEL_FILE).write_bytes(panel)
        files["panel"] = str(out_dir / PANEL_FILE)

    columns = _columns(rows)
    table_rows = [[_cell(r, k, f) for k, _, f in columns] for r in rows]
    data = config["data"]
    summary = [
        f"Model {model} on {data['source']} ({data['size']} images, shape {data['image_shape']}); "
        f"preset {config['preset']}; batch size {config['batch_size']}; seed {config['seed']}.",
        "Only images the model classifies correctly are attacked and counted (N of N'). P_suc = N_suc / N; "
        "D_bar is the mean L2 distortion over successes only (eq. 20); distortions are on [0, 1] pixels "
        "over all channels, measured after 8-bit quantisation. Fixed-distortion attacks run over their "
        "epsilon grid and each image keeps its smallest successful distortion (section 5.1).",
    ]
    if config.get("transfer_to"):
        summary.append(
            f"Transferability: adversarial images crafted on {model} are also classified by "
            f"{', '.join(config['transfer_to'])}; there N counts images correct on both models."
        )
    if config.get("perceptual"):
        summary.append(
            "MAD: Most Apparent Distortion (2011 scale) of each successful example"
            + (
                f", after nearest-neighbour upsampling to {config['perceptual']['upsample_to']} pixels "
                "(MAD needs at least 34)."
                if config["perceptual"].get("upsample_to")
                else "."
            )
        )
    grids = {a: g for a, g in config["epsilons"].items() if g != [None]}
    if grids:
        summary.append(
            "Epsilon grids: "
            + "; ".join(f"{a}: {', '.join(f'{e:g}' for e in g)}" for a, g in grids.items())
            + "."
        )
    sections = []
    if notes:
        sections.append(Section("Notes", paragraphs=list(notes)))
    sections.append(Section("Protocol", paragraphs=summary))
    if comparison is not None:
        headers, comparison_rows, caption = comparison
        sections.append(Section("Paper vs. ours", paragraphs=[caption], tables=[(headers, comparison_rows)]))
    sections.append(
        Section(
            "Results",
            tables=[([h for _, h, _ in columns], table_rows)],
            paragraphs=[f"Records: {out_dir / 'records.jsonl'} (one JSON line per image)."],
        )
    )
    sections.append(
        Section(
            "Operating characteristic",
            images=[
                (
                    plot,
                    "P(D) of eq. (21): fraction of the N "
                    "images attacked successfully within L2 distortion D; curves stop at P_suc.",
                )
            ],
        )
    )
    if panel:
        sections.append(
            Section(
                "Worst cases",
                images=[
                    (
                        panel,
                        "Images that cost the attacks the most "
                        "distortion: original, adversarial examples (top) and their perturbations "
                        "each amplified by its own gain g (bottom).",
                    )
                ],
                paragraphs=[f"Images: {', '.join(shown)}."],
            )
        )
    sections.append(Section("Configuration", preformatted=config_text(config)))
    report = write_html(out_dir / REPORT_FILE, title or f"smoothadv evaluation: {model}", sections)
    files["report"] = str(report)
    return files


__all__ = ["COLUMNS", "REPORT_FILE", "table_markdown", "write_report"]
