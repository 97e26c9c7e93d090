"""Most Apparent Distortion (MAD), Larson & Chandler, J. Electronic Imaging 19(1), 2010.

MAD is the full-reference perceptual score of section 5.1 and Fig. 4: lower is better, identical images
score 0. It mixes two strategies of the visual system:

* detection (``d_detect``): for nearly invisible distortions, a contrast-sensitivity-filtered lightness
  image is compared block by block with the error; blocks where the error contrast exceeds the masking
  contrast of the reference count, weighted by the local mean squared error;
* appearance (``d_appear``): for clearly visible distortions, the block statistics (standard deviation,
  skewness, kurtosis) of 20 log-Gabor sub-band magnitudes are compared;

and combines them as ``MAD = d_detect^a * d_appear^(1 - a)`` with ``a = 1 / (1 + b1 d_detect^b2)``.

This is our own vectorised NumPy implementation of the computation of the original MATLAB release:
16x16 blocks every 4 pixels, the lightness lookup in which 255 maps like 254, a contrast sensitivity
function in the Fourier domain, symmetric padding for the local MSE, the 16-pixel border crop. It
reproduces the original's values on the reference pairs in ``tests/data/mad`` (256x256 and 299x299) to
1e-9 relative.

Two scales exist. The 2011 release multiplies ``d_detect`` by 200 (``scale="2011"``, the default for new
work); the April-2010 code that the paper's authors ran has no such factor (``scale="2010"``): the paper's
Fig. 4 scores ("below 0.1") are on that scale.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from smoothadv.core.errors import InputError, ShapeError
from smoothadv.core.validation import check_choice
from smoothadv.perceptual._inputs import to_gray_uint8

SCALES = ("2011", "2010")
#: Smallest side MAD accepts: the 16-pixel border crop on both sides leaves nothing below it.
MIN_SIDE = 34

_BLOCK = 16
_STEP = 4
_CROP = 16
_LIGHTNESS_K = 0.02874
_LUMINANCE_THRESHOLD = 0.5
_CONTRAST_FLOOR = -5.0
_CSF_CYCLES = 32
_GABOR_WAVELENGTHS = (3.0, 9.0, 27.0, 81.0, 243.0)
_GABOR_SCALE_WEIGHTS = np.array([0.5, 0.75, 1.0, 5.0, 6.0]) / 13.25
_GABOR_ORIENTATIONS = 4
_GABOR_SIGMA_ON_F = 0.55
_GABOR_THETA_SIGMA = math.pi / 6
_THRESH1, _THRESH2 = 2.55, 3.35
BETA1 = math.exp(-_THRESH1 / _THRESH2)
BETA2 = 1.0 / (math.log(10.0) * _THRESH2)


@dataclass(frozen=True)
class MadResult:
    """A MAD score with its two stages.

    Attributes:
        mad: the combined score ``d_detect^a * d_appear^(1 - a)`` (0 for identical images).
        d_detect: detection-stage distortion (times 200 on the 2011 scale).
        d_appear: appearance-stage distortion (the same on both scales).
        scale: ``"2011"`` (release with the factor 200) or ``"2010"`` (April-2010 code, paper's Fig. 4).
    """

    mad: float
    d_detect: float
    d_appear: float
    scale: str

    @property
    def alpha(self) -> float:
        """Weight of the detection stage, ``1 / (1 + beta1 d_detect^beta2)``."""
        return _alpha(self.d_detect)

    def to_dict(self) -> dict:
        return asdict(self)


def default_upsample(height: int, width: int) -> int | None:
    """The side images of ``height`` x ``width`` are upsampled to before MAD: 4x the longer side when the
    shorter one is below :data:`MIN_SIDE` (MNIST 28x28 -> 112x112), else None (no upsampling)."""
    return 4 * max(height, width) if min(height, width) < MIN_SIDE else None


def mad(reference, distorted, *, scale: str = "2011") -> MadResult:
    """Most Apparent Distortion between a reference image and a distorted version of it.

    Args:
        reference: the undistorted image, as a file path, a NumPy array ((H, W) grey or (H, W, 3) RGB) or a
            tensor ((H, W), (C, H, W) or (1, C, H, W) with C = 1 or 3). uint8 values are used as they are;
            floating-point values must lie in [0, 1] and are quantised to 8 bits as ``round(255 x)``.
            Colour images are converted to grey with MATLAB's ``rgb2gray`` weights, rounded.
        distorted: the distorted image, in any of the same forms, of the same size.
        scale: ``"2011"`` (release, ``d_detect`` times 200) or ``"2010"`` (April-2010, the paper's scale).

    Returns:
        :class:`MadResult` with ``mad``, ``d_detect``, ``d_appear`` and ``scale``.

    Raises:
        DataError: a file is missing or not an image.
        InputError: an unsupported type or layout; RangeError for floats outside [0, 1]; NonFiniteError.
        ShapeError: the two images differ in size, or a side is below 34 pixels.
        ConfigError: unknown ``scale``.
    """
    scale = str(scale)
    check_choice(scale, SCALES, "scale")
    ref = to_gray_uint8(reference, "reference")
    dst = to_gray_uint8(distorted, "distorted")
    if ref.shape != dst.shape:
        raise ShapeError(
            f"reference is {ref.shape[0]}x{ref.shape[1]} but distorted is {dst.shape[0]}x{dst.shape[1]} "
            "(height x width); MAD compares images of the same size."
        )
    if min(ref.shape) < MIN_SIDE:
        raise ShapeError(
            f"MAD needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels (it crops a 16-pixel border), got "
            f"{ref.shape[0]}x{ref.shape[1]}; upsample small images first, e.g. "
            "mad_batch(..., upsample_to=112) for MNIST (`smoothadv mad RESULTS_FOLDER` does it itself)."
        )
    return _mad_gray(ref.astype(np.float64), dst.astype(np.float64), scale)


def mad_batch(
    references: torch.Tensor,
    distorteds: torch.Tensor,
    *,
    scale: str = "2011",
    upsample_to: int | tuple[int, int] | None = None,
) -> list[MadResult]:
    """MAD of each image pair of two batches.

    Args:
        references: (B, C, H, W) images in [0, 1], C = 1 or 3.
        distorteds: (B, C, H, W) images in [0, 1], same shape.
        scale: ``"2011"`` or ``"2010"`` (see :func:`mad`).
        upsample_to: None, or a size ``S`` or ``(S_h, S_w)``: both images are first resized to it with
            nearest-neighbour interpolation (each pixel becomes a block; use an integer multiple of the size,
            e.g. 112 = 4 x 28 for MNIST, whose 28x28 images are below MAD's 34-pixel minimum). The score then
            refers to the images viewed at that size.

    Returns:
        one :class:`MadResult` per pair, in batch order.
    """
    for name, batch in (("references", references), ("distorteds", distorteds)):
        if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
            shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ShapeError(f"{name} must be a (B, C, H, W) tensor, got {shape}.")
    if references.shape != distorteds.shape:
        raise ShapeError(
            f"references has shape {tuple(references.shape)} but distorteds has shape "
            f"{tuple(distorteds.shape)}; they must match."
        )
    if upsample_to is not None:
        size = (upsample_to, upsample_to) if isinstance(upsample_to, int) else tuple(upsample_to)
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise InputError(f"upsample_to must be a positive int or a pair of them, got {upsample_to!r}.")
        references = _upsample_nearest(references, size)
        distorteds = _upsample_nearest(distorteds, size)
    return [mad(r, d, scale=scale) for r, d in zip(references, distorteds, strict=True)]


def _upsample_nearest(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if not batch.is_floating_point():
        batch = batch.float() / 255.0
    return torch.nn.functional.interpolate(batch.detach().cpu().double(), size=size, mode="nearest-exact")


# ------------------------------------------------------------------------------------------ computation


def _alpha(d_detect: float) -> float:
    return 1.0 / (1.0 + BETA1 * d_detect**BETA2)


def _mad_gray(ref: np.ndarray, dst: np.ndarray, scale: str) -> MadResult:
    d_detect = _detection(ref, dst)
    if scale == "2011":
        d_detect *= 200.0
    d_appear = _appearance(ref, dst)
    alpha = _alpha(d_detect)
    score = d_detect**alpha * d_appear ** (1.0 - alpha)
    return MadResult(mad=float(score), d_detect=float(d_detect), d_appear=float(d_appear), scale=scale)


def _blocks(image: np.ndarray, size: int) -> np.ndarray:
    """(n_rows, n_cols, size * size) view of the size x size blocks with top-left corners every 4 pixels."""
    view = sliding_window_view(image, (size, size))[::_STEP, ::_STEP]
    return view.reshape(view.shape[0], view.shape[1], size * size)


def _block_grid(image: np.ndarray) -> np.ndarray:
    """The 16x16 blocks MAD scores (top-left corners 0, 4, ..., up to H - 16)."""
    height, width = image.shape
    n_rows, n_cols = (height - _BLOCK) // _STEP + 1, (width - _BLOCK) // _STEP + 1
    return _blocks(image, _BLOCK)[:n_rows, :n_cols]


def _fill_cells(stat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Full-size map where each block's value fills the 4x4 cell at its top-left corner, 0 elsewhere."""
    out = np.zeros(shape)
    cells = np.repeat(np.repeat(stat, _STEP, axis=0), _STEP, axis=1)
    out[: cells.shape[0], : cells.shape[1]] = cells
    return out


def _crop(values: np.ndarray) -> np.ndarray:
    height, width = values.shape
    return values[_CROP : height - _CROP - 1, _CROP : width - _CROP - 1]


def _lightness(gray: np.ndarray) -> np.ndarray:
    """Perceived lightness ``0.02874 I^(2.2/3)``; as in the original lookup table, 255 maps like 254."""
    return _LIGHTNESS_K * np.minimum(gray, 254.0) ** (2.2 / 3.0)


def _csf(height: int, width: int) -> np.ndarray:
    """Contrast sensitivity function on the centred frequency grid (Mannos-Sakrison with oblique effect)."""
    u = np.arange(height) - height / 2 + 0.5
    v = np.arange(width) - width / 2 + 0.5
    z = (u[:, None] + 1j * v[None, :]) * (2.0 * _CSF_CYCLES / width)
    freq = np.abs(z) / (0.15 * np.cos(4.0 * np.angle(z)) + 0.85)
    csf = 2.6 * (0.0192 + 0.114 * freq) * np.exp(-((0.114 * freq) ** 1.1))
    csf[freq < 7.8909] = 0.9809
    return csf


def _csf_filter(image: np.ndarray, csf: np.ndarray) -> np.ndarray:
    spectrum = np.fft.fftshift(np.fft.fft2(image)) * csf
    return np.real(np.fft.ifft2(np.fft.ifftshift(spectrum)))


def _detection(ref: np.ndarray, dst: np.ndarray) -> float:
    """Detection-stage distortion (without the 2011 factor 200)."""
    height, width = ref.shape
    csf = _csf(height, width)
    ref_lightness = _lightness(ref)
    filtered_ref = _csf_filter(ref_lightness, csf)
    filtered_err = _csf_filter(_lightness(dst) - ref_lightness, csf)

    ref_blocks = _block_grid(filtered_ref)
    n_rows, n_cols = ref_blocks.shape[:2]
    mean = ref_blocks.mean(axis=2)
    std_err = _block_grid(filtered_err).std(axis=2, ddof=1)
    std_ref = _min_substd(filtered_ref, n_rows, n_cols)

    with np.errstate(divide="ignore", invalid="ignore"):
        c_ref = np.log(std_ref / mean)
        c_err = np.log(std_err / mean)
    dark = mean < _LUMINANCE_THRESHOLD
    c_ref[dark] = 0.0
    c_err[dark] = 0.0
    visible = np.zeros_like(mean)
    masked = (c_ref > _CONTRAST_FLOOR) & (c_err > c_ref)
    visible[masked] = (c_err - c_ref)[masked]
    unmasked = (c_ref <= _CONTRAST_FLOOR) & (c_err > _CONTRAST_FLOOR)
    visible[unmasked] = (c_err + (-_CONTRAST_FLOOR))[unmasked]

    visibility = _fill_cells(visible, ref.shape)
    distortion_map = _crop(visibility * _local_mse(ref, dst))
    return float(np.sqrt(np.mean(distortion_map**2)))


def _min_substd(image: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """Per 16x16 block, the smallest sample std of its 8x8 sub-blocks at offsets (0,0), (0,4), (4,0), (4,4).

    As in the original, the sub-blocks shifted by 4 rows (columns) take part only where the probe
    ``i + 5 <= H - 16`` (``j + 5 <= W - 16``) on the block's top-left corner (i, j) holds.
    """
    height, width = image.shape
    sub = _blocks(image, 8).std(axis=2, ddof=1)
    rows = np.arange(n_rows) * _STEP
    cols = np.arange(n_cols) * _STEP
    best = sub[:n_rows, :n_cols].copy()
    down = (rows + 5 <= height - _BLOCK)[:, None]
    right = (cols + 5 <= width - _BLOCK)[None, :]
    best = np.where(down, np.minimum(best, sub[1 : n_rows + 1, :n_cols]), best)
    best = np.where(right, np.minimum(best, sub[:n_rows, 1 : n_cols + 1]), best)
    best = np.where(down & right, np.minimum(best, sub[1 : n_rows + 1, 1 : n_cols + 1]), best)
    return best


def _local_mse(ref: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Mean of (ref - dst)^2 over the 16x16 window of rows p-7..p+8, columns q-7..q+8 (symmetric padding)."""
    squared = np.pad((ref - dst) ** 2, ((7, 8), (7, 8)), mode="symmetric")
    integral = np.zeros((squared.shape[0] + 1, squared.shape[1] + 1))
    integral[1:, 1:] = squared.cumsum(axis=0).cumsum(axis=1)
    total = integral[16:, 16:] - integral[:-16, 16:] - integral[16:, :-16] + integral[:-16, :-16]
    return total / (_BLOCK * _BLOCK)


def _log_gabor_bank(height: int, width: int) -> list[tuple[int, np.ndarray]]:
    """The 20 log-Gabor filters (scale index, centred frequency response), finest scale first."""
    x = (np.arange(width) - width / 2) / (width / 2)
    y = (np.arange(height) - height / 2) / (height / 2)
    x, y = np.meshgrid(x, y)
    rho = np.sqrt(x**2 + y**2)
    centre = (math.floor(height / 2 + 1 + 0.5) - 1, math.floor(width / 2 + 1 + 0.5) - 1)
    rho[centre] = 1.0
    theta = np.arctan2(-y, x)
    sin_t, cos_t = np.sin(theta), np.cos(theta)
    bank = []
    for s, wavelength in enumerate(_GABOR_WAVELENGTHS):
        radial = np.exp(
            -((np.log(rho) - math.log(2.0 / wavelength)) ** 2) / (2 * math.log(_GABOR_SIGMA_ON_F) ** 2)
        )
        radial[centre] = 0.0
        for o in range(_GABOR_ORIENTATIONS):
            angle = o * math.pi / _GABOR_ORIENTATIONS
            d_sin = sin_t * math.cos(angle) - cos_t * math.sin(angle)
            d_cos = cos_t * math.cos(angle) + sin_t * math.sin(angle)
            d_theta = np.abs(np.arctan2(d_sin, d_cos))
            spread = np.exp(-(d_theta**2) / (2 * _GABOR_THETA_SIGMA**2))
            bank.append((s, radial * spread))
    return bank


def _block_moments(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per 16x16 block: sample std, skewness, kurtosis (the last two with the population std; 0 if flat)."""
    blocks = _block_grid(image)
    centred = blocks - blocks.mean(axis=2, keepdims=True)
    squared = centred * centred
    m2 = np.mean(squared, axis=2)
    m3 = np.mean(squared * centred, axis=2)
    m4 = np.mean(squared * squared, axis=2)
    n = blocks.shape[2]
    std = np.sqrt(m2 * n / (n - 1))
    population_std = np.sqrt(m2)
    flat = population_std == 0
    safe = np.where(flat, 1.0, population_std)
    skew = np.where(flat, 0.0, m3 / safe**3)
    kurt = np.where(flat, 0.0, m4 / safe**4)
    return std, skew, kurt


def _appearance(ref: np.ndarray, dst: np.ndarray) -> float:
    """Appearance-stage distortion: log-Gabor sub-band statistics differences, block by block."""
    height, width = ref.shape
    ref_spectrum = np.fft.fft2(ref)
    dst_spectrum = np.fft.fft2(dst)
    eta = None
    for s, gabor in _log_gabor_bank(height, width):
        # The original swaps the quadrants of the centred filter with fftshift, not ifftshift. Both are the
        # same for even sides; for an odd side n, fftshift moves index (n + 1) / 2 (the centre pixel, where
        # the filter is 0) to the zero frequency, whereas ifftshift would move index (n - 1) / 2 there and
        # let the coarse filters pass part of the mean.
        kernel = np.fft.fftshift(gabor)
        ref_std, ref_skew, ref_kurt = _block_moments(np.abs(np.fft.ifft2(ref_spectrum * kernel)))
        dst_std, dst_skew, dst_kurt = _block_moments(np.abs(np.fft.ifft2(dst_spectrum * kernel)))
        term = _GABOR_SCALE_WEIGHTS[s] * (
            np.abs(ref_std - dst_std) + 2.0 * np.abs(ref_skew - dst_skew) + np.abs(ref_kurt - dst_kurt)
        )
        eta = term if eta is None else eta + term
    eta_map = _crop(_fill_cells(eta, ref.shape))
    return float(np.sqrt(np.mean(eta_map**2)))
