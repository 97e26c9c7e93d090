"""``smoothadv models``: list the registered models with input size, source and measured accuracy."""

from __future__ import annotations

from smoothadv.cli._output import add_json_flag, emit


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the registered models",
        description="List the models that --model accepts by name, with input size, number of classes, "
        "source and measured accuracy. Any name also works as <name>+bilateral (bilateral-filter defence); "
        "user models are given as a TorchScript file or package.module:factory with --weights.",
    )
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from smoothadv.models import list_models

    infos = list_models()
    lines = []
    for info in infos:
        if info.accuracy is None:
            accuracy = "accuracy not measured"
        else:
            a = info.accuracy
            accuracy = f"accuracy {a.value:.4f} ({a.correct}/{a.total} {a.dataset})"
        shape = f"{info.input_size}x{info.input_size}x{info.channels}"
        lines.append(
            f"{info.name:<30} {shape}  {info.num_classes} classes  {accuracy}\n"
            f"{'':<30} {info.description}\n{'':<30} source: {info.source}"
        )
    emit(args, [info.to_dict() for info in infos], "\n".join(lines))
    return 0
