"""``smoothadv reproduce table1|table2|table3``: re-run a table of the paper and print it beside ours."""

from __future__ import annotations

import sys

from smoothadv.cli._options import (
    ATTACK_HELP,
    add_engine_options,
    add_runtime_options,
    add_smoothing_option,
    positive_int,
    runtime_and_engine,
    smooth_forms,
)
from smoothadv.cli._output import add_json_flag, emit, engine_outcome


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="re-run the paper's Table 1, 2 or 3 and print its numbers beside ours (with OC plots)",
        description="Reproduce Tables 1-3 of Zhang et al. 2020 with our models (resumable). --quick runs "
        "a few images with fewer C&W iterations.",
    )
    parser.add_argument("table", choices=("table1", "table2", "table3"))
    parser.add_argument("--dataset", choices=("mnist", "imagenet"), default="mnist", help="default mnist")
    parser.add_argument("--quick", action="store_true", help="few images, fewer C&W/sC&W iterations")
    parser.add_argument("--limit", type=positive_int, help="use the first N images")
    parser.add_argument("--out", help="output folder (default out/reproduce/<table>-<dataset>)")
    parser.add_argument("--batch-size", type=positive_int,
                        help="images per batch (default 100 MNIST, 4 ImageNet)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attacks",
                        help=f"attacks to run beside the paper's six (no paper numbers): {ATTACK_HELP}")
    add_smoothing_option(parser)
    parser.add_argument("--restart", action="store_true", help="discard earlier records in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_runtime_options(parser)
    add_engine_options(parser, shared_data=False)  # its data sets are held in memory
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from smoothadv.core.errors import ConfigError
    from smoothadv.experiments.reproduce import reproduce

    if args.smoothing and not args.attacks:
        raise ConfigError("--smoothing applies to the attacks of --attacks (the paper's six stay as they "
                          "are); name them, e.g. --attacks ddn,cw --smoothing lowpass.")

    where, engine = runtime_and_engine(args)
    try:
        summary = reproduce(
            args.table,
            dataset=args.dataset,
            quick=args.quick,
            limit=args.limit,
            out_dir=args.out,
            batch_size=args.batch_size,
            seed=args.seed,
            restart=args.restart,
            progress=not args.no_progress,
            device=where.device,
            engine=engine,
            attacks=smooth_forms(args.attacks, args.smoothing) if args.attacks else None,
        )
    except KeyboardInterrupt:
        print("smoothadv reproduce: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    summary["runtime"] = where.to_dict()
    engine_lines, status = engine_outcome("reproduce", list(summary["engine"].values()))
    runtime_line = ("driver: " if engine else "") + where.describe()
    emit(args, summary, "\n".join([summary["text"], runtime_line, *engine_lines,
                                   f"report: {summary['files']['report']}"]))
    return status
