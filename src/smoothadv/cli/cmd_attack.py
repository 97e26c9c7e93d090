"""``smoothadv attack``: craft adversarial PNGs against a model and write a per-image table."""

from __future__ import annotations

from smoothadv.cli._output import add_json_flag, emit


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "attack", help="craft adversarial image files",
        description="Attack a model on image files; writes <name>_<attack>.png and results.csv/json.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (PNG/JPEG)")
    parser.add_argument("--model", required=True, help="registry name, TorchScript file or module:factory")
    parser.add_argument("--attack", required=True, help="fgsm, ifgsm, pgd2, qpgd2, cw, scw or deepfool")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--epsilon", type=float, help="budget of fgsm/ifgsm (L-inf) or pgd2/qpgd2 (L2)")
    parser.add_argument("--preset", choices=("mnist", "imagenet"), help="paper parameters (default: model)")
    parser.add_argument("--labels", help="comma-separated true labels, one per input (default: predictions)")
    parser.add_argument("--no-quantize", action="store_true", help="keep float images (not 8-bit checked)")
    parser.add_argument("--input-size", type=int, help="input side of a user model")
    parser.add_argument("--channels", type=int, choices=(1, 3), help="input channels of a user model")
    parser.add_argument("--weights", help="weights file of a module:factory model")
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from smoothadv.core.errors import ConfigError
    from smoothadv.experiments.craft import craft_files

    try:
        labels = None if args.labels is None else [int(v) for v in args.labels.split(",")]
    except ValueError as error:
        raise ConfigError(f"--labels must be comma-separated integers, got {args.labels!r}.") from error
    summary = craft_files(
        args.model, args.attack, args.inputs, args.out, epsilon=args.epsilon, preset=args.preset,
        labels=labels, quantize=not args.no_quantize, input_size=args.input_size, channels=args.channels,
        weights=args.weights,
    )
    lines = [f"{summary['attack']} on {summary['model']} (preset {summary['preset']})"]
    if summary["labels_from_model"]:
        lines.append("labels: the model's predictions on the clean images (no --labels given)")
    for r in summary["records"]:
        verdict = "fooled" if r["success"] else "NOT fooled"
        lines.append(f"{r['output']}: {verdict} (label {r['label']} -> {r['prediction']}), "
                     f"L2 {r['l2']:.3f}, Linf {r['linf']:.3f}")
    lines.append(f"table: {summary['csv']}")
    emit(args, summary, "\n".join(lines))
    return 0
