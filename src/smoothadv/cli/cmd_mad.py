"""``smoothadv mad``: Most Apparent Distortion of an image pair, with PSNR and SSIM."""

from __future__ import annotations

from smoothadv.cli._output import add_json_flag, emit


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "mad",
        help="perceptual distortion score (MAD) of a distorted image against its reference",
        description=(
            "Most Apparent Distortion (Larson & Chandler 2010; lower is better, 0 for identical images) "
            "with its detection and appearance stages, plus PSNR and SSIM (scikit-image)."
        ),
    )
    parser.add_argument("reference", metavar="REFERENCE", help="reference (original) image file")
    parser.add_argument("distorted", metavar="DISTORTED", help="distorted (e.g. adversarial) image file")
    parser.add_argument(
        "--scale",
        choices=("2011", "2010"),
        default="2011",
        help="2011: release scale (d_detect x 200, default); 2010: the paper's scale (Fig. 4)",
    )
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from smoothadv.perceptual import quality_report

    report = quality_report(args.reference, args.distorted, scale=args.scale)
    payload = report.to_dict()
    psnr = "inf (identical)" if payload["psnr"] is None else f"{payload['psnr']:.2f} dB"
    text = "\n".join(
        [
            f"MAD ({report.mad.scale} scale): {report.mad.mad:.6g}",
            f"  d_detect: {report.mad.d_detect:.6g}",
            f"  d_appear: {report.mad.d_appear:.6g}",
            f"PSNR: {psnr}",
            f"SSIM: {report.ssim:.4f}",
        ]
    )
    emit(args, payload, text)
    return 0
