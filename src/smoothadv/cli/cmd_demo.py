"""``smoothadv demo``: the main job on embedded defaults (six attacks on C4 / MNIST, one HTML report)."""

from __future__ import annotations

from smoothadv.cli._options import add_runtime_options, positive_int, runtime
from smoothadv.cli._output import add_json_flag, emit


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the main job on embedded defaults",
        description="Evaluate FGSM, I-FGSM, PGD2, C&W, qPGD2 and sC&W on the shipped C4 over MNIST test "
                    "images and write an HTML report (resumable: run again to continue).",
    )
    parser.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    parser.add_argument("--images", type=positive_int, help="MNIST test images (default: the demo's)")
    parser.add_argument("--restart", action="store_true", help="discard an earlier demo run in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_runtime_options(parser)
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from smoothadv.experiments.demo import DEMO_IMAGES, run_quick_demo

    where = runtime(args)
    summary = run_quick_demo(args.out, images=args.images or DEMO_IMAGES, progress=not args.no_progress,
                             restart=args.restart, device=where.device)
    summary["runtime"] = where.to_dict()
    text = "\n".join([summary["text"], *summary["notes"], where.describe(), f"report: {summary['report']}"])
    emit(args, summary, text)
    return 0
