"""`smoothadv attack` end to end on a TorchScript user model: files in, adversarial PNGs + table out."""

from __future__ import annotations

import json

import pytest
import torch

from attack_fixtures import blocky_images, tiny_classifier
from smoothadv.cli import main
from smoothadv.core.images import read_image, save_image


@pytest.fixture()
def setup(tmp_path):
    model_path = tmp_path / "tiny.pt"
    torch.jit.script(tiny_classifier()).save(str(model_path))
    inputs = []
    for i, image in enumerate(blocky_images(batch=3)):
        inputs.append(str(save_image(image, tmp_path / f"img{i}.png")))
    return model_path, inputs, tmp_path / "out"


def test_attack_writes_pngs_that_fool_the_model(setup, capsys):
    model_path, inputs, out = setup
    code = main(["attack", *inputs, "--model", str(model_path), "--attack", "pgd2", "--epsilon", "2",
                 "--input-size", "12", "--channels", "1", "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["labels_from_model"] is True and len(summary["records"]) == 3
    model = tiny_classifier()
    for record in summary["records"]:
        saved = read_image(record["output"], channels=1)[None]
        prediction = int(model(saved).argmax())
        assert (prediction != record["label"]) == record["success"]
        assert record["l2"] <= 2.0 + 1e-5
    assert (out / "results.csv").read_text().count("\n") == 4


def test_attack_text_output_and_bad_input(setup, capsys, tmp_path):
    model_path, inputs, out = setup
    assert main(["attack", inputs[0], "--model", str(model_path), "--attack", "scw", "--input-size", "12",
                 "--channels", "1", "--out", str(out)]) == 0
    assert "labels: the model's predictions" in capsys.readouterr().out
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["attack", str(bad), "--model", str(model_path), "--attack", "fgsm", "--input-size", "12",
                 "--channels", "1", "--out", str(out)]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["attack", inputs[0], "--model", "no-such-model", "--attack", "fgsm", "--out", str(out)]) == 2
    assert main(["attack", inputs[0], "--model", str(model_path), "--attack", "cw", "--epsilon", "1",
                 "--input-size", "12", "--channels", "1", "--out", str(out)]) == 2


@pytest.mark.parametrize(("attack", "smoothing", "recorded"), [
    ("ddn", "guided", "sddn"), ("fmn", "lowpass", "fmn+lowpass"), ("apgd2", "dct", "apgd2+dct"),
])
def test_smoothing_runs_the_smooth_form(setup, capsys, attack, smoothing, recorded):
    model_path, inputs, out = setup
    epsilon = ["--epsilon", "4"] if attack == "apgd2" else []
    code = main(["attack", *inputs[:2], "--model", str(model_path), "--attack", attack,
                 "--smoothing", smoothing, *epsilon, "--input-size", "12", "--channels", "1",
                 "--preset", "mnist", "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["attack"] == recorded
    assert all(record["output"].endswith(f"_{recorded}.png") for record in summary["records"])


def test_smoothing_of_an_attack_without_a_smooth_form_is_refused(setup, capsys):
    model_path, inputs, out = setup
    assert main(["attack", inputs[0], "--model", str(model_path), "--attack", "deepfool",
                 "--smoothing", "dct", "--input-size", "12", "--channels", "1", "--out", str(out)]) == 2
    assert "has no smooth form" in capsys.readouterr().err
