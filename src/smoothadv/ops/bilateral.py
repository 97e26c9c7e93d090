"""Bilateral filtering (plain and joint/guided), vectorised over pixels, differentiable.

Used by the adversarial magnification of Appendix 1 (eq. 22), where the range kernel sees all colour
channels at once, and by the bilateral-filter defence of section 5.5, which filters each channel on its
own. The output at pixel p is

    y_p = sum_q s(p - q) r(g_p, g_q) x_q / sum_q s(p - q) r(g_p, g_q),

with a Gaussian spatial kernel ``s(d) = exp(-|d|^2 / (2 spatial_sigma^2))`` over the square window
``|d|_inf <= radius``, a Gaussian range kernel ``r(a, b) = exp(-|a - b|^2 / (2 range_sigma^2))`` on the
guide ``g`` (the image itself unless given), and sums restricted to pixels inside the image: at the borders
the window is truncated and the weights renormalised, so no padding value ever enters the result.

The loop runs over the ``(2 radius + 1)^2`` window offsets, each step vectorised over all pixels, so memory
stays a few image-sized buffers (a 299x299x3 image with radius 12 needs a few megabytes). The weight of a
pixel pair is symmetric, so each unordered pair is computed once and used in both directions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from smoothadv.core.errors import ConfigError, ShapeError
from smoothadv.core.validation import check_image_batch, check_positive

#: Radius factor: a window of radius ``ceil(2.326 * sigma)`` holds 98% of a 1-D Gaussian's mass.
RADIUS_FACTOR = 2.326


def default_radius(spatial_sigma: float) -> int:
    """Window radius ``ceil(2.326 * spatial_sigma)`` used when none is given."""
    return int(math.ceil(RADIUS_FACTOR * spatial_sigma))


def bilateral_filter(
    image: torch.Tensor,
    *,
    spatial_sigma: float,
    range_sigma: float,
    radius: int | None = None,
    guide: torch.Tensor | None = None,
    joint_range: bool = True,
) -> torch.Tensor:
    """Bilateral (or joint/guided bilateral) filter of a batch of images.

    Args:
        image: (B, C, H, W) floating-point tensor to filter (any value range).
        spatial_sigma: standard deviation of the spatial Gaussian, in pixels.
        range_sigma: standard deviation of the range Gaussian, in the guide's units (0.2 on [0, 1] images).
        radius: half-width of the square window (``2 radius + 1`` pixels per side); default
            ``ceil(2.326 * spatial_sigma)``.
        guide: (B, C', H, W) image whose values drive the range kernel; default ``image`` itself.
        joint_range: True: one range weight per pixel pair from the Euclidean distance over all guide
            channels (colour bilateral filter). False: a separate range weight per channel, each channel of
            the guide steering the same channel of the image (C' must equal C, or be 1).

    Returns:
        (B, C, H, W) filtered image, same dtype and device as ``image``; differentiable in ``image`` and
        ``guide``.

    Raises:
        InputError: not a floating-point tensor, or bad ``radius``.
        ShapeError: not 4-D, or the guide does not match the image.
        NonFiniteError: NaN or inf values.
        ConfigError: non-positive sigmas.
    """
    check_image_batch(image, "image", check_range=False)
    check_positive(spatial_sigma, "spatial_sigma")
    check_positive(range_sigma, "range_sigma")
    if radius is None:
        radius = default_radius(spatial_sigma)
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ConfigError(f"radius must be an integer >= 0; got {radius!r}.")
    if guide is None:
        guide = image
    else:
        check_image_batch(guide, "guide", check_range=False)
        b, _, h, w = image.shape
        if guide.shape[0] != b or guide.shape[2:] != image.shape[2:]:
            raise ShapeError(
                f"guide has shape {tuple(guide.shape)} but image has shape {tuple(image.shape)}; they must "
                f"agree in batch size and spatial size (B={b}, H={h}, W={w})."
            )
        if guide.dtype != image.dtype or guide.device != image.device:
            guide = guide.to(dtype=image.dtype, device=image.device)
    if not joint_range and guide.shape[1] not in (1, image.shape[1]):
        raise ShapeError(
            f"with joint_range=False the guide needs 1 or {image.shape[1]} channels (one per image channel), "
            f"got {guide.shape[1]}."
        )
    return _bilateral(image, guide, float(spatial_sigma), float(range_sigma), radius, joint_range)


def _half_offsets(radius: int, height: int, width: int) -> list[tuple[int, int]]:
    """Window offsets ``(dy, dx)`` of one half-plane (the other half is their negation), origin excluded."""
    offsets = []
    for dy in range(0, min(radius, height - 1) + 1):
        for dx in range(-min(radius, width - 1), min(radius, width - 1) + 1):
            if dy > 0 or dx > 0:
                offsets.append((dy, dx))
    return offsets


def _pairs(radius: int, height: int, width: int):
    """For each half-plane offset d: (dy, dx, p-slices, q-slices) of the pixel pairs (p, q = p + d)."""
    for dy, dx in _half_offsets(radius, height, width):
        p_index = (..., slice(0, height - dy), slice(max(0, -dx), width - max(0, dx)))
        q_index = (..., slice(dy, height), slice(max(0, dx), width - max(0, -dx)))
        yield dy, dx, p_index, q_index


def _pair_weight(guide, p_index, q_index, dy, dx, inv_two_sr2, inv_two_ss2, joint_range):
    """Weights s(d) r(g_p, g_q) of the pairs of one offset, and the guide difference g_p - g_q."""
    diff = guide[p_index] - guide[q_index]
    distance = diff * diff
    if joint_range:
        distance = distance.sum(dim=1, keepdim=True)
    # The spatial weight folded into the exponent: exp(-|d|^2 / 2ss^2 - dist / 2sr^2).
    return torch.exp(distance * -inv_two_sr2 - (dy * dy + dx * dx) * inv_two_ss2), diff


def _forward(image, guide, spatial_sigma, range_sigma, radius, joint_range):
    """The filter without autograd: returns the output and the weight sums (denominators)."""
    batch, channels, height, width = image.shape
    inv_two_sr2 = 1.0 / (2.0 * range_sigma**2)
    inv_two_ss2 = 1.0 / (2.0 * spatial_sigma**2)
    # The centre pixel has weight s(0) r(0) = 1 in every case.
    numerator = image.clone()
    weight_channels = 1 if joint_range else max(channels, guide.shape[1])
    denominator = torch.ones((batch, weight_channels, height, width), dtype=image.dtype, device=image.device)
    for dy, dx, p_index, q_index in _pairs(radius, height, width):
        weight, _ = _pair_weight(guide, p_index, q_index, dy, dx, inv_two_sr2, inv_two_ss2, joint_range)
        numerator[p_index].addcmul_(weight, image[q_index])
        numerator[q_index].addcmul_(weight, image[p_index])
        denominator[p_index].add_(weight)
        denominator[q_index].add_(weight)
    return numerator / denominator, denominator


class _BilateralFunction(torch.autograd.Function):
    """Bilateral filter with a hand-written backward that recomputes the weights offset by offset.

    With ``y_p = N_p / D_p``, ``N_p = sum_q w_pq x_q``, ``D_p = sum_q w_pq`` and upstream gradient ``G``:
    ``dL/dN_p = A_p = G_p / D_p`` and ``dL/dD_p = B_p = -G_p y_p / D_p`` (summed over the channels that
    share one weight). As ``w_pq = w_qp``, ``dL/dx_q = sum_p w_pq A_p`` (the same filter applied to ``A``)
    and each unordered pair has ``dL/dw_pq = A_p x_q + A_q x_p + B_p + B_q``, which reaches the guide
    through ``dw_pq / dg_p = -w_pq (g_p - g_q) / range_sigma^2``. Memory stays a few image-sized buffers.
    """

    @staticmethod
    def forward(ctx, image, guide, spatial_sigma, range_sigma, radius, joint_range):
        output, denominator = _forward(image, guide, spatial_sigma, range_sigma, radius, joint_range)
        ctx.save_for_backward(image, guide, output, denominator)
        ctx.settings = (spatial_sigma, range_sigma, radius, joint_range)
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        image, guide, output, denominator = ctx.saved_tensors
        spatial_sigma, range_sigma, radius, joint_range = ctx.settings
        need_image, need_guide = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        _, _, height, width = image.shape
        inv_two_sr2 = 1.0 / (2.0 * range_sigma**2)
        inv_two_ss2 = 1.0 / (2.0 * spatial_sigma**2)
        a = grad_output / denominator
        b = -(grad_output * output) / denominator
        grad_image = a.clone() if need_image else None
        grad_guide = torch.zeros_like(guide) if need_guide else None
        for dy, dx, p_index, q_index in _pairs(radius, height, width):
            weight, diff = _pair_weight(
                guide, p_index, q_index, dy, dx, inv_two_sr2, inv_two_ss2, joint_range
            )
            if need_image:
                grad_image[p_index].addcmul_(weight, a[q_index])
                grad_image[q_index].addcmul_(weight, a[p_index])
            if need_guide:
                coef = a[p_index] * image[q_index] + a[q_index] * image[p_index] + b[p_index] + b[q_index]
                if coef.shape[1] != weight.shape[1]:  # one weight shared by several channels
                    coef = coef.sum(dim=1, keepdim=True)
                step = (coef * weight * (2.0 * inv_two_sr2)) * diff
                grad_guide[p_index].sub_(step)
                grad_guide[q_index].add_(step)
        return grad_image, grad_guide, None, None, None, None


def _bilateral(image, guide, spatial_sigma, range_sigma, radius, joint_range) -> torch.Tensor:
    if torch.is_grad_enabled() and (image.requires_grad or guide.requires_grad):
        return _BilateralFunction.apply(image, guide, spatial_sigma, range_sigma, radius, joint_range)
    with torch.no_grad():
        return _forward(image, guide, spatial_sigma, range_sigma, radius, joint_range)[0]


class BilateralFilter(nn.Module):
    """Module form of :func:`bilateral_filter` (e.g. as a defence in front of a classifier).

    Args:
        spatial_sigma: spatial Gaussian standard deviation in pixels.
        range_sigma: range Gaussian standard deviation in the guide's units.
        radius: window half-width; default ``ceil(2.326 * spatial_sigma)``.
        joint_range: one range weight over all channels (True) or one per channel (False).

    Shape:
        input (B, C, H, W), optional guide (B, C', H, W) -> output (B, C, H, W).
    """

    def __init__(
        self,
        spatial_sigma: float,
        range_sigma: float,
        radius: int | None = None,
        joint_range: bool = True,
    ) -> None:
        super().__init__()
        check_positive(spatial_sigma, "spatial_sigma")
        check_positive(range_sigma, "range_sigma")
        self.spatial_sigma = float(spatial_sigma)
        self.range_sigma = float(range_sigma)
        self.radius = default_radius(spatial_sigma) if radius is None else radius
        self.joint_range = joint_range

    def forward(self, image: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        return bilateral_filter(
            image,
            spatial_sigma=self.spatial_sigma,
            range_sigma=self.range_sigma,
            radius=self.radius,
            guide=guide,
            joint_range=self.joint_range,
        )

    def extra_repr(self) -> str:
        return (
            f"spatial_sigma={self.spatial_sigma}, range_sigma={self.range_sigma}, radius={self.radius}, "
            f"joint_range={self.joint_range}"
        )
