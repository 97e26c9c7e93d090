"""``smoothadv predict``: top-K classes of a model for image files."""

from __future__ import annotations

from smoothadv.cli._output import add_json_flag, emit


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify image files with a model",
        description="Print the top-K classes (index, name, probability) of each image. Images are resized "
        "(shorter side) and centre-cropped to the model's input size.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    parser.add_argument(
        "--model",
        required=True,
        help="registry name (see `smoothadv models`), "
        "<name>+bilateral, a TorchScript file, or package.module:factory",
    )
    parser.add_argument("--top", type=int, default=5, help="classes per image (default: 5)")
    parser.add_argument(
        "--weights",
        help="weights of a package.module:factory model (.safetensors or a state dict saved with torch.save)",
    )
    parser.add_argument(
        "--mean",
        type=float,
        nargs="+",
        help="user model: input mean per channel, applied as (x - mean) / std to [0,1] pixels",
    )
    parser.add_argument("--std", type=float, nargs="+", help="user model: input std per channel")
    parser.add_argument("--input-size", type=int, help="user model: input side in pixels (required for them)")
    parser.add_argument("--channels", type=int, choices=[1, 3], help="user model: input channels (default 3)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from smoothadv.experiments.predict import predict_files

    results = predict_files(
        args.model,
        args.images,
        top=args.top,
        device=args.device,
        weights=args.weights,
        mean=args.mean,
        std=args.std,
        input_size=args.input_size,
        channels=args.channels,
    )
    lines = []
    for result in results:
        lines.append(result["image"])
        for rank, (index, name, probability) in enumerate(result["top"], start=1):
            lines.append(f"  {rank}. {index:>4}  {name:<30} {probability:.4f}")
    emit(args, results, "\n".join(lines))
    return 0
