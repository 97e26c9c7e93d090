"""``smoothadv evaluate``: run attacks over a dataset (protocol of section 5.1) and write a report."""

from __future__ import annotations

import sys

from smoothadv.cli._options import (
    ATTACK_HELP,
    add_engine_options,
    add_model_options,
    add_runtime_options,
    add_smoothing_option,
    model_spec,
    positive_int,
    runtime_and_engine,
    smooth_forms,
)
from smoothadv.cli._output import add_json_flag, emit, engine_outcome
from smoothadv.core.errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="attack a dataset, write per-image records, tables, OC plot and an HTML report (resumable)",
        description="Evaluate attacks on a model (paper section 5.1). Re-running the same command "
        "resumes an interrupted run from its records in --out.",
    )
    parser.add_argument("--data", required=True,
                        help="mnist, imagenet-samples, or a folder of images (labels from its labels.csv "
                        "with rows filename,label; without one, the model's predictions)")
    parser.add_argument("--attacks", required=True, help=f"comma-separated: {ATTACK_HELP}")
    add_smoothing_option(parser)
    parser.add_argument("--out", required=True, help="output folder (records, tables, plots, report.html)")
    parser.add_argument("--limit", type=positive_int, help="use the first N images")
    parser.add_argument("--batch-size", type=positive_int,
                        help="images per batch (default 100 MNIST, 4 ImageNet)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--epsilons",
        action="append",
        default=[],
        metavar="ATTACK=E1,E2,...",
        help="epsilon grid of a fixed-distortion attack, e.g. pgd2=1,2,3 (repeatable)",
    )
    parser.add_argument(
        "--perceptual",
        action="store_true",
        help="MAD score of each successful example (MNIST is upsampled 4x for MAD)",
    )
    parser.add_argument("--restart", action="store_true", help="discard earlier records in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_model_options(parser)
    add_runtime_options(parser)
    add_engine_options(parser)
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def parse_epsilons(items: list[str]) -> dict[str, list[float]] | None:
    """``["pgd2=1,2", "fgsm=0.1"]`` -> ``{"pgd2": [1.0, 2.0], "fgsm": [0.1]}``."""
    grids: dict[str, list[float]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        try:
            grids[name.strip().lower()] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            sep = ""
        if not sep or not grids.get(name.strip().lower()):
            raise ConfigError(f"--epsilons {item!r}: write ATTACK=E1,E2,... e.g. pgd2=1,2,3.")
    return grids or None


def smooth_epsilons(grids: dict[str, list[float]] | None, smoothing: str | None):
    """The ``--epsilons`` grids keyed by the smooth forms the attacks run under ``--smoothing``."""
    if grids is None or smoothing is None:
        return grids
    return {smooth_forms(name, smoothing): grid for name, grid in grids.items()}


def run(args) -> int:
    from smoothadv.experiments.jobs import run_evaluation
    from smoothadv.report import table_text

    spec = model_spec(args)
    where, engine = runtime_and_engine(args)
    try:
        result, files = run_evaluation(
            model=spec,
            data=args.data,
            attacks=smooth_forms(args.attacks, args.smoothing),
            out_dir=args.out,
            limit=args.limit,
            batch_size=args.batch_size,
            seed=args.seed,
            epsilons=smooth_epsilons(parse_epsilons(args.epsilons), args.smoothing),
            perceptual=args.perceptual,
            restart=args.restart,
            progress=not args.no_progress,
            device=where.device,
            engine=engine,
        )
    except KeyboardInterrupt:
        print(
            f"smoothadv evaluate: interrupted; finished batches are saved in {args.out}: run the same "
            "command again to resume.",
            file=sys.stderr,
        )
        return 130
    payload = {**result.to_dict(), "files": files, "runtime": where.to_dict()}
    config = result.config
    header = (f"{config['model']} on {args.data}: preset {config['preset']} ({config['preset_from']}); "
              f"{'driver: ' if engine else ''}{where.describe()}")
    lines = [header]
    if config.get("labels_from_model"):
        lines.append(f"labels: {args.data} has no labels.csv, so the model's own predictions are the labels "
                     "(clean accuracy 1 by construction)")
    attacked = [row for row in result.table if row.model == config["model"]]
    if not any(row.n for row in attacked):
        total = len(result.dataset)
        lines.append(f"none of the {total} images is classified correctly, so nothing was attacked: check "
                     "the labels (labels.csv) and the model's input (--mean/--std, --channels).")
    engine_lines, status = engine_outcome("evaluate", [payload["engine"]])
    lines += [table_text(result.table), *engine_lines, f"report: {files['report']}"]
    emit(args, payload, "\n".join(lines))
    return status
