"""ModelSpec (one description of a model for every command) and the runtime (device, threads)."""

from __future__ import annotations

import json

import pytest
import torch

from smoothadv.core.errors import ConfigError
from smoothadv.core.runtime import available_cpus, default_threads, resolve_device, set_runtime
from smoothadv.experiments.defaults import resolve_preset
from smoothadv.models import ModelSpec


def test_spec_file_paths_are_relative_to_the_file_and_options_override(tmp_path):
    (tmp_path / "sub").mkdir()
    spec_file = tmp_path / "sub" / "net.json"
    spec_file.write_text(json.dumps({"model": "net.pt", "input_size": 32, "mean": [0.5, 0.5, 0.5]}))
    spec = ModelSpec.parse(str(spec_file), input_size=48)
    assert spec.model == str(tmp_path / "sub" / "net.pt")
    assert spec.input_size == 48 and spec.mean == (0.5, 0.5, 0.5)
    factory = tmp_path / "f.toml"
    factory.write_text('model = "pkg.mod:make"\nweights = "w.safetensors"\ninput_size = 64\n')
    spec = ModelSpec.parse(str(factory))
    assert spec.model == "pkg.mod:make" and spec.weights == str(tmp_path / "w.safetensors")
    registered = tmp_path / "c4.toml"
    registered.write_text('model = "c4"\nname = "my-c4"\n')
    assert ModelSpec.parse(str(registered)).model == "c4"
    assert ModelSpec.parse(str(registered)).display_name == "my-c4"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "x.pt", "channels": 2}, "channels must be 1"),
        ({"model": "x.pt", "input_size": 0}, "positive integer"),
        ({"model": "x.pt", "input_size": 32, "resize": 16}, "at least input_size"),
        ({"model": "x.pt", "mean": (0.1, 0.2)}, "mean has 2 values"),
        ({"model": "x.pt", "channels": 1, "std": (0.1, 0.2, 0.3)}, "std has 3 values"),
        ({"model": "x.pt", "std": (0.0,)}, "> 0"),
        ({"model": "x.pt", "class_names": "cifar"}, "class_names must be"),
        ({"model": "c4", "channels": 1}, "drop --channels"),
        ({"model": ""}, "give a model"),
    ],
)
def test_bad_specs(options, message):
    with pytest.raises(ConfigError, match=message):
        ModelSpec(**options)


def test_preset_and_where_it_comes_from():
    assert resolve_preset("c4") == ("mnist", "c4 is an MNIST model")
    assert resolve_preset("efficientnet-lite0")[0] == "imagenet"
    assert resolve_preset(ModelSpec("pkg.mod:make", input_size=32))[0] == "mnist"
    assert resolve_preset(ModelSpec("pkg.mod:make", input_size=224)) == (
        "imagenet", "inferred from the 224x224 input (at least 64 pixels)")
    assert resolve_preset(ModelSpec("pkg.mod:make", input_size=224), "mnist") == ("mnist", "given")
    with pytest.raises(ConfigError, match="--input-size"):
        resolve_preset(ModelSpec("pkg.mod:make"))
    with pytest.raises(ConfigError):
        resolve_preset(ModelSpec("pkg.mod:make", preset="cifar"))


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    for bad in ("gpu0", "cuda:x", "tpu"):
        with pytest.raises(ConfigError, match="device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cpu"):
            resolve_device("cuda:0")


def test_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert 1 <= default_threads() <= available_cpus()
        monkeypatch.setattr("os.getloadavg", lambda: (1e6, 0.0, 0.0))
        assert default_threads() == 1  # a saturated machine still gets one thread
        runtime = set_runtime("cpu", 1)
        assert torch.get_num_threads() == 1 and runtime.to_dict()["threads"] == 1
        assert "--threads" in runtime.describe()
        with pytest.raises(ConfigError, match="positive integer"):
            set_runtime("cpu", 0)
    finally:
        torch.set_num_threads(before)
