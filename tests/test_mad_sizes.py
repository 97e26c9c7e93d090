"""Properties of smoothadv.perceptual.mad at every image size MAD accepts (sides 34 to 300), square or not.

MAD's block grid (16x16 blocks every 4 pixels), its 16-pixel crop and its centred frequency grids all
depend on the side modulo 4, 16 and 2, so each side length is its own case: the score must be finite,
exactly 0 for identical images, and must not decrease when the same noise pattern grows stronger.

The default run covers a subset of sides (the smallest ones, odd and even, primes, every residue modulo 4
and 16, the paper's 299 and the largest, 300); the other sides of 34..300 are marked ``slow``
(``pytest -m slow tests/test_mad_sizes.py``, a few minutes on one core).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from smoothadv.perceptual import mad

ALL_SIDES = range(34, 301)
#: Sides of the default run: 34..42 (all residues modulo 4 and both parities at the smallest sizes),
#: primes (37, 41, 53, 61, 97, 131, 257, 293), 47/48/49 and 63/64/65 around multiples of 16, 299 and 300;
#: together they take every residue modulo 16.
DEFAULT_SIDES = (34, 35, 36, 37, 38, 39, 40, 41, 42, 47, 48, 49, 53, 61, 62, 63, 64, 65)
DEFAULT_SIDES += (97, 131, 257, 293, 299, 300)
NON_SQUARE = ((40, 123), (123, 40), (299, 64), (77, 300), (35, 298))
#: Noise standard deviations, in grey levels, of the three distorted images (the same noise pattern scaled).
NOISE_SIGMAS = (4.0, 10.0, 25.0)


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    """A deterministic 8-bit grey image: a gentle smooth random texture (low-passed white noise, so that
    noise is not all masked), a brighter band over the top quarter (an edge) and a little fine grain."""
    gen = np.random.default_rng(seed)
    white = gen.standard_normal((height, width))
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    lowpass = np.exp(-(fx**2 + fy**2) / (2 * 0.04**2))
    smooth = np.fft.irfft2(np.fft.rfft2(white) * lowpass, s=(height, width))
    smooth = (smooth - smooth.mean()) / smooth.std()
    image = 120 + 8 * smooth + gen.standard_normal((height, width))
    image[: height // 4] += 40
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _noisy(image: np.ndarray, sigma: float, noise: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image + sigma * noise), 0, 255).astype(np.uint8)


def _check_properties(height: int, width: int) -> None:
    seed = 1000 * height + width
    ref = _texture(height, width, seed)

    same = mad(ref, ref.copy())
    assert (same.mad, same.d_detect, same.d_appear) == (0.0, 0.0, 0.0), same

    noise = np.random.default_rng(seed + 1).standard_normal((height, width))
    results = [mad(ref, _noisy(ref, sigma, noise)) for sigma in NOISE_SIGMAS]
    for result in results:
        values = (result.mad, result.d_detect, result.d_appear)
        assert all(math.isfinite(v) and v >= 0.0 for v in values), result
    scores = [result.mad for result in results]
    assert scores[-1] > 0.0, scores
    assert scores == sorted(scores), (height, width, scores)


def _side_cases():
    return [
        pytest.param(side, id=str(side))
        if side in DEFAULT_SIDES
        else pytest.param(side, id=str(side), marks=pytest.mark.slow)
        for side in ALL_SIDES
    ]


def test_default_sides_cover_the_cases_that_matter():
    assert set(DEFAULT_SIDES) <= set(ALL_SIDES)
    assert {34, 35, 299, 300} <= set(DEFAULT_SIDES)
    assert {side % 4 for side in DEFAULT_SIDES} == {0, 1, 2, 3}
    assert {side % 16 for side in DEFAULT_SIDES} == set(range(16))
    primes = [s for s in DEFAULT_SIDES if all(s % d for d in range(2, math.isqrt(s) + 1))]
    assert len(primes) >= 5


@pytest.mark.parametrize("side", _side_cases())
def test_square_sizes(side):
    _check_properties(side, side)


@pytest.mark.parametrize(("height", "width"), NON_SQUARE, ids=[f"{h}x{w}" for h, w in NON_SQUARE])
def test_non_square_sizes(height, width):
    _check_properties(height, width)


@pytest.mark.parametrize(("height", "width"), [(35, 35), (37, 64), (101, 101), (64, 299), (299, 299)])
def test_appearance_ignores_a_uniform_offset(height, width):
    """The log-Gabor filters are 0 at the zero frequency at every size, odd or even, so adding the same
    constant to both images leaves d_appear unchanged (d_detect changes: lightness is not linear)."""
    ref = np.minimum(_texture(height, width, 7), 225)
    dst = np.minimum(_noisy(ref, 6.0, np.random.default_rng(8).standard_normal(ref.shape)), 225)
    base = mad(ref, dst).d_appear
    shifted = mad(ref + np.uint8(20), dst + np.uint8(20)).d_appear
    assert base > 0.0
    assert shifted == pytest.approx(base, rel=1e-9)
