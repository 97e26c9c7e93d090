"""``smoothadv figure``: the paper's perceptual figures (Fig. 1 magnification panel, Fig. 4 MAD scatter)."""

from __future__ import annotations

from smoothadv.cli._options import add_model_options, add_runtime_options, model_spec, positive_int, runtime
from smoothadv.cli._output import add_json_flag, emit


def _common(parser) -> None:
    parser.add_argument("--out", default="out/figures", help="output folder (default %(default)s)")
    parser.add_argument("--cw-binary-steps", type=positive_int, default=5,
                        help="C&W/sC&W binary-search steps (default 5; the paper's experiments: 9)")
    parser.add_argument("--cw-steps", type=positive_int, default=50,
                        help="C&W/sC&W iterations per binary step (default 50; the paper's experiments: 100)")
    add_model_options(parser, default="efficientnet-lite0", with_preset=False)
    add_runtime_options(parser)
    add_json_flag(parser)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "figure",
        help="draw the paper's perceptual figures (figure1: magnified adversarial examples; figure4: MAD)",
        description="Paper figures 1 and 4, with reduced C&W/sC&W settings by default (5 x 50 iterations).",
    )
    figures = parser.add_subparsers(dest="figure", metavar="FIGURE", required=True)
    one = figures.add_parser("figure1", help="one image, its magnification and the six magnified attacks")
    one.add_argument("--image", default=None, help="image file (default: a foolbox ImageNet photo)")
    one.add_argument("--index", type=int, default=0, help="photo of the default dataset (default 0)")
    _common(one)
    one.set_defaults(handler=run)
    four = figures.add_parser("figure4", help="per-image MAD of sC&W against C&W, log-log scatter")
    four.add_argument("--limit", type=positive_int, default=None,
                      help="first N correctly classified images (default all: 17 photos, about 5 min)")
    four.add_argument("--scale", choices=("2010", "2011"), default="2010",
                      help="MAD scale: 2010 (the paper's, default) or 2011 (release, d_detect x 200)")
    _common(four)
    four.set_defaults(handler=run)


def run(args) -> int:
    from smoothadv.experiments import figures

    overrides = {"binary_search_steps": args.cw_binary_steps, "steps": args.cw_steps}
    spec, where = model_spec(args), runtime(args)
    if args.figure == "figure1":
        payload = figures.figure1_for_model(spec, image=args.image, index=args.index, out_dir=args.out,
                                            cw_overrides=overrides, device=where.device)
        lines = [f"Figure 1 ({payload['model']}, image {payload['image']}, class {payload['label']}) "
                 f"-> {payload['path']}",
                 f"C&W/sC&W: {args.cw_binary_steps} binary steps x {args.cw_steps} iterations"]
        lines += [f"  {r['attack']:6s} L2 {r['l2']:7.3f}  Linf {r['linf']:.4f}  "
                  f"{'success' if r['success'] else 'FAILED'}  {r['seconds']:.1f} s"
                  for r in payload["attacks"]]
    else:
        payload = figures.figure4_for_model(spec, limit=args.limit, scale=args.scale, out_dir=args.out,
                                            cw_overrides=overrides, device=where.device)
        shown, shown_equal = (
            "n/a" if value is None else f"{100 * value:.1f}%"
            for value in (payload["fraction_scw_lower"], payload["fraction_scw_lower_equal_l2"]))
        lines = [f"Figure 4 ({payload['model']}, {payload['attacked']} correctly classified images, "
                 f"MAD scale {payload['scale']}) -> {payload['path']}, {payload['table']}",
                 f"C&W/sC&W: {args.cw_binary_steps} binary steps x {args.cw_steps} iterations; "
                 f"{payload['seconds']:.0f} s",
                 f"sC&W has the lower MAD on {shown} of {payload['scored']} images (paper: 93% of 1000); "
                 f"at equal L2 (C&W's perturbation rescaled to sC&W's norm): {shown_equal}",
                 "sC&W lower / tied / C&W lower: " + ", equal L2: ".join(
                     f"{c['scw_lower']} / {c['equal']} / {c['cw_lower']}"
                     for c in (payload["comparison"], payload["comparison_equal_l2"]))]
        lines += [f"  {r['id']}: L2 C&W {r['l2_cw']:.3f} sC&W {r['l2_scw']:.3f}; MAD C&W {r['mad_cw']:.4g} "
                  f"sC&W {r['mad_scw']:.4g}, C&W at sC&W's L2 {r['mad_cw_equal_l2']:.4g}"
                  for r in payload["records"]]
    payload["runtime"] = where.to_dict()
    lines.append(where.describe())
    emit(args, payload, "\n".join(lines))
    return 0
