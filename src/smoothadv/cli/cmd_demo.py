"""``smoothadv demo``: the main job on embedded defaults."""

from __future__ import annotations

from smoothadv.cli._output import add_json_flag, emit


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the main job on embedded defaults")
    parser.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from smoothadv.demo import run_smoothing_demo

    summary = run_smoothing_demo(args.out)
    lines = [f"smoothing solver: {summary['solver']}"] + [f"wrote {p}" for p in summary["files"].values()]
    emit(args, summary, "\n".join(lines))
    return 0
