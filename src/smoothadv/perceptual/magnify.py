"""Adversarial magnification (Appendix 1, eq. 22): make a perturbation visible from a single image.

    mag(x) = (x - mu(x)) / (beta sigma_x(x) + (1 - beta) sigma_Omega(x))                        (22)

``mu`` is the bilateral filter of ``x`` (the local mean), ``sigma_x`` the square root of the bilateral
filter of the squared residual ``(x - mu)^2`` guided by ``x`` (a local RMS), and ``sigma_Omega`` the global
standard deviation of each channel of ``x``, as Appendix 1 says and the authors' code computes. Every
channel is filtered on its own, but the range kernel uses one photometric distance per pixel pair, the
Euclidean distance over all channels. Following the authors' experiments: range sigma 0.2 on [0, 1]
values, spatial sigma 5 (Fig. 1), window radius ``ceil(2.326 sigma)`` truncated and renormalised at the
borders, ``beta = 0.8``. Images shown side by side are then mapped to [0, 1] with ONE shared min-max
stretch (:func:`stretch_together`), so that their magnified noise levels can be compared.

Natural images are locally smooth, so the magnified original shows mostly edges and texture; additive
high-frequency perturbations stand out as noise in flat regions, while a perturbation that follows the
image's own smoothness (sC&W) stays invisible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from smoothadv.core.errors import ConfigError, InputError, ShapeError
from smoothadv.core.validation import check_finite, check_keywords, check_positive
from smoothadv.ops.bilateral import bilateral_filter

#: Spatial sigma of the paper's Fig. 1 (the authors used 3 in other experiments).
DEFAULT_SPATIAL_SIGMA = 5.0
DEFAULT_RANGE_SIGMA = 0.2
DEFAULT_BETA = 0.8


@check_keywords
def magnify(
    image: torch.Tensor,
    *,
    beta: float = DEFAULT_BETA,
    spatial_sigma: float = DEFAULT_SPATIAL_SIGMA,
    range_sigma: float = DEFAULT_RANGE_SIGMA,
    radius: int | None = None,
) -> torch.Tensor:
    """Adversarial magnification of eq. (22), before any display stretch.

    Args:
        image: (C, H, W) or (B, C, H, W) image(s), values in [0, 1] (the range sigma refers to that scale).
        beta: weight in [0, 1] of the local term in the denominator; ``1 - beta`` goes to the global term.
        spatial_sigma: spatial standard deviation of the bilateral filters, in pixels.
        range_sigma: range standard deviation of the bilateral filters, on [0, 1] values.
        radius: window half-width; default ``ceil(2.326 * spatial_sigma)``.

    Returns:
        magnified image of the same shape, dtype and device (unbounded, roughly zero-mean). Where the
        denominator vanishes (e.g. a constant image) the output is 0. Not differentiable (no graph kept).

    Raises:
        InputError / ShapeError / NonFiniteError: bad image; ConfigError: bad parameters.
    """
    if not isinstance(image, torch.Tensor):
        raise InputError(
            f"image must be a torch.Tensor of shape (C, H, W) or (B, C, H, W), got {type(image)}."
        )
    if image.dim() not in (3, 4):
        raise ShapeError(f"image must have shape (C, H, W) or (B, C, H, W), got {tuple(image.shape)}.")
    if not image.is_floating_point():
        raise InputError(
            f"image must be floating point with values in [0, 1], got {image.dtype}; use x.float() / 255."
        )
    if image.numel() == 0:
        raise ShapeError(f"image is empty (shape {tuple(image.shape)}).")
    check_finite(image, "image")
    check_magnify_parameters(
        beta=beta,
        spatial_sigma=spatial_sigma,
        range_sigma=range_sigma,
        radius=radius,
    )

    batch = image.detach().unsqueeze(0) if image.dim() == 3 else image.detach()
    with torch.no_grad():
        filter_args = {"spatial_sigma": spatial_sigma, "range_sigma": range_sigma, "radius": radius}
        residual = batch - bilateral_filter(batch, **filter_args)
        # Rounding noise of the filter (a few ulps) is not a signal: a constant image must magnify to 0.
        tolerance = 64 * torch.finfo(batch.dtype).eps * max(1.0, float(batch.abs().max()))
        residual = torch.where(residual.abs() <= tolerance, torch.zeros_like(residual), residual)
        squared = residual * residual
        local = bilateral_filter(squared, guide=batch, **filter_args).clamp_min(0).sqrt()
        global_scale = batch.std(dim=(2, 3), keepdim=True, unbiased=False)  # sigma_Omega, per channel
        denominator = beta * local + (1.0 - beta) * global_scale
        positive = denominator > 0
        out = torch.where(positive, residual / torch.where(positive, denominator, 1.0), 0.0)
    return out[0] if image.dim() == 3 else out


@check_keywords
def check_magnify_parameters(
    *,
    beta: float = DEFAULT_BETA,
    spatial_sigma: float = DEFAULT_SPATIAL_SIGMA,
    range_sigma: float = DEFAULT_RANGE_SIGMA,
    radius: int | None = None,
) -> None:
    """Raise :class:`ConfigError` unless the parameters of :func:`magnify` are valid."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
        raise ConfigError(f"beta must be a number in [0, 1]; got {beta!r}.")
    check_positive(spatial_sigma, "spatial_sigma")
    check_positive(range_sigma, "range_sigma")
    if radius is not None and (isinstance(radius, bool) or not isinstance(radius, int) or radius < 0):
        raise ConfigError(f"radius must be None or an integer >= 0; got {radius!r}.")


def stretch_together(images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Map several images to [0, 1] with ONE shared min-max (so their contrasts stay comparable).

    Args:
        images: tensors of any shapes (e.g. magnified images).

    Returns:
        list of tensors in [0, 1], ``(x - lo) / (hi - lo)`` with lo/hi the minimum/maximum over all of them;
        all zeros when every value is the same.
    """
    images = list(images)
    if not images:
        raise InputError("stretch_together needs at least one image.")
    for k, item in enumerate(images):
        if not isinstance(item, torch.Tensor) or not item.is_floating_point() or item.numel() == 0:
            raise InputError(f"images[{k}] must be a non-empty floating-point tensor.")
        check_finite(item, f"images[{k}]")
    lo = min(float(item.min()) for item in images)
    hi = max(float(item.max()) for item in images)
    if hi <= lo:
        return [torch.zeros_like(item) for item in images]
    return [((item - lo) / (hi - lo)).clamp(0, 1) for item in images]


def magnify_together(images: Sequence[torch.Tensor], **magnify_kwargs) -> list[torch.Tensor]:
    """Magnify each image (:func:`magnify`) and stretch all of them to [0, 1] together.

    Args:
        images: (C, H, W) or (B, C, H, W) tensors in [0, 1]; sizes may differ.
        **magnify_kwargs: ``beta``, ``spatial_sigma``, ``range_sigma``, ``radius``.

    Returns:
        the magnified images in [0, 1], same shapes, one shared stretch.
    """
    return stretch_together([magnify(image, **magnify_kwargs) for image in images])


class Magnify(nn.Module):
    """Module form of :func:`magnify` (unstretched output). Shape: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(
        self,
        beta: float = DEFAULT_BETA,
        spatial_sigma: float = DEFAULT_SPATIAL_SIGMA,
        range_sigma: float = DEFAULT_RANGE_SIGMA,
        radius: int | None = None,
    ) -> None:
        super().__init__()
        self.kwargs = {
            "beta": beta,
            "spatial_sigma": spatial_sigma,
            "range_sigma": range_sigma,
            "radius": radius,
        }

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return magnify(image, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.kwargs.items())
