"""Tests of the paper figures (Fig. 1 panel, Fig. 4 MAD scatter) and of the ``smoothadv figure`` command."""

from __future__ import annotations

import csv
import json
import sys

import pytest
import torch
from torch import nn

from smoothadv.cli import main
from smoothadv.core.errors import InputError, ShapeError
from smoothadv.experiments import figures
from smoothadv.experiments.figures import figure1, figure4, fraction_lower, plot_mad_scatter
from smoothadv.perceptual import magnify, stretch_together

FAST_CW = {"binary_search_steps": 1, "steps": 4}


def tiny_model(channels: int = 1, classes: int = 4, seed: int = 0) -> nn.Module:
    """A deterministic random CNN for any image size (global average pooling), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=1), nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(6 * 9, classes),
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model.eval()


def blocky(batch: int = 3, channels: int = 1, size: int = 36, seed: int = 0) -> torch.Tensor:
    """8-bit images with flat regions and edges: a bright rectangle and a darker square on grey."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.full((batch, channels, size, size), 0.3)
    for b in range(batch):
        top, left = torch.randint(2, size // 2, (2,), generator=generator).tolist()
        level = 0.7 + 0.2 * torch.rand(1, generator=generator)
        images[b, :, top:top + size // 3, left:left + size // 3] = level
        images[b, :, 2:8, 2:8] = 0.1
    return torch.round(images * 255) / 255


def test_figure1_writes_panel_with_shared_stretch(tmp_path, monkeypatch):
    model = tiny_model()
    image = blocky(1)[0]
    calls = []
    real = stretch_together

    def spy(images, *args, **kwargs):
        calls.append(len(images))
        return real(images, *args, **kwargs)

    monkeypatch.setattr(sys.modules["smoothadv.perceptual.magnify"], "stretch_together", spy)
    result = figure1(model, image, tmp_path / "fig1.png", preset="mnist", cw_overrides=FAST_CW,
                     spatial_sigma=2.0)
    assert result.path.is_file() and result.path.stat().st_size > 1000
    # one stretch call over the original and all six adversarial examples
    assert calls == [1 + len(figures.FIGURE1_ATTACKS)]
    assert [r["attack"] for r in result.attacks] == list(figures.FIGURE1_ATTACKS)
    assert len(result.titles) == 2 + len(figures.FIGURE1_ATTACKS)
    for row, title in zip(result.attacks, result.titles[2:], strict=True):
        assert f"L2 {row['l2']:.2f}" in title
        assert title.endswith("fooled" if row["success"] else "failed")
    # the shared stretch: all tiles together span [0, 1], tiles individually need not
    stacked = torch.stack(result.magnified)
    assert float(stacked.min()) == pytest.approx(0.0, abs=1e-6)
    assert float(stacked.max()) == pytest.approx(1.0, abs=1e-6)
    # the magnified original equals magnify() of the image mapped by the same affine stretch as the others
    raw = magnify(image, spatial_sigma=2.0)
    tile = result.magnified[0]
    mask = raw != raw.mean()
    ratio = (tile[mask] - tile[mask].mean()) / (raw[mask] - raw[mask].mean())
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-3, atol=1e-3)


def test_figure1_rejects_bad_inputs(tmp_path):
    model = tiny_model()
    with pytest.raises(ShapeError):
        figure1(model, torch.rand(2, 1, 36, 36), tmp_path / "x.png")
    with pytest.raises(InputError):
        figure1(model, torch.rand(1, 36, 36) * 3, tmp_path / "x.png")
    with pytest.raises(InputError):
        figure1(model, torch.rand(1, 36, 36), tmp_path / "x.png", attacks=[])


def test_fraction_lower_on_hand_made_scores():
    assert fraction_lower([0.1, 0.5, 0.2, 3.0], [0.2, 0.4, 0.3, 3.0]) == pytest.approx(0.5)
    assert fraction_lower([1.0], [2.0]) == 1.0
    assert fraction_lower([2.0, 2.0], [1.0, 2.0]) == 0.0
    with pytest.raises(InputError):
        fraction_lower([0.1], [0.1, 0.2])
    with pytest.raises(InputError):
        fraction_lower([], [])
    with pytest.raises(InputError):
        fraction_lower([float("nan")], [0.1])


def test_plot_mad_scatter_handles_zero_scores(tmp_path):
    path = plot_mad_scatter([0.0, 0.2, 1.5], [0.01, 0.1, 0.0], tmp_path / "s.png", title="t")
    assert path.is_file() and path.stat().st_size > 1000
    with pytest.raises(InputError):
        plot_mad_scatter([0.1], [0.1, 0.2], tmp_path / "s.png")


def test_figure4_writes_scores_consistent_with_mad(tmp_path):
    from smoothadv.perceptual import mad

    model = tiny_model()
    images = blocky(3)
    with torch.no_grad():
        labels = model(images).argmax(1)
    labels[2] = (labels[2] + 1) % 4  # one misclassified image is skipped
    result = figure4(model, images, labels, tmp_path, preset="mnist", cw_overrides=FAST_CW, batch_size=2)
    assert result.attacked == 2 and result.skipped_misclassified == 1
    assert result.path.is_file() and (tmp_path / "figure4.json").is_file()
    with open(result.table, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == ["0", "1"]
    both = [r for r in result.records if r["success_cw"] and r["success_scw"]]
    assert result.scored == len(both)
    if both:
        expected = sum(r["mad_scw"] < r["mad_cw"] for r in both) / len(both)
        assert result.fraction_scw_lower == pytest.approx(expected)
    saved = json.loads((tmp_path / "figure4.json").read_text())
    assert saved["scale"] == "2010" and len(saved["records"]) == 2
    # the stored score is MAD (2010 scale) of the clean image against the attack's output
    attack = figures_make_attack("cw", model)
    adversarial = attack(images[:1], labels[:1]).adversarial[0]
    assert result.records[0]["mad_cw"] == pytest.approx(mad(images[0], adversarial, scale="2010").mad,
                                                        rel=1e-6)
    # equal L2: C&W's perturbation rescaled to sC&W's norm, 8-bit; its MAD is scored the same way
    for record in result.records:
        assert record["l2_cw_equal_l2"] == pytest.approx(record["l2_scw"], rel=0.02, abs=2 / 255)
    assert sum(result.comparison.values()) == result.scored == sum(result.comparison_equal_l2.values())
    if both:
        expected = sum(r["mad_scw"] < r["mad_cw_equal_l2"] for r in both) / len(both)
        assert result.fraction_scw_lower_equal_l2 == pytest.approx(expected)


def test_rescale_to_l2_keeps_the_direction():
    from smoothadv.experiments.figures import rescale_to_l2

    originals = torch.full((2, 1, 8, 8), 0.5)
    adversarial = originals.clone()
    adversarial[0, 0, :2, :2] += 0.2
    adversarial[1, 0, 3, 3] -= 0.4
    out = rescale_to_l2(originals, adversarial, torch.tensor([0.2, 0.2]))
    assert torch.allclose(out * 255, torch.round(out * 255))
    # as close to 0.2 as 8-bit levels allow: 4 pixels of k/255 give 2k/255, one pixel of k/255 gives k/255
    assert (out - originals).flatten(1).norm(dim=1).tolist() == pytest.approx([0.2, 0.2], abs=1 / 255)
    assert bool(((out - originals)[0, 0, :2, :2] > 0).all()) and float(out[1, 0, 3, 3]) < 0.5


def figures_make_attack(name, model):
    from smoothadv.attacks import make_attack

    return make_attack(name, model, preset="mnist", **FAST_CW)


def test_figure4_rejects_bad_inputs(tmp_path):
    model = tiny_model()
    images = blocky(2)
    with pytest.raises(ShapeError):
        figure4(model, images[0], torch.zeros(1, dtype=torch.long), tmp_path)
    with pytest.raises(ShapeError):
        figure4(model, images, torch.zeros(3, dtype=torch.long), tmp_path)
    with torch.no_grad():
        wrong = (model(images).argmax(1) + 1) % 4
    with pytest.raises(InputError, match="none of the images"):
        figure4(model, images, wrong, tmp_path)


def test_cli_figure_json(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_figure4(model, *, limit, scale, out_dir, cw_overrides, device):
        seen.update(model=model.model, limit=limit, scale=scale, out_dir=out_dir, cw=cw_overrides)
        return {"figure": "figure4", "model": model.model, "attacked": 1, "scale": scale, "path": "p",
                "table": "t", "seconds": 1.0, "fraction_scw_lower": 1.0, "fraction_scw_lower_equal_l2": 0.0,
                "comparison": {"scw_lower": 1, "equal": 0, "cw_lower": 0},
                "comparison_equal_l2": {"scw_lower": 0, "equal": 1, "cw_lower": 0},
                "scored": 1, "records": [{"id": "a", "mad_cw": 0.2, "mad_scw": 0.1, "l2_cw": 2.0,
                                          "l2_scw": 1.0, "mad_cw_equal_l2": 0.05}]}

    monkeypatch.setattr(figures, "figure4_for_model", fake_figure4)
    code = main(["figure", "figure4", "--limit", "3", "--scale", "2011", "--out", str(tmp_path),
                 "--cw-steps", "7", "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["fraction_scw_lower"] == 1.0
    assert seen == {"model": "efficientnet-lite0", "limit": 3, "scale": "2011", "out_dir": str(tmp_path),
                    "cw": {"binary_search_steps": 5, "steps": 7}}
    assert main(["figure", "figure4", "--limit", "3"]) == 0
    assert "sC&W has the lower MAD on 100.0% of 1 images" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["figure", "figure4", "--limit", "0"],
    ["figure", "figure4", "--scale", "2012"],
    ["figure", "figure1", "--cw-steps", "-1"],
    ["figure", "figure3"],
    ["figure"],
])
def test_cli_figure_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_cli_figure1_missing_image_is_an_error(tmp_path, capsys):
    code = main(["figure", "figure1", "--image", str(tmp_path / "missing.png"), "--out", str(tmp_path)])
    assert code == 2
    assert "figure: error:" in capsys.readouterr().err


def test_cli_figure1_bad_index(tmp_path, capsys):
    code = main(["figure", "figure1", "--index", "999", "--out", str(tmp_path)])
    assert code == 2
    assert "--index" in capsys.readouterr().err
