"""A user's own model on a user's own image folder, through `smoothadv evaluate` to the report: as a
TorchScript file, and as package.module:factory + safetensors weights + ImageNet mean/std (also from a
model spec file)."""

from __future__ import annotations

import json

import pytest
import torch

from bad_inputs import FACTORY, MEAN, STD, build_workspace
from smoothadv.cli import main
from smoothadv.models import ModelSpec


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return build_workspace(tmp_path_factory.mktemp("user_model"))


def _evaluate(capsys, model_args, ws, out):
    code = main(["evaluate", *model_args, "--data", ws["imgs"], "--attacks", "fgsm,pgd2,deepfool",
                 "--epsilons", "fgsm=0.01,0.05", "--out", out, "--no-progress", "--threads", "1", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_factory_and_torchscript_models_evaluate_to_a_report(workspace, capsys, tmp_path):
    ws = workspace
    factory = ["--model", FACTORY, "--weights", ws["small_cnn_safetensors"], "--input-size", "32",
               "--mean", MEAN, "--std", STD]
    by_factory = _evaluate(capsys, factory, ws, str(tmp_path / "factory"))
    by_spec_file = _evaluate(capsys, ["--model", ws["mynet_toml"]], ws, str(tmp_path / "spec"))
    # The TorchScript file holds the bare network: the normalisation is declared beside it.
    by_script = _evaluate(capsys, ["--model", ws["small_cnn_pt"], "--input-size", "32", "--mean", MEAN,
                                   "--std", STD], ws, str(tmp_path / "script"))
    for payload in (by_factory, by_spec_file, by_script):
        assert (tmp_path / payload["files"]["report"]).is_file()
        assert payload["config"]["preset"] == "mnist" and "32x32 input" in payload["config"]["preset_from"]
        assert payload["config"]["labels_from_model"] is True
        assert payload["runtime"]["threads"] == 1
        rows = {row["attack"]: row for row in payload["table"]}
        assert set(rows) == {"fgsm", "pgd2", "deepfool"} and rows["fgsm"]["epsilons"] == [0.01, 0.05]
        assert all(row["n"] == 3 and row["p_success"] is not None for row in rows.values())
    # The three ways of naming the same model give the same results (same weights, same normalisation).
    tables = [[(r["attack"], r["p_success"], r["mean_l2"]) for r in p["table"]]
              for p in (by_factory, by_spec_file, by_script)]
    assert tables[0] == tables[1] == tables[2]


def test_the_declared_normalisation_is_applied(workspace):
    import bad_input_nets
    from safetensors.torch import load_file

    spec = ModelSpec.parse(workspace["mynet_toml"])
    model = spec.load()
    bare = bad_input_nets.small_cnn().eval()
    bare.load_state_dict(load_file(workspace["small_cnn_safetensors"]))
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([float(v) for v in MEAN.split(",")]).view(1, 3, 1, 1)
    std = torch.tensor([float(v) for v in STD.split(",")]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), bare((x - mean) / std), atol=1e-6)
        assert not torch.allclose(model(x), bare(x), atol=1e-3)
    assert model.input_shape == (3, 32, 32)
