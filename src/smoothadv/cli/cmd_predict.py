"""``smoothadv predict``: top-K classes of a model for image files."""

from __future__ import annotations

from smoothadv.cli._options import add_model_options, add_runtime_options, model_spec, positive_int, runtime
from smoothadv.cli._output import add_json_flag, emit


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify image files with a model",
        description="Print the top-K classes (index, name, probability) of each image. Images are resized "
        "(shorter side) and centre-cropped to the model's input size.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--top", type=positive_int, default=5, help="classes per image (default: 5)")
    add_model_options(parser, with_preset=False)
    add_runtime_options(parser)
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from smoothadv.experiments.predict import predict_files

    spec, where = model_spec(args), runtime(args)
    results = predict_files(spec, args.images, top=args.top, device=where.device)
    lines = []
    for result in results:
        lines.append(result["image"])
        for rank, (index, name, probability) in enumerate(result["top"], start=1):
            lines.append(f"  {rank}. {index:>4}  {name:<30} {probability:.4f}")
    emit(args, results, "\n".join(lines))
    return 0
