"""Tests of smoothadv.perceptual.mad: the original MATLAB values, identities, input forms and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from smoothadv.core.errors import ConfigError, DataError, InputError, NonFiniteError, RangeError, ShapeError
from smoothadv.perceptual import MadResult, mad, mad_batch
from smoothadv.perceptual._inputs import rgb2gray, to_gray_uint8

# Pairs and the original MATLAB release's values on them (see data/mad/README.md for their provenance).
REFERENCE_DIR = Path(__file__).parent / "data" / "mad"
REFERENCE_FILES = ("values.json", "values-299.json")
SCALE_KEYS = {"2011": "mad_2011", "2010": "mad_2010_block16"}
#: Relative tolerance on every reported value (HI, LO, sig, MAD); our values agree to ~1e-14.
REFERENCE_REL = 1e-9


def _reference_cases():
    cases = []
    for name in REFERENCE_FILES:
        for pair in json.loads((REFERENCE_DIR / name).read_text())["pairs"]:
            cases += [
                pytest.param(pair, scale, id=f"{Path(pair['distorted']).stem}-{scale}")
                for scale in SCALE_KEYS
            ]
    return cases


def _close(actual: float, expected: float, rel: float = 1e-6) -> bool:
    if expected == 0.0:
        return actual == 0.0
    return abs(actual - expected) <= rel * abs(expected)


def test_reference_data_present():
    """The reference pairs ship with the tests: 3 pairs of 256x256 and the 299x299 pair (odd size)."""
    cases = _reference_cases()
    assert len(cases) == 2 * 4
    sizes = set()
    for case in cases:
        pair = case.values[0]
        for key in ("reference", "distorted"):
            assert (REFERENCE_DIR / pair[key]).is_file(), pair[key]
        sizes.add(to_gray_uint8(REFERENCE_DIR / pair["reference"]).shape)
    assert sizes == {(256, 256), (299, 299)}


@pytest.mark.parametrize(("pair", "scale"), _reference_cases())
def test_reproduces_original_matlab_values(pair, scale):
    expected = pair[SCALE_KEYS[scale]]
    result = mad(REFERENCE_DIR / pair["reference"], REFERENCE_DIR / pair["distorted"], scale=scale)
    assert isinstance(result, MadResult) and result.scale == scale
    assert _close(result.d_detect, expected["HI"], REFERENCE_REL), (result.d_detect, expected["HI"])
    assert _close(result.d_appear, expected["LO"], REFERENCE_REL), (result.d_appear, expected["LO"])
    assert _close(result.alpha, expected["sig"], REFERENCE_REL), (result.alpha, expected["sig"])
    assert _close(result.mad, expected["MAD"], REFERENCE_REL), (result.mad, expected["MAD"])


def _natural_like(height=64, width=72, seed=0) -> np.ndarray:
    """A grey uint8 image with flat areas (where MAD sees noise), a ramp, an edge and a little texture."""
    gen = np.random.default_rng(seed)
    cols = np.arange(width)[None, :]
    base = 90 + 0.5 * cols + gen.standard_normal((height, width))
    base[height // 4 : height // 2, width // 3 : 2 * width // 3] += 80
    return np.clip(np.round(base), 0, 255).astype(np.uint8)


def test_identical_images_score_zero():
    image = _natural_like()
    for scale in ("2011", "2010"):
        result = mad(image, image.copy(), scale=scale)
        assert result.mad == 0.0 and result.d_detect == 0.0 and result.d_appear == 0.0


def test_scales_differ_by_factor_200_in_detection_only():
    ref = _natural_like()
    dst = np.clip(ref.astype(int) + np.random.default_rng(1).integers(-6, 7, ref.shape), 0, 255).astype(
        np.uint8
    )
    new, old = mad(ref, dst, scale="2011"), mad(ref, dst, scale="2010")
    assert new.d_detect == pytest.approx(200 * old.d_detect, rel=1e-12)
    assert new.d_appear == pytest.approx(old.d_appear, rel=1e-12)
    assert new.mad > 0 and old.mad > 0 and new.mad != pytest.approx(old.mad)


def test_more_noise_scores_higher():
    ref = _natural_like(seed=3)
    noise = np.random.default_rng(4).standard_normal(ref.shape)
    scores = [
        mad(ref, np.clip(np.round(ref + sigma * noise), 0, 255).astype(np.uint8)).mad for sigma in (1, 4, 16)
    ]
    # Noise of 1 grey level is masked (MAD 0 here); stronger noise scores strictly higher.
    assert scores[0] < scores[1] < scores[2]


def test_input_forms_agree():
    ref = _natural_like(seed=5)
    dst = np.clip(ref + np.random.default_rng(8).normal(0, 6, ref.shape).round(), 0, 255).astype(np.uint8)
    expected = mad(ref, dst)
    assert expected.mad > 0
    as_float = mad(ref / 255.0, dst.astype(np.float32) / 255.0)
    as_tensor = mad(torch.from_numpy(ref / 255.0)[None], torch.from_numpy(dst / 255.0)[None, None])
    as_colour = mad(np.repeat(ref[..., None], 3, axis=2), torch.from_numpy(dst).repeat(3, 1, 1))
    for other in (as_float, as_tensor, as_colour):
        assert other.mad == pytest.approx(expected.mad, rel=1e-12)


def test_file_input(tmp_path):
    from PIL import Image

    ref = _natural_like(seed=6)
    dst = np.clip(ref + np.random.default_rng(9).normal(0, 6, ref.shape).round(), 0, 255).astype(np.uint8)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(np.repeat(dst[..., None], 3, axis=2)).save(tmp_path / "dst.png")
    expected = mad(ref, dst).mad
    assert expected > 0
    assert mad(tmp_path / "ref.png", str(tmp_path / "dst.png")).mad == pytest.approx(expected, rel=1e-12)


def test_rgb2gray_uses_matlab_weights_and_rounding():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30], [255, 255, 255]]], dtype=np.uint8)
    # 0.298936 * 255 = 76.23 -> 76; 0.587043 * 255 = 149.70 -> 150; 0.114021 * 255 = 29.08 -> 29;
    # 2.989 + 11.741 + 3.421 = 18.15 -> 18; white stays 255.
    assert rgb2gray(rgb).tolist() == [[76, 150, 29, 18, 255]]
    # Floats go through round(255 x) before the conversion.
    assert to_gray_uint8(np.full((2, 2), 0.5)).tolist() == [[128, 128], [128, 128]]


def test_mad_batch_matches_single_calls_and_upsamples_mnist():
    gen = torch.Generator().manual_seed(7)
    refs = torch.zeros(2, 1, 28, 28)
    refs[:, :, 8:20, 10:18] = 0.9
    dsts = (refs + 0.05 * torch.randn(2, 1, 28, 28, generator=gen)).clamp(0, 1)
    with pytest.raises(ShapeError, match="upsample_to"):
        mad_batch(refs, dsts)
    results = mad_batch(refs, dsts, scale="2010", upsample_to=112)
    assert len(results) == 2 and all(r.scale == "2010" and r.mad > 0 for r in results)
    # Nearest upsampling by 4 is pixel replication of the 8-bit image.
    ref8 = np.floor(refs[1, 0].double().numpy() * 255 + 0.5).astype(np.uint8)
    dst8 = np.floor(dsts[1, 0].double().numpy() * 255 + 0.5).astype(np.uint8)
    block = np.ones((4, 4), dtype=np.uint8)
    direct = mad(np.kron(ref8, block), np.kron(dst8, block), scale="2010")
    assert results[1].mad == pytest.approx(direct.mad, rel=1e-12)
    colour = torch.rand(2, 3, 40, 40, generator=gen)
    batch = mad_batch(colour, colour.flip(0))
    assert batch[0].mad == pytest.approx(mad(colour[0], colour[1]).mad, rel=1e-12)


def test_bad_inputs_raise_typed_errors(tmp_path):
    image = _natural_like(40, 40)
    with pytest.raises(ShapeError, match="same size"):
        mad(image, image[:, :39])
    with pytest.raises(ShapeError, match="34"):
        mad(image[:33], image[:33])
    with pytest.raises(DataError, match="not found"):
        mad(tmp_path / "missing.png", image)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read"):
        mad(tmp_path / "broken.png", image)
    with pytest.raises(RangeError):
        mad(image.astype(np.float64), image.astype(np.float64))
    bad = image / 255.0
    bad[0, 0] = np.nan
    with pytest.raises(NonFiniteError):
        mad(bad, image)
    with pytest.raises(InputError):
        mad(image.tolist(), image)
    with pytest.raises(InputError):
        mad(image.astype(np.int32), image)
    with pytest.raises(ShapeError):
        mad(np.zeros((40, 40, 2), dtype=np.uint8), image)
    with pytest.raises(ConfigError):
        mad(image, image, scale="2012")
    with pytest.raises(ShapeError):
        mad_batch(torch.rand(1, 1, 40, 40), torch.rand(2, 1, 40, 40))
    with pytest.raises(InputError):
        mad_batch(torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28), upsample_to=0)
