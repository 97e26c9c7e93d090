"""Tests of the ``smoothadv mad`` and ``smoothadv magnify`` commands (text and --json output, errors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smoothadv.cli import main
from smoothadv.perceptual import mad, mad_batch

REFERENCE_DIR = Path("/work/shared/reference/mad")


@pytest.fixture()
def pair(tmp_path):
    """A grey reference with flat areas and a noisy copy, saved as PNG."""
    gen = np.random.default_rng(0)
    base = np.full((48, 56), 100.0)
    base[12:30, 20:40] = 180.0
    ref = np.clip(base + gen.normal(0, 1, base.shape), 0, 255).round().astype(np.uint8)
    dst = np.clip(ref + gen.normal(0, 5, base.shape), 0, 255).round().astype(np.uint8)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(dst).save(tmp_path / "dst.png")
    return tmp_path / "ref.png", tmp_path / "dst.png"


def test_mad_text(pair, capsys):
    assert main(["mad", str(pair[0]), str(pair[1])]) == 0
    out = capsys.readouterr().out
    expected = mad(*pair)
    assert f"MAD (2011 scale, luminance): {expected.mad:.6g}" in out
    assert "d_detect:" in out and "d_appear:" in out and "PSNR:" in out and "SSIM:" in out


def test_mad_json_both_scales(pair, capsys):
    from skimage.metrics import peak_signal_noise_ratio

    for scale in ("2011", "2010"):
        assert main(["mad", str(pair[0]), str(pair[1]), "--scale", scale, "--json"]) == 0
        payload = json.loads(capsys.readouterr().out)
        assert set(payload) == {"mad", "d_detect", "d_appear", "scale", "mad_channels", "mad_upsampled_to",
                                "psnr", "ssim"}
        expected = mad(*pair, scale=scale)
        assert payload["scale"] == scale
        assert payload["mad"] == pytest.approx(expected.mad, rel=1e-12)
        assert payload["d_detect"] == pytest.approx(expected.d_detect, rel=1e-12)
        ref, dst = (np.asarray(Image.open(p)) for p in pair)
        assert payload["psnr"] == pytest.approx(peak_signal_noise_ratio(ref, dst, data_range=255))
        assert 0 < payload["ssim"] < 1


@pytest.mark.skipif(
    not (REFERENCE_DIR / "values.json").is_file(), reason="MAD reference values not available"
)
def test_mad_json_reference_pair(capsys):
    values = json.loads((REFERENCE_DIR / "values.json").read_text())["pairs"][1]
    args = [str(REFERENCE_DIR / values["reference"]), str(REFERENCE_DIR / values["distorted"])]
    assert main(["mad", *args, "--scale", "2010", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["mad"] == pytest.approx(values["mad_2010_block16"]["MAD"], rel=1e-6)


def test_mad_identical_json_has_null_psnr(pair, capsys):
    assert main(["mad", str(pair[0]), str(pair[0]), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["mad"] == 0.0 and payload["psnr"] is None and payload["ssim"] == 1.0
    assert main(["mad", str(pair[0]), str(pair[0])]) == 0
    assert "PSNR: inf" in capsys.readouterr().out


def test_mad_errors_exit_2(pair, tmp_path, capsys):
    assert main(["mad", str(pair[0]), str(tmp_path / "missing.png")]) == 2
    assert "smoothadv mad: error: image file not found" in capsys.readouterr().err
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((6, 6), dtype=np.uint8)).save(tiny)
    assert main(["mad", str(tiny), str(tiny)]) == 2  # even upsampled 4x, below MAD's 34 pixels
    assert "at least 34x34" in capsys.readouterr().err


def test_mad_upsamples_small_images_like_the_evaluation(tmp_path, capsys):
    rng = np.random.default_rng(0)
    reference = (rng.random((28, 28)) * 255).astype(np.uint8)
    distorted = np.clip(reference.astype(int) + rng.integers(-20, 21, (28, 28)), 0, 255).astype(np.uint8)
    Image.fromarray(reference).save(tmp_path / "ref.png")
    Image.fromarray(distorted).save(tmp_path / "dst.png")
    assert main(["mad", str(tmp_path / "ref.png"), str(tmp_path / "dst.png"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    expected = mad_batch(torch.from_numpy(reference)[None, None], torch.from_numpy(distorted)[None, None],
                         upsample_to=112)[0]
    assert payload["mad_upsampled_to"] == 112 and payload["mad"] == pytest.approx(expected.mad, rel=1e-12)


def test_magnify_text_and_json(pair, tmp_path, capsys):
    out_dir = tmp_path / "single"
    assert main(["magnify", str(pair[0]), "--out", str(out_dir), "--spatial-sigma", "2"]) == 0
    text = capsys.readouterr().out
    assert "ref_mag.png" in text and "panel" not in text
    assert (out_dir / "ref_mag.png").is_file() and not (out_dir / "panel.png").exists()

    out_dir = tmp_path / "both"
    assert (
        main(["magnify", str(pair[0]), str(pair[1]), "--out", str(out_dir), "--beta", "0.5", "--json"]) == 0
    )
    payload = json.loads(capsys.readouterr().out)
    assert payload["panel"] == str(out_dir / "panel.png") and Path(payload["panel"]).is_file()
    assert payload["parameters"]["beta"] == 0.5
    images = [np.asarray(Image.open(p)) for p in payload["outputs"]]
    assert [im.shape for im in images] == [(48, 56), (48, 56)]
    # One shared stretch: the darkest and brightest values over both images are 0 and 255.
    assert min(int(im.min()) for im in images) == 0 and max(int(im.max()) for im in images) == 255


def test_magnify_errors_exit_2(pair, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["magnify", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "smoothadv magnify: error: cannot read" in capsys.readouterr().err
    assert main(["magnify", str(pair[0]), "--out", str(tmp_path / "o"), "--beta", "2"]) == 2
    assert "beta" in capsys.readouterr().err
