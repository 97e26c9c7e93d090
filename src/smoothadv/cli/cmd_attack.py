"""``smoothadv attack``: craft adversarial PNGs against a model and write a per-image table."""

from __future__ import annotations

from smoothadv.cli._options import (
    ATTACK_HELP,
    add_model_options,
    add_runtime_options,
    add_smoothing_option,
    model_spec,
    runtime,
    smooth_forms,
)
from smoothadv.cli._output import add_json_flag, emit


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "attack", help="craft adversarial image files",
        description="Attack a model on image files. Writes <name>_clean.png (the input as the model saw "
        "it, after resize and crop), <name>_<attack>.png (the adversarial example) and results.csv/json.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (PNG/JPEG)")
    parser.add_argument("--attack", required=True, help=ATTACK_HELP)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--epsilon", type=float,
                        help="budget of fgsm/ifgsm (L-inf, on [0,1] pixels) or of the L2 ones: pgd2, "
                        "qpgd2, apgd2, sapgd2, spgd2 and their smooth forms")
    add_smoothing_option(parser)
    parser.add_argument("--labels", help="comma-separated true labels, one per input (default: predictions)")
    parser.add_argument("--no-quantize", action="store_true", help="keep float images (not 8-bit checked)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files of an earlier run in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_model_options(parser)
    add_runtime_options(parser)
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from smoothadv.core.errors import ConfigError
    from smoothadv.experiments.craft import craft_files

    try:
        labels = None if args.labels is None else [int(v) for v in args.labels.split(",")]
    except ValueError as error:
        raise ConfigError(f"--labels must be comma-separated integers, got {args.labels!r}.") from error
    spec, where = model_spec(args), runtime(args)
    summary = craft_files(
        spec, smooth_forms(args.attack, args.smoothing), args.inputs, args.out, epsilon=args.epsilon,
        labels=labels,
        quantize=not args.no_quantize, device=where.device, overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    summary["runtime"] = where.to_dict()
    lines = [f"{summary['attack']} on {summary['model']} (preset {summary['preset']}, "
             f"{summary['preset_from']}); {where.describe()}"]
    if summary["labels_from_model"]:
        lines.append("labels: the model's predictions on the clean images (no --labels given)")
    for source, stem in summary["renamed"].items():
        lines.append(f"note: {source} shares its file name with another input; written as {stem}_*.png")
    for r in summary["records"]:
        if r["status"] == "already misclassified":
            lines.append(f"{r['input']}: already misclassified (label {r['label']}, model says "
                         f"{r['clean_prediction']}): nothing to attack, no adversarial file")
            continue
        lines.append(f"{r['output']}: {r['status']} (label {r['label']} -> {r['prediction']}), "
                     f"L2 {r['l2']:.3f}, Linf {r['linf']:.3f}")
    lines.append(f"clean inputs as the model saw them: *_clean.png; table: {summary['csv']}")
    emit(args, summary, "\n".join(lines))
    return 0
