"""Tests of smoothadv.ops.bilateral: the vectorised bilateral filter against a per-pixel loop, gradients,
errors."""

from __future__ import annotations

import math

import pytest
import torch

from smoothadv.core.errors import ConfigError, InputError, NonFiniteError, ShapeError
from smoothadv.ops.bilateral import BilateralFilter, bilateral_filter, default_radius


def slow_bilateral(image, guide, spatial_sigma, range_sigma, radius, joint_range):
    """Obviously-correct reference: one pixel at a time, window clipped to the image."""
    batch, channels, height, width = image.shape
    out = torch.zeros_like(image)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                num = torch.zeros(channels, dtype=image.dtype)
                den = torch.zeros(1 if joint_range else channels, dtype=image.dtype)
                for k in range(max(0, i - radius), min(height, i + radius + 1)):
                    for m in range(max(0, j - radius), min(width, j + radius + 1)):
                        spatial = math.exp(-((k - i) ** 2 + (m - j) ** 2) / (2 * spatial_sigma**2))
                        dist = (guide[b, :, i, j] - guide[b, :, k, m]) ** 2
                        if joint_range:
                            dist = dist.sum().reshape(1)
                        w = spatial * torch.exp(-dist / (2 * range_sigma**2))
                        num += w * image[b, :, k, m]
                        den += w
                out[b, :, i, j] = num / den
    return out


@pytest.mark.parametrize("joint_range", [True, False])
@pytest.mark.parametrize("radius", [1, 3, 15])
def test_matches_per_pixel_loop(joint_range, radius):
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 9, 11, dtype=torch.float64, generator=gen)
    fast = bilateral_filter(image, spatial_sigma=1.7, range_sigma=0.2, radius=radius, joint_range=joint_range)
    slow = slow_bilateral(image, image, 1.7, 0.2, radius, joint_range)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)


def test_guided_matches_per_pixel_loop():
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(1, 2, 7, 8, dtype=torch.float64, generator=gen)
    guide = torch.rand(1, 3, 7, 8, dtype=torch.float64, generator=gen)
    fast = bilateral_filter(image, spatial_sigma=2.0, range_sigma=0.3, radius=3, guide=guide)
    slow = slow_bilateral(image, guide, 2.0, 0.3, 3, True)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)


def test_per_channel_with_single_channel_guide():
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 6, 7, dtype=torch.float64, generator=gen)
    guide = torch.rand(1, 1, 6, 7, dtype=torch.float64, generator=gen)
    fast = bilateral_filter(
        image, spatial_sigma=1.0, range_sigma=0.25, radius=2, guide=guide, joint_range=False
    )
    slow = slow_bilateral(image, guide.expand(1, 3, 6, 7), 1.0, 0.25, 2, False)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)


def test_default_radius_and_radius_zero_is_identity():
    assert default_radius(5) == 12
    assert default_radius(3) == 7
    assert default_radius(0.5) == 2
    image = torch.rand(1, 3, 5, 5)
    torch.testing.assert_close(bilateral_filter(image, spatial_sigma=1, range_sigma=0.1, radius=0), image)


def test_constant_image_is_unchanged_and_edges_are_kept():
    constant = torch.full((1, 3, 12, 10), 0.37)
    out = bilateral_filter(constant, spatial_sigma=3, range_sigma=0.2)
    torch.testing.assert_close(out, constant)
    # A sharp step far above the range sigma survives; a Gaussian blur would smear it.
    step = torch.zeros(1, 1, 8, 8)
    step[..., 4:] = 1.0
    out = bilateral_filter(step, spatial_sigma=2, range_sigma=0.1)
    assert (out - step).abs().max() < 1e-6


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(4)
    image = torch.rand(1, 2, 4, 5, dtype=torch.float64, generator=gen).requires_grad_()
    guide = torch.rand(1, 3, 4, 5, dtype=torch.float64, generator=gen).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: bilateral_filter(x, spatial_sigma=1.0, range_sigma=0.3, radius=2), (image,)
    )
    assert torch.autograd.gradcheck(
        lambda x: bilateral_filter(x, spatial_sigma=1.0, range_sigma=0.3, radius=2, joint_range=False),
        (image,),
    )
    assert torch.autograd.gradcheck(
        lambda x, g: bilateral_filter(x, spatial_sigma=1.0, range_sigma=0.3, radius=1, guide=g),
        (image, guide),
    )


def test_gradcheck_per_channel_with_single_channel_guide_and_memoryless_backward():
    gen = torch.Generator().manual_seed(6)
    image = torch.rand(2, 3, 4, 5, dtype=torch.float64, generator=gen).requires_grad_()
    guide = torch.rand(2, 1, 4, 5, dtype=torch.float64, generator=gen).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, g: bilateral_filter(
            x, spatial_sigma=1.5, range_sigma=0.25, radius=2, guide=g, joint_range=False
        ),
        (image, guide),
    )
    # Gradient through the guide only (image constant) and through the image only.
    assert torch.autograd.gradcheck(
        lambda g: bilateral_filter(image.detach(), spatial_sigma=1.0, range_sigma=0.3, radius=1, guide=g),
        (guide,),
    )
    assert torch.autograd.gradcheck(
        lambda x: bilateral_filter(x, spatial_sigma=1.0, range_sigma=0.3, radius=1, guide=guide.detach()),
        (image,),
    )


def test_module_dtype_and_batch_independence():
    module = BilateralFilter(0.5, 0.2, radius=5, joint_range=False)
    assert "radius=5" in repr(module)
    gen = torch.Generator().manual_seed(5)
    images = torch.rand(3, 3, 10, 10, dtype=torch.float64, generator=gen)
    out = module(images)
    assert out.dtype == torch.float64 and out.shape == images.shape
    torch.testing.assert_close(out[1:2], module(images[1:2]))
    out32 = module(images.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out, rtol=1e-5, atol=1e-5)
    # The section 5.5 defence settings (11x11 window, sigmas 0.5 and 0.2) keep values in [0, 1].
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_bad_inputs_raise_typed_errors():
    image = torch.rand(1, 3, 6, 6)
    with pytest.raises(ShapeError):
        bilateral_filter(image[0], spatial_sigma=1, range_sigma=0.2)
    with pytest.raises(InputError):
        bilateral_filter(image.numpy(), spatial_sigma=1, range_sigma=0.2)
    with pytest.raises(InputError):
        bilateral_filter((image * 255).to(torch.uint8), spatial_sigma=1, range_sigma=0.2)
    with pytest.raises(NonFiniteError):
        bilateral_filter(image.clone().fill_(float("nan")), spatial_sigma=1, range_sigma=0.2)
    with pytest.raises(ConfigError):
        bilateral_filter(image, spatial_sigma=0, range_sigma=0.2)
    with pytest.raises(ConfigError):
        bilateral_filter(image, spatial_sigma=1, range_sigma=-1)
    with pytest.raises(ConfigError):
        bilateral_filter(image, spatial_sigma=1, range_sigma=0.2, radius=-1)
    with pytest.raises(ShapeError):
        bilateral_filter(image, spatial_sigma=1, range_sigma=0.2, guide=torch.rand(1, 3, 5, 6))
    with pytest.raises(ShapeError):
        bilateral_filter(
            image, spatial_sigma=1, range_sigma=0.2, guide=torch.rand(1, 2, 6, 6), joint_range=False
        )
