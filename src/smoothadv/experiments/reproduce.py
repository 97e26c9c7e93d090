"""``smoothadv reproduce table1|table2|table3``: the paper's Tables 1-3 re-run with our models, side by side.

What each table needs and the paper's numbers are in :mod:`.paper`; this module runs the evaluations,
compares and writes the outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from smoothadv.attacks import ATTACKS, PRESETS
from smoothadv.core.validation import make_output_dir
from smoothadv.evaluation.engine import Engine
from smoothadv.evaluation.metrics import accuracy, attack_statistics
from smoothadv.evaluation.plan import resolve_attacks
from smoothadv.evaluation.runner import evaluate
from smoothadv.experiments.defaults import batch_size_for, default_dataset
from smoothadv.experiments.paper import (
    FIGURES,
    PAPER_ACCURACY,
    PAPER_ATTACKS,
    PAPER_TABLES,
    QUICK,
    Plan,
    plan,
)
from smoothadv.models import load_model
from smoothadv.report import plot_operating_characteristics, write_report
from smoothadv.report.comparison import comparison_cells, comparison_markdown, comparison_text
from smoothadv.report.html import Section, write_html


def reproduce(
    table: str,
    *,
    dataset: str = "mnist",
    quick: bool = False,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    restart: bool = False,
    progress: bool = True,
    device: str | torch.device = "cpu",
    engine: Engine | str | None = None,
    attacks: str | list[str] | None = None,
) -> dict[str, Any]:
    """Re-run one of the paper's tables and compare with the paper's numbers.

    Args:
        table: ``table1``, ``table2`` or ``table3``.
        dataset: ``mnist`` or ``imagenet``.
        quick: few images, fewer C&W/sC&W iterations (a demo in minutes; the output says what changed).
        limit: first ``limit`` images (overrides the quick default).
        out_dir: output folder (default ``out/reproduce/<table>-<dataset>``), a sub-folder per attacked model.
        batch_size: default 100 on MNIST, 4 on ImageNet.
        seed: random seed. restart: discard earlier records. progress: progress bars on stderr.
        device: where this process's models run (the local engine runs there).
        engine: ``"local"`` (default), ``"ray"`` or a :class:`~smoothadv.evaluation.ray_engine.RayEngine`.
        attacks: attacks to run beside the paper's six (``"ddn,sddn"``), reported without paper numbers.

    Returns:
        A JSON-ready dict: ``rows`` (attack, column, paper and our P_suc / D_bar), ``notes``, ``files``,
        ``text`` (the side-by-side table), ``engine`` (what the engine reports, per attacked model).
    """
    the_plan = plan(table, dataset)
    default_out = Path("out") / "reproduce" / f"{table}-{dataset}"
    out_dir = make_output_dir(default_out if out_dir is None else out_dir)
    notes = list(the_plan.notes)
    attack_options, limit = _quick_settings(dataset, quick, limit, notes)
    extra = [key for key in (resolve_attacks(attacks) if attacks else []) if key not in PAPER_ATTACKS]
    attacks = [*PAPER_ATTACKS, *extra]
    if extra:
        notes.append(f"beside the paper's attacks: {', '.join(extra)} (no paper numbers).")
    epsilons = None
    if the_plan.fixed_epsilon:
        epsilons = {a: [ATTACKS[a].options(dataset)["epsilon"]]
                    for a in attacks if ATTACKS[a].fixed_distortion}
    results = {
        source: evaluate(
            load_model(source, device),
            default_dataset(source, limit=limit),
            attacks,
            out_dir / source.replace("+", "_"),
            model_name=source,
            preset=dataset,
            epsilons=epsilons,
            attack_options=attack_options,
            transfer_to={name: load_model(name, device) for name in targets},
            batch_size=batch_size or batch_size_for(dataset),
            seed=seed,
            restart=restart,
            progress=progress,
            extra_config={"reproduce": table},
            engine=engine,
        )
        for source, targets in the_plan.runs.items()
    }
    rows = _comparison_rows(table, dataset, the_plan, results, attacks)
    accuracies = {
        name: _accuracy(result.records, name) for result in results.values() for name in result.models
    }
    summary = {"accuracy": accuracies, "table": table, "dataset": dataset, "quick": quick, "limit": limit,
               "notes": notes, "rows": rows}
    text = comparison_text(table, dataset, rows, notes, accuracies, PAPER_ACCURACY)
    files = _write_outputs(table, dataset, the_plan, results, rows, notes, text, summary, out_dir,
                           attacks)
    summary.update({"files": files, "text": text,
                    "engine": {source: result.engine.to_dict() for source, result in results.items()}})
    return summary


def _quick_settings(dataset: str, quick: bool, limit: int | None,
                    notes: list[str]) -> tuple[dict[str, dict], int | None]:
    """The C&W/sC&W overrides and image limit of a ``--quick`` run (noted in ``notes``)."""
    if not quick:
        if limit is not None:
            notes.append(f"--limit: first {limit} images only.")
        return {}, limit
    settings = QUICK[dataset]
    limit = settings["limit"] if limit is None else limit
    full = PRESETS[dataset]["cw"]
    notes.append(
        f"--quick: first {limit} images; C&W and sC&W run {settings['cw']['binary_search_steps']} "
        f"binary-search steps of {settings['cw']['steps']} iterations instead of "
        f"{full['binary_search_steps']} x {full['steps']}."
    )
    return {"cw": dict(settings["cw"]), "scw": dict(settings["cw"])}, limit


def _accuracy(records: list[dict], model: str) -> dict[str, Any]:
    correct, total = accuracy(records, model)
    return {"correct": correct, "total": total, "value": correct / total if total else None}


def _comparison_rows(table: str, dataset: str, the_plan: Plan, results: dict,
                     attacks: list[str]) -> list[dict]:
    """One row per (paper column, attack): the paper's P_suc / D_bar (None for attacks beyond the paper's)
    and ours."""
    rows = []
    for column in the_plan.columns:
        paper_dataset = "imagenet" if table == "table3" else dataset
        paper_column = PAPER_TABLES[table].get(paper_dataset, {}).get(column.paper)
        for attack in attacks:
            paper = paper_column.get(attack) if paper_column else None
            ours = None
            if column.model is not None:
                ours = attack_statistics(results[column.source or column.model].records, column.model, attack)
            rows.append({
                "column": column.paper,
                "model": column.model,
                "attack": attack,
                "paper_p_success": paper[0] if paper else None,
                "paper_mean_l2": paper[1] if paper else None,
                "p_success": ours.p_success if ours else None,
                "mean_l2": ours.mean_l2 if ours else None,
                "n": ours.n if ours else None,
                "accuracy": ours.accuracy if ours else None,
                "note": column.unavailable,
            })
    return rows


def _write_outputs(table: str, dataset: str, the_plan: Plan, results: dict, rows: list[dict],
                   notes: list[str], text: str, summary: dict, out_dir: Path,
                   attacks: list[str]) -> dict[str, Any]:
    """The operating-characteristic figure, per-model reports, ``comparison.json|md`` and ``report.html``."""
    files: dict[str, Any] = {}
    figure = FIGURES.get((table, dataset))
    plot = b""
    if results and figure:
        records = [r for result in results.values() for r in result.records]
        if table == "table3":
            pairs = [(the_plan.columns[0].model, a) for a in ("cw", "scw")]
            title = f"C&W and sC&W transferred to {the_plan.columns[0].model} (cf. paper Fig. 7)"
        else:
            pairs = [(source, a) for source in results for a in attacks]
            number = 5 if dataset == "mnist" else 6
            title = f"Operating characteristics, {table} {dataset} (cf. paper Fig. {number})"
        plot = plot_operating_characteristics(records, out_dir / figure, pairs=pairs, title=title)
        files["figure"] = str(out_dir / figure)
    headers, comparison_rows = comparison_cells(rows)
    for source, result in results.items():
        own = [r for r in comparison_rows if r[1] in {source, *the_plan.runs[source]}]
        files[source] = write_report(
            result,
            title=f"{table} ({dataset}): {source}",
            notes=notes,
            comparison=(headers, own, "Paper (Zhang et al. 2020) vs. this run."),
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    markdown = comparison_markdown(headers, comparison_rows, notes)
    (out_dir / "comparison.md").write_text(markdown, encoding="utf-8")
    files["comparison"] = str(out_dir / "comparison.md")
    sections = [
        Section("Notes", paragraphs=notes or ["Full protocol."]),
        Section(
            "Paper vs. ours",
            tables=[(headers, comparison_rows)],
            paragraphs=[line for line in text.splitlines() if "accuracy of" in line]
            + [f"Per-model reports: {', '.join(files[s]['report'] for s in results)}."] * bool(results),
        ),
    ]
    if plot:
        sections.append(Section("Operating characteristic", images=[(plot, title)]))
    page_title = f"smoothadv reproduce {table} ({dataset})"
    files["report"] = str(write_html(out_dir / "report.html", page_title, sections))
    return files
