"""``smoothadv magnify``: adversarial magnification (Appendix 1) of image files on one shared stretch."""

from __future__ import annotations

from smoothadv.cli._output import add_json_flag, emit


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "magnify",
        help="magnify images to reveal adversarial perturbations (paper Appendix 1)",
        description=(
            "Write the adversarial magnification of each image (eq. 22) and, for several images, a "
            "side-by-side panel. All outputs share one min-max stretch, so their noise levels compare."
        ),
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--beta", type=float, default=0.8, help="weight of the local term (default 0.8)")
    parser.add_argument(
        "--spatial-sigma", type=float, default=5.0, help="spatial sigma in pixels (default 5, paper Fig. 1)"
    )
    parser.add_argument(
        "--range-sigma", type=float, default=0.2, help="range sigma on [0, 1] values (default 0.2)"
    )
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from smoothadv.perceptual import magnify_files

    summary = magnify_files(
        args.images, args.out, beta=args.beta, spatial_sigma=args.spatial_sigma, range_sigma=args.range_sigma
    )
    lines = [f"wrote {path}" for path in summary["outputs"]]
    if summary["panel"] is not None:
        lines.append(f"wrote {summary['panel']} (panel, one shared stretch)")
    emit(args, summary, "\n".join(lines))
    return 0
