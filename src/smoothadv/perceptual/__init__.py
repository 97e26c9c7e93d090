"""Seeing and scoring imperceptibility.

* :func:`magnify` (Appendix 1, eq. 22) reveals a perturbation from a single image; :func:`stretch_together`
  / :func:`magnify_together` put several magnified images on one shared display scale;
  :func:`save_panel` / :func:`magnify_panel` draw them side by side (paper Fig. 1).
* :func:`mad` is the Most Apparent Distortion score (Larson & Chandler 2010) of section 5.1 and Fig. 4,
  with :func:`mad_batch` for (B, C, H, W) batches; :func:`psnr`, :func:`ssim` and :func:`quality_report`
  add the classical scores.
"""

from smoothadv.perceptual.mad import MIN_SIDE, SCALES, MadResult, mad, mad_batch
from smoothadv.perceptual.magnify import Magnify, magnify, magnify_together, stretch_together
from smoothadv.perceptual.panel import magnify_files, magnify_panel, save_panel
from smoothadv.perceptual.quality import QualityReport, psnr, quality_report, ssim

__all__ = [
    "MIN_SIDE",
    "SCALES",
    "MadResult",
    "Magnify",
    "QualityReport",
    "mad",
    "mad_batch",
    "magnify",
    "magnify_files",
    "magnify_panel",
    "magnify_together",
    "psnr",
    "quality_report",
    "save_panel",
    "ssim",
    "stretch_together",
]
