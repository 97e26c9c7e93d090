"""Classical full-reference scores (PSNR, SSIM from scikit-image) and a combined report with MAD.

PSNR and SSIM are computed by ``skimage.metrics`` on the 8-bit images (colour kept as colour, data range
255). SSIM uses the settings of Wang et al. (2004): Gaussian weights with sigma 1.5 and population
covariances. MAD is computed on the grey image as in its original release (see :mod:`.mad`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from smoothadv.core.errors import ShapeError
from smoothadv.perceptual._inputs import to_uint8_array
from smoothadv.perceptual.mad import MadResult, default_upsample, mad, mad_batch


def psnr(reference, distorted) -> float:
    """Peak signal-to-noise ratio in dB of two 8-bit images (``inf`` when identical).

    Args:
        reference, distorted: file paths, arrays or tensors (see :func:`smoothadv.perceptual.mad`).
    """
    ref, dst = _pair(reference, distorted)
    if np.array_equal(ref, dst):
        return math.inf
    from skimage.metrics import peak_signal_noise_ratio  # imported on use: it pulls in scipy.stats (1 s)

    return float(peak_signal_noise_ratio(ref, dst, data_range=255))


def ssim(reference, distorted) -> float:
    """Structural similarity (Wang et al. 2004 settings) of two 8-bit images; 1 when identical.

    Args:
        reference, distorted: file paths, arrays or tensors; colour images are compared per channel
            and averaged. Both sides must be at least 7 pixels.
    """
    ref, dst = _pair(reference, distorted)
    if min(ref.shape[:2]) < 7:
        raise ShapeError(f"SSIM needs images of at least 7x7 pixels, got {ref.shape[0]}x{ref.shape[1]}.")
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            ref,
            dst,
            data_range=255,
            channel_axis=-1 if ref.ndim == 3 else None,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def _pair(reference, distorted) -> tuple[np.ndarray, np.ndarray]:
    ref = to_uint8_array(reference, "reference")
    dst = to_uint8_array(distorted, "distorted")
    if ref.ndim != dst.ndim:
        kinds = ["colour" if a.ndim == 3 else "greyscale" for a in (ref, dst)]
        raise ShapeError(
            f"the reference is {kinds[0]} but the distorted image is {kinds[1]}: an adversarial example "
            "has the channels of its original. Compare the clean image the model saw (smoothadv attack "
            "writes it as <name>_clean.png) with its adversarial image."
        )
    if ref.shape != dst.shape:
        raise ShapeError(
            f"reference has shape {ref.shape} but distorted has shape {dst.shape}; "
            "they must be the same size."
        )
    return ref, dst


@dataclass(frozen=True)
class QualityReport:
    """MAD with its two stages, plus PSNR (dB; ``inf`` for identical images) and SSIM."""

    mad: MadResult
    psnr: float
    ssim: float
    mad_upsampled_to: int | None = None

    def to_dict(self) -> dict:
        """Flat JSON-ready dict; an infinite PSNR becomes None (JSON has no infinity)."""
        return {
            **self.mad.to_dict(),
            "mad_channels": "luminance (MATLAB rgb2gray weights), as the original MAD",
            "mad_upsampled_to": self.mad_upsampled_to,
            "psnr": None if math.isinf(self.psnr) else self.psnr,
            "ssim": self.ssim,
        }


def quality_report(reference, distorted, *, scale: str = "2011",
                   upsample_to: int | str | None = None) -> QualityReport:
    """MAD (on ``scale``; of the luminance, like the original MAD), PSNR and SSIM (per colour channel) of
    one image pair (paths, arrays or tensors) of the same size and channels.

    Args:
        reference, distorted: the pair.
        scale: MAD scale, ``"2011"`` or ``"2010"``.
        upsample_to: side both images are upsampled to (nearest neighbour) for MAD only; ``"auto"``: the
            evaluation's rule (:func:`~smoothadv.perceptual.mad.default_upsample`, 4x below 34 pixels).

    Raises:
        ShapeError: the two images differ in size or channels.
    """
    ref, dst = _pair(reference, distorted)
    if upsample_to == "auto":
        upsample_to = default_upsample(*ref.shape[:2])
    if upsample_to is None:
        mad_result = mad(ref, dst, scale=scale)
    else:
        mad_result = mad_batch(_as_batch(ref), _as_batch(dst), scale=scale, upsample_to=upsample_to)[0]
    return QualityReport(mad=mad_result, psnr=psnr(ref, dst), ssim=ssim(ref, dst),
                         mad_upsampled_to=upsample_to)


def _as_batch(array: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, 3) uint8 -> (1, C, H, W) uint8 tensor."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return (tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1))[None]
