"""Tests of smoothadv.perceptual.magnify (eq. 22) and the panel helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from smoothadv.core.errors import ConfigError, InputError, NonFiniteError, ShapeError
from smoothadv.perceptual import (
    Magnify,
    magnify,
    magnify_panel,
    magnify_together,
    save_panel,
    stretch_together,
)


def slow_magnify(image, beta, spatial_sigma, range_sigma, radius):
    """Eq. (22) one pixel at a time with plain Python floats; image is (C, H, W)."""
    x = image.tolist()
    channels, height, width = len(x), len(x[0]), len(x[0][0])

    def weights(i, j):
        out = []
        for k in range(max(0, i - radius), min(height, i + radius + 1)):
            for m in range(max(0, j - radius), min(width, j + radius + 1)):
                dist = sum((x[c][i][j] - x[c][k][m]) ** 2 for c in range(channels))
                w = math.exp(-((k - i) ** 2 + (m - j) ** 2) / (2 * spatial_sigma**2))
                out.append((k, m, w * math.exp(-dist / (2 * range_sigma**2))))
        return out

    window = {(i, j): weights(i, j) for i in range(height) for j in range(width)}

    def filtered(values, c, i, j):
        num = sum(w * values[c][k][m] for k, m, w in window[(i, j)])
        return num / sum(w for _, _, w in window[(i, j)])

    residual = [
        [[x[c][i][j] - filtered(x, c, i, j) for j in range(width)] for i in range(height)]
        for c in range(channels)
    ]
    squared = [[[v * v for v in row] for row in plane] for plane in residual]
    out = torch.zeros(channels, height, width, dtype=torch.float64)
    for c in range(channels):
        values = [v for row in x[c] for v in row]
        mean = sum(values) / len(values)
        global_scale = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        for i in range(height):
            for j in range(width):
                local = math.sqrt(filtered(squared, c, i, j))
                out[c, i, j] = residual[c][i][j] / (beta * local + (1 - beta) * global_scale)
    return out


def test_eq22_by_hand():
    # A 1x3 grey image [0, 0.3, 0.9], radius 1, both sigmas 1e6: every filter weight is 1 to within 1e-12,
    # so each bilateral filter is the mean over the window, truncated at the borders (2, 3, 2 pixels).
    image = torch.tensor([[[0.0, 0.3, 0.9]]], dtype=torch.float64)
    out = magnify(image, beta=0.8, spatial_sigma=1e6, range_sigma=1e6, radius=1)
    mu = [0.15, 0.4, 0.6]                                   # (0 + .3) / 2, (0 + .3 + .9) / 3, (.3 + .9) / 2
    residual = [-0.15, -0.1, 0.3]                           # x - mu
    squared = [0.0225, 0.01, 0.09]
    local = [math.sqrt((0.0225 + 0.01) / 2), math.sqrt((0.0225 + 0.01 + 0.09) / 3),
             math.sqrt((0.01 + 0.09) / 2)]
    sigma_omega = math.sqrt(((0 - 0.4) ** 2 + (0.3 - 0.4) ** 2 + (0.9 - 0.4) ** 2) / 3)  # std of x: 0.3742
    assert residual == pytest.approx([x - m for x, m in zip([0.0, 0.3, 0.9], mu, strict=True)])
    assert squared == pytest.approx([r * r for r in residual])
    expected = [r / (0.8 * s + 0.2 * sigma_omega) for r, s in zip(residual, local, strict=True)]
    assert out[0, 0].tolist() == pytest.approx(expected, rel=1e-9)
    assert out[0, 0].tolist() == pytest.approx([-0.848351, -0.422849, 1.182412], abs=1e-6)


@pytest.mark.parametrize(
    ("spatial_sigma", "radius", "beta"),
    [(1.5, None, 0.8), (5.0, None, 0.5), (2.0, 1, 1.0)],
)
def test_matches_per_pixel_loop(spatial_sigma, radius, beta):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(3, 9, 11, dtype=torch.float64, generator=gen)
    fast = magnify(image, beta=beta, spatial_sigma=spatial_sigma, radius=radius)
    used_radius = math.ceil(2.326 * spatial_sigma) if radius is None else radius
    slow = slow_magnify(image, beta, spatial_sigma, 0.2, used_radius)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)


def test_constant_image_magnifies_to_finite_zero():
    for dtype in (torch.float32, torch.float64):
        constant = torch.full((2, 3, 17, 13), 0.37, dtype=dtype)
        constant[1] = torch.tensor([0.1, 0.5, 0.9], dtype=dtype)[:, None, None]
        out = magnify(constant)
        assert torch.isfinite(out).all() and (out == 0).all()
        stretched = stretch_together([out])
        assert (stretched[0] == 0).all()


def test_batch_and_single_image_agree_and_module():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 12, 14, generator=gen)
    batch = magnify(images, spatial_sigma=2.0)
    torch.testing.assert_close(batch[1], magnify(images[1], spatial_sigma=2.0))
    module = Magnify(spatial_sigma=2.0)
    torch.testing.assert_close(module(images), batch)
    assert "spatial_sigma=2.0" in repr(module)
    assert batch.dtype == images.dtype and batch.shape == images.shape


def test_magnification_reveals_high_frequency_noise():
    # A smooth image and the same image with low-amplitude noise (+-2 grey levels, invisible as such):
    # on a shared stretch the magnified noisy image is rough (large pixel-to-pixel jumps), the clean smooth.
    rows, cols = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    smooth = (0.3 + 0.4 * torch.exp(-((rows - 24) ** 2 + (cols - 24) ** 2) / 200.0)).expand(3, 48, 48)
    noise = torch.randn(3, 48, 48, generator=torch.Generator().manual_seed(2)) * (2 / 255)
    clean, noisy = magnify_together([smooth, (smooth + noise).clamp(0, 1)], spatial_sigma=3.0)

    def roughness(image):
        return float((image[:, :, 1:] - image[:, :, :-1]).abs().mean())

    assert roughness(noisy) > 5 * roughness(clean)


def test_stretch_together_uses_one_shared_range():
    a = torch.tensor([[-1.0, 0.0]])
    b = torch.tensor([[0.5, 3.0]])
    sa, sb = stretch_together([a, b])
    torch.testing.assert_close(sa, torch.tensor([[0.0, 0.25]]))
    torch.testing.assert_close(sb, torch.tensor([[0.375, 1.0]]))
    with pytest.raises(InputError):
        stretch_together([])
    with pytest.raises(NonFiniteError):
        stretch_together([torch.tensor([float("nan")])])


def test_bad_inputs_raise_typed_errors():
    image = torch.rand(3, 8, 8)
    with pytest.raises(ConfigError):
        magnify(image, beta=1.5)
    with pytest.raises(ConfigError):
        magnify(image, spatial_sigma=0)
    with pytest.raises(ConfigError):
        magnify(image, global_term="nope")
    with pytest.raises(InputError):
        magnify((image * 255).to(torch.uint8))
    with pytest.raises(InputError):
        magnify(image.numpy())
    with pytest.raises(ShapeError):
        magnify(image[0])
    with pytest.raises(NonFiniteError):
        magnify(torch.full((1, 4, 4), float("inf")))


def test_panels(tmp_path):
    gen = torch.Generator().manual_seed(3)
    images = [torch.rand(3, 20, 24, generator=gen), torch.rand(1, 20, 24, generator=gen)]
    path = save_panel(images, ["colour", "grey"], tmp_path / "sub" / "panel.png")
    with Image.open(path) as panel:
        assert panel.size[0] > panel.size[1] > 0
        pixels = np.asarray(panel.convert("L"))
    assert pixels.std() > 0
    magnified = magnify_panel(images[:1] * 2, None, tmp_path / "mag.png", columns=1, spatial_sigma=2.0)
    assert (tmp_path / "mag.png").is_file() and len(magnified) == 2
    assert float(min(m.min() for m in magnified)) == 0.0 and float(max(m.max() for m in magnified)) == 1.0
    with pytest.raises(InputError):
        save_panel(images, ["only one"], tmp_path / "x.png")
    with pytest.raises(ShapeError):
        save_panel([torch.rand(2, 5, 5)], None, tmp_path / "x.png")
