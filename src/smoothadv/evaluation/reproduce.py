"""``smoothadv reproduce table1|table2|table3``: the paper's Tables 1-3 re-run with our models, side by side.

The paper's values (Zhang et al. 2020, Tables 1-3) are copied below as data. Our stand-ins:

* MNIST: C4 trained by us (``c4``) and its FGSM adversarially trained twin (``c4-adv``), MNIST test set.
* ImageNet: EfficientNet-Lite0 and Lite2 on the 20 ImageNet photos foolbox ships, in place of InceptionV3
  and ResNetV2-50 on the 1000 NIPS 2017 images (neither is available offline). No adversarially trained
  ImageNet network is available offline either, so Table 2 (ImageNet) and the "adv. training" column of
  Table 3 (ImageNet) cannot be re-run; we say so in the output.
* Table 3 (transferability) attacks the plain network once per attack at the preset's epsilon (no grid)
  and classifies the adversarial images with the bilateral-filter variant ``<model>+bilateral`` and with
  the adversarially trained one. The paper ran it on ImageNet only; on MNIST we attack ``c4`` and
  transfer to ``c4+bilateral`` and ``c4-adv``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smoothadv.attacks import FIXED_DISTORTION_ATTACKS, PRESETS
from smoothadv.errors import ConfigError

PAPER_ATTACKS = ("fgsm", "ifgsm", "pgd2", "cw", "qpgd2", "scw")


def _column(*pairs: tuple[float, float]) -> dict[str, tuple[float, float]]:
    return dict(zip(PAPER_ATTACKS, pairs, strict=True))


#: (P_suc, D_bar) per attack, as printed in the paper. Keys: table -> dataset -> column.
PAPER_TABLES: dict[str, dict[str, dict[str, dict[str, tuple[float, float]]]]] = {
    "table1": {
        "mnist": {
            "C4": _column((0.89, 5.02), (1.00, 2.69), (1.00, 1.71), (1.00, 2.49), (0.97, 3.36), (1.00, 1.97))
        },
        "imagenet": {
            "InceptionV3": _column(
                (0.97, 5.92), (1.00, 5.54), (1.00, 1.80), (0.99, 4.91), (0.96, 2.10), (0.99, 3.00)
            ),
            "ResNetV2-50": _column(
                (0.92, 8.20), (0.99, 7.58), (1.00, 3.63), (0.99, 9.84), (0.93, 4.80), (0.98, 5.99)
            ),
        },
    },
    "table2": {
        "mnist": {
            "C4 (adv. trained)": _column(
                (0.15, 4.53), (1.00, 3.48), (1.00, 2.52), (0.93, 3.03), (0.99, 2.94), (0.99, 2.39)
            )
        },
        "imagenet": {
            "InceptionV3 (adv. trained)": _column(
                (0.06, 6.40), (0.97, 29.94), (1.00, 3.89), (0.95, 6.43), (0.69, 7.86), (0.75, 6.22)
            )
        },
    },
    "table3": {
        "imagenet": {
            "Bilateral filter": _column(
                (0.77, 5.13), (0.82, 5.12), (1.00, 5.14), (0.82, 4.75), (0.95, 5.13), (0.68, 2.91)
            ),
            "Adv. training": _column(
                (0.04, 10.20), (0.02, 10.10), (0.12, 10.26), (0.02, 10.21), (0.01, 10.17), (0.01, 4.63)
            ),
        },
    },
}
#: Paper accuracies (section 5.2 and 5.4).
PAPER_ACCURACY = {
    "C4": 0.99,
    "C4 (adv. trained)": 0.99,
    "InceptionV3": 0.96,
    "ResNetV2-50": 0.93,
    "InceptionV3 (adv. trained)": 0.94,
}

FIGURES = {
    ("table1", "mnist"): "fig5_mnist.png",
    ("table1", "imagenet"): "fig6_imagenet.png",
    ("table2", "mnist"): "oc_table2_mnist.png",
    ("table3", "mnist"): "fig7_transfer_mnist.png",
    ("table3", "imagenet"): "fig7_transfer_imagenet.png",
}
QUICK = {
    "mnist": {"limit": 100, "cw": {"binary_search_steps": 5, "steps": 50}},
    "imagenet": {"limit": 2, "cw": {"binary_search_steps": 3, "steps": 30}},
}


@dataclass
class Column:
    """One column of a reproduced table: the paper's network and data vs. ours."""

    paper: str
    model: str | None  # our model measured (None: not available)
    source: str | None = None  # the attacked model when it differs (transfer)
    unavailable: str | None = None


