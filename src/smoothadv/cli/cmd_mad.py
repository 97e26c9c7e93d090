"""``smoothadv mad``: Most Apparent Distortion of an image pair (or of an attack's results), with PSNR
and SSIM."""

from __future__ import annotations

from pathlib import Path

from smoothadv.cli._output import add_json_flag, emit


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "mad",
        help="perceptual distortion score (MAD) of a distorted image against its reference",
        description=(
            "Most Apparent Distortion (Larson & Chandler 2010; lower is better, 0 for identical images) "
            "with its detection and appearance stages, plus PSNR and SSIM (scikit-image). MAD scores the "
            "luminance only (MATLAB rgb2gray weights), as the original code does; PSNR and SSIM use every "
            "channel. Give REFERENCE DISTORTED (same size and channels), or the --out folder of "
            "`smoothadv attack` to score each adversarial file against the clean crop the model saw. "
            "Images with a side below 34 pixels (MAD's minimum) are upsampled 4x for MAD, as in evaluate."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="REFERENCE DISTORTED image files, or one `smoothadv attack` results folder")
    parser.add_argument(
        "--scale",
        choices=("2011", "2010"),
        default="2011",
        help="2011: release scale (d_detect x 200, default); 2010: the paper's scale (Fig. 4)",
    )
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from smoothadv.core.errors import ConfigError

    if len(args.paths) == 1 and Path(args.paths[0]).is_dir():
        return _run_folder(args)
    if len(args.paths) != 2:
        raise ConfigError(
            f"give two image files (REFERENCE DISTORTED) or one results folder; got {len(args.paths)} paths."
        )
    from smoothadv.perceptual import quality_report

    report = quality_report(*args.paths, scale=args.scale, upsample_to="auto")
    payload = report.to_dict()
    psnr = "inf (identical)" if payload["psnr"] is None else f"{payload['psnr']:.2f} dB"
    upsampled = "" if report.mad_upsampled_to is None else f", upsampled to {report.mad_upsampled_to} pixels"
    text = "\n".join(
        [
            f"MAD ({report.mad.scale} scale, luminance{upsampled}): {report.mad.mad:.6g}",
            f"  d_detect: {report.mad.d_detect:.6g}",
            f"  d_appear: {report.mad.d_appear:.6g}",
            f"PSNR: {psnr}",
            f"SSIM: {report.ssim:.4f}",
        ]
    )
    emit(args, payload, text)
    return 0


def _run_folder(args) -> int:
    from smoothadv.experiments.craft import score_results

    payload = score_results(args.paths[0], scale=args.scale)
    lines = [f"{payload['attack']} on {payload['model']}: MAD ({args.scale} scale, luminance) of each "
             "adversarial file against its clean crop"]
    for score in payload["scores"]:
        if "skipped" in score:
            lines.append(f"  {score['input']}: {score['skipped']}, no adversarial file")
            continue
        psnr = "inf" if score["psnr"] is None else f"{score['psnr']:.2f} dB"
        below = " (below MAD's detection threshold)" if score["d_detect"] == 0 else ""
        lines.append(f"  {Path(score['output']).name}: MAD {score['mad']:.4g}{below}  PSNR {psnr}  "
                     f"SSIM {score['ssim']:.4f}")
    emit(args, payload, "\n".join(lines))
    return 0
