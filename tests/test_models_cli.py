"""CLI commands of the data/models layer: ``models``, ``predict`` and ``train``, with and without --json."""

from __future__ import annotations

import json

import pytest

from smoothadv.cli import main
from smoothadv.data import foolbox_samples_dir


def _run(capsys, argv):
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_models_text_and_json(capsys):
    status, out, _ = _run(capsys, ["models"])
    assert status == 0
    assert "c4-adv" in out and "efficientnet-lite2+bilateral" in out and "260x260x3" in out
    status, out, _ = _run(capsys, ["models", "--json"])
    entries = {e["name"]: e for e in json.loads(out)}
    assert status == 0 and entries["efficientnet-lite0"]["input_size"] == 224
    assert entries["c4"]["accuracy"]["total"] == 10_000 and entries["c4"]["accuracy"]["value"] >= 0.99
    assert entries["c4"]["sha256"] and entries["c4"]["reproduce"].startswith("smoothadv train c4")


def test_predict_imagenet_photos_json(capsys):
    folder = foolbox_samples_dir()
    photos = [str(folder / "imagenet_00_243.jpg"), str(folder / "imagenet_13_471.jpg")]
    argv = ["predict", "--model", "efficientnet-lite0", "--top", "2", "--json", *photos]
    status, out, _ = _run(capsys, argv)
    results = json.loads(out)
    assert status == 0 and [r["image"] for r in results] == photos
    assert results[0]["top"][0][:2] == [243, "bull mastiff"] and results[1]["top"][0][:2] == [471, "cannon"]
    assert len(results[0]["top"]) == 2 and results[0]["top"][0][2] >= results[0]["top"][1][2]


def test_predict_text(capsys):
    digits = sorted(foolbox_samples_dir().glob("mnist_0[0-2]_*.png"))  # MNIST test digits 7, 2, 1
    status, out, _ = _run(capsys, ["predict", "--model", "c4", "--top", "3", *map(str, digits)])
    lines = out.splitlines()
    assert status == 0 and len(lines) == 3 * 4 and lines[0] == str(digits[0])
    assert lines[1].split()[:3] == ["1.", "7", "7"] and lines[5].split()[:2] == ["1.", "2"]


def test_predict_mnist_digit_with_c4(capsys):
    digit = next(foolbox_samples_dir().glob("mnist_00_*.png"))  # the first MNIST test digit, a 7
    status, out, _ = _run(capsys, ["predict", "--model", "c4-adv", "--top", "1", "--json", str(digit)])
    result = json.loads(out)[0]
    assert status == 0 and result["top"][0][0] == 7 and result["top"][0][1] == "7"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "--model", "resnet", "x.png"], "known models"),
        (["predict", "--model", "c4", "{photo}"], "expects greyscale"),
        (["predict", "--model", "c4", "{missing}"], "not found"),
    ],
)
def test_predict_errors_exit_2(capsys, tmp_path, argv, message):
    photo = str(foolbox_samples_dir() / "imagenet_00_243.jpg")
    argv = [a.format(photo=photo, missing=tmp_path / "none.png") for a in argv]
    status, out, err = _run(capsys, argv)
    assert status == 2 and out == "" and message in err and err.startswith("smoothadv predict: error:")


def test_predict_top_must_be_positive(capsys):
    photo = str(foolbox_samples_dir() / "imagenet_00_243.jpg")
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--model", "c4", "--top", "0", photo])
    assert stop.value.code == 2 and "--top: expected a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_predict_user_model_needs_declared_input(capsys, tmp_path):
    import torch
    from torch import nn

    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(nn.Flatten()), str(path))
    photo = str(foolbox_samples_dir() / "imagenet_00_243.jpg")
    status, _, err = _run(capsys, ["predict", "--model", str(path), photo])
    assert status == 2 and "--input-size" in err


def test_train_cli_quick(capsys, tmp_path):
    out_file = tmp_path / "c4.safetensors"
    argv = ["train", "c4", "--adversarial", "--epochs", "1", "--train-limit", "128", "--eval-limit", "32"]
    argv += ["--batch-size", "64", "--threads", "1", "--no-progress", "--out", str(out_file)]
    status, out, _ = _run(capsys, [*argv, "--json"])
    report = json.loads(out)
    assert status == 0 and out_file.is_file() and report["train_size"] == 128 and len(report["sha256"]) == 64
    assert report["adversarial"] is True and len(report["valid_accuracy"]) == 1