@dataclass
class Plan:
    """What a table needs: runs (attacked model -> transfer targets) and the columns to compare."""

    runs: dict[str, list[str]]
    columns: list[Column]
    notes: list[str] = field(default_factory=list)
    fixed_epsilon: bool = False


def plan(table: str, dataset: str) -> Plan:
    """The runs and columns of ``table`` on ``dataset``.

    Raises:
        ConfigError: unknown table or dataset.
    """
    if table not in PAPER_TABLES:
        raise ConfigError(f"unknown table {table!r}; choose table1, table2 or table3.")
    if dataset not in ("mnist", "imagenet"):
        raise ConfigError(f"unknown dataset {dataset!r}; choose mnist or imagenet.")
    stand_in = (
        "EfficientNet-Lite0/Lite2 on the 20 foolbox ImageNet photos stand in for the paper's "
        "InceptionV3/ResNetV2-50 on 1000 NIPS 2017 images (not available offline)."
    )
    no_adv = (
        "No adversarially trained ImageNet network is available offline, so this part of the paper "
        "cannot be re-run; only the paper's values are shown."
    )
    if table == "table1" and dataset == "mnist":
        return Plan({"c4": []}, [Column("C4", "c4")])
    if table == "table1":
        return Plan(
            {"efficientnet-lite0": [], "efficientnet-lite2": []},
            [Column("InceptionV3", "efficientnet-lite0"), Column("ResNetV2-50", "efficientnet-lite2")],
            [stand_in],
        )
    if table == "table2" and dataset == "mnist":
        return Plan({"c4-adv": []}, [Column("C4 (adv. trained)", "c4-adv")])
    if table == "table2":
        return Plan({}, [Column("InceptionV3 (adv. trained)", None, unavailable=no_adv)], [no_adv])
    transfer = (
        "Transferability: the plain network is attacked once per attack at the preset's epsilon "
        "(no epsilon grid); the adversarial images are then classified by the defended networks."
    )
    if dataset == "mnist":
        return Plan(
            {"c4": ["c4+bilateral", "c4-adv"]},
            [Column("Bilateral filter", "c4+bilateral", "c4"), Column("Adv. training", "c4-adv", "c4")],
            [
                transfer,
                "The paper reports Table 3 on ImageNet (InceptionV3) only; its values are "
                "shown for reference next to our MNIST run.",
            ],
            fixed_epsilon=True,
        )
    return Plan(
        {"efficientnet-lite0": ["efficientnet-lite0+bilateral"]},
        [
            Column("Bilateral filter", "efficientnet-lite0+bilateral", "efficientnet-lite0"),
            Column("Adv. training", None, unavailable=no_adv),
        ],
        [transfer, stand_in, no_adv],
        fixed_epsilon=True,
    )


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

    Returns:
        A JSON-ready dict: ``rows`` (attack, column, paper and our P_suc / D_bar), ``notes``, ``files``,
        ``text`` (the side-by-side table).
    """
    from smoothadv.data import load_imagenet_samples, load_mnist
    from smoothadv.evaluation.metrics import accuracy, attack_statistics
    from smoothadv.evaluation.runner import evaluate
    from smoothadv.models import load_model, model_info
    from smoothadv.report import plot_operating_characteristics, write_report
    from smoothadv.report.html import Section, write_html

    the_plan = plan(table, dataset)
    out_dir = Path(out_dir) if out_dir is not None else Path("out") / "reproduce" / f"{table}-{dataset}"
    preset = dataset
    notes = list(the_plan.notes)
    attack_options: dict[str, dict] = {}
    if quick:
        settings = QUICK[dataset]
        limit = settings["limit"] if limit is None else limit
        attack_options = {"cw": dict(settings["cw"]), "scw": dict(settings["cw"])}
        full = PRESETS[preset]["cw"]
        notes.append(
            f"--quick: first {limit} images; C&W and sC&W run {settings['cw']['binary_search_steps']} "
            f"binary-search steps of {settings['cw']['steps']} iterations instead of "
            f"{full['binary_search_steps']} x {full['steps']}."
        )
    elif limit is not None:
        notes.append(f"--limit: first {limit} images only.")
    epsilons = None
    if the_plan.fixed_epsilon:
        epsilons = {a: [PRESETS[preset][a]["epsilon"]] for a in FIXED_DISTORTION_ATTACKS}
    if batch_size is None:
        batch_size = 100 if dataset == "mnist" else 4

    results = {}
    files: dict[str, Any] = {}
    for source, targets in the_plan.runs.items():
        info = model_info(source)
        data = (
            load_mnist("test", limit=limit)
            if dataset == "mnist"
            else load_imagenet_samples(info.input_size, resize=info.resize).head(limit)
        )
        net = load_model(source)
        transfer = {name: load_model(name) for name in targets}
        result = evaluate(
            net,
            data,
            PAPER_ATTACKS,
            out_dir / source.replace("+", "_"),
            model_name=source,
            preset=preset,
            epsilons=epsilons,
            attack_options=attack_options,
            transfer_to=transfer,
            batch_size=batch_size,
            seed=seed,
            restart=restart,
            progress=progress,
            extra_config={"reproduce": table},
        )
        results[source] = result

    rows = []
    for column in the_plan.columns:
        paper_column = (
            PAPER_TABLES[table].get("imagenet" if table == "table3" else dataset, {}).get(column.paper)
        )
        for attack in PAPER_ATTACKS:
            paper = paper_column.get(attack) if paper_column else None
            ours = None
            if column.model is not None:
                source = column.source or column.model
                ours = attack_statistics(results[source].records, column.model, attack)
            rows.append(
                {
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
                }
            )
    accuracies = {}
    for result in results.values():
        for name in result.models:
            correct, total = accuracy(result.records, name)
            accuracies[name] = {
                "correct": correct,
                "total": total,
                "value": correct / total if total else None,
            }
    text = comparison_text(table, dataset, rows, notes, accuracies)

    figure = FIGURES.get((table, dataset))
    if results and figure:
        records = [r for result in results.values() for r in result.records]
        if table == "table3":
            pairs = [(the_plan.columns[0].model, a) for a in ("cw", "scw")]
            title = f"C&W and sC&W transferred to {the_plan.columns[0].model} (cf. paper Fig. 7)"
        else:
            pairs = [(source, a) for source in results for a in PAPER_ATTACKS]
            number = 5 if dataset == "mnist" else 6
            title = f"Operating characteristics, {table} {dataset} (cf. paper Fig. {number})"
        plot = plot_operating_characteristics(records, out_dir / figure, pairs=pairs, title=title)
        files["figure"] = str(out_dir / figure)
    else:
        plot = b""
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
    summary = {
        "accuracy": accuracies,
        "table": table,
        "dataset": dataset,
        "quick": quick,
        "limit": limit,
        "notes": notes,
        "rows": rows,
    }
    (out_dir / "comparison.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out_dir / "comparison.md").write_text(
        comparison_markdown(headers, comparison_rows, notes), encoding="utf-8"
    )
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
    files["report"] = str(
        write_html(out_dir / "report.html", f"smoothadv reproduce {table} ({dataset})", sections)
    )
    summary.update({"files": files, "text": text})
    return summary


def _fmt(value: float | None, spec: str = "{:.2f}") -> str:
    return "-" if value is None else spec.format(value)


def comparison_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Headers and string cells of the side-by-side table."""
    from smoothadv.report.tables import ATTACK_LABELS

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
            ATTACK_LABELS.get(r["attack"], r["attack"]),
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
    table: str, dataset: str, rows: list[dict], notes: list[str], accuracies: dict | None = None
) -> str:
    """Fixed-width side-by-side table with the notes under it."""
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
    columns = dict.fromkeys(r["column"] for r in rows)
    extra += [f"paper accuracy of {c}: {PAPER_ACCURACY[c]:.2f}" for c in columns if c in PAPER_ACCURACY]
    return "\n".join([f"{table} ({dataset}): paper vs. ours", *body, *extra, *(f"note: {n}" for n in notes)])


def comparison_markdown(headers: list[str], cells: list[list[str]], notes: list[str]) -> str:
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(headers) - 3)) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"
