"""The perturbation operators P an attack optimises through: linearity, adjoint, gradients, bad input."""

from __future__ import annotations

import pytest
import torch

from devices import DEVICES
from smoothadv.attacks.presets import OPERATORS
from smoothadv.core.errors import ConfigError, InputError, NonFiniteError, ShapeError
from smoothadv.smoothing import OPERATOR_KINDS, DCTSubspace, GaussianLowPass, Smoothing, describe_operator

OPERATOR_CASES = {
    "guided": Smoothing(alpha=0.9, cg_tol=1e-13),  # refined to rounding: exact adjoint and gradient
    "lowpass": GaussianLowPass(sigma=1.3),
    "dct": DCTSubspace(ratio=0.4),
}


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def guide(device, dtype=torch.float64, shape=(2, 3, 9, 7)):
    generator = torch.Generator().manual_seed(0)
    return torch.rand(shape, generator=generator, dtype=dtype).to(device)


@pytest.mark.parametrize("kind", list(OPERATOR_CASES))
class TestOperatorTable:
    def test_adjoint_identity(self, kind, device):
        images = guide(device)
        operator = OPERATOR_CASES[kind].prepare(images)
        z, g = torch.randn_like(images), torch.randn_like(images)
        left = (operator(z) * g).sum()
        right = (z * operator.adjoint(g)).sum()
        assert abs(float(left - right)) <= 1e-10 * float(left.abs() + right.abs() + 1)

    def test_linear_and_follows_the_input(self, kind, device):
        images = guide(device, dtype=torch.float32)
        operator = OPERATOR_CASES[kind].prepare(images)
        z, w = torch.randn_like(images), torch.randn_like(images)
        out = operator(2.0 * z - w)
        torch.testing.assert_close(out, 2.0 * operator(z) - operator(w), atol=1e-4, rtol=1e-4)
        assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device

    def test_gradcheck(self, kind, device):
        images = guide(device, shape=(1, 2, 5, 4))
        operator = OPERATOR_CASES[kind].prepare(images)
        z = torch.randn_like(images).requires_grad_(True)
        assert torch.autograd.gradcheck(operator, (z,), eps=1e-6, atol=1e-6)

    def test_backward_is_the_adjoint(self, kind, device):
        images = guide(device)
        operator = OPERATOR_CASES[kind].prepare(images)
        z, g = torch.randn_like(images).requires_grad_(True), torch.randn_like(images)
        (gradient,) = torch.autograd.grad((operator(z) * g).sum(), z)
        torch.testing.assert_close(gradient, operator.adjoint(g), atol=1e-10, rtol=1e-8)

    def test_constant_passes_unchanged(self, kind, device):
        images = guide(device)
        operator = OPERATOR_CASES[kind].prepare(images)
        constant = torch.full_like(images, 0.3)
        torch.testing.assert_close(operator(constant), constant, atol=1e-10, rtol=1e-8)

    def test_bad_signals(self, kind):
        images = guide("cpu")
        operator = OPERATOR_CASES[kind].prepare(images)
        with pytest.raises(ShapeError):
            operator(torch.zeros(1, 3, 9, 7, dtype=torch.float64))
        with pytest.raises(InputError):
            operator(torch.zeros(images.shape, dtype=torch.long))
        with pytest.raises(NonFiniteError):
            operator(torch.full_like(images, float("nan")))

    def test_recorded_parameters(self, kind):
        described = describe_operator(OPERATOR_CASES[kind])
        if kind == "guided":  # as sC&W and qPGD2 recorded it before the other operators existed
            assert described == vars(OPERATOR_CASES[kind])
        else:
            assert described["operator"] == kind


def test_dct_subspace_is_an_orthogonal_projection():
    images = guide("cpu", shape=(2, 1, 16, 12))
    operator = DCTSubspace(ratio=0.25).prepare(images)
    z = torch.randn_like(images)
    once = operator(z)
    torch.testing.assert_close(operator(once), once, atol=1e-12, rtol=1e-10)  # idempotent
    kept = (4 * 3) / (16 * 12)  # ceil(0.25 * 16) x ceil(0.25 * 12) of the frequencies
    noise = torch.randn(200, 1, 16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    share = operator_share(DCTSubspace(ratio=0.25), noise)
    assert abs(share - kept) < 0.01


def operator_share(config, noise):
    prepared = config.prepare(torch.full_like(noise, 0.5))
    return float((prepared(noise).flatten(1).pow(2).sum(1) / noise.flatten(1).pow(2).sum(1)).mean())


def test_lowpass_smooths_flat_regions_and_edges_alike_unlike_the_guided_smoothing():
    """The image-agnostic low-pass blurs across an edge of the guide; the guided smoothing keeps it."""
    images = torch.full((1, 1, 12, 12), 0.2, dtype=torch.float64)
    images[..., :, 6:] = 0.9
    step = torch.zeros_like(images)
    step[..., :, 6:] = 1.0  # a perturbation with a jump on the guide's edge
    operators = {"guided": Smoothing(alpha=0.95, kernel="gaussian", sigma=0.05),
                 "lowpass": GaussianLowPass(sigma=2.0)}
    smoothed = {kind: config.prepare(images)(step) for kind, config in operators.items()}
    jump = {kind: float((out[..., 6:7] - out[..., 5:6]).mean()) for kind, out in smoothed.items()}
    assert jump["guided"] > 0.9 and jump["lowpass"] < 0.4


def test_presets_are_matched_to_the_guided_smoothing_by_kept_noise_energy():
    """benchmarks/operators.py measured the match on test images; a flat check of the image-agnostic
    operators' share on a 28x28 grid against the MNIST preset's value in the presets' comment."""
    noise = torch.randn(50, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for kind in ("lowpass", "dct"):
        assert 0.025 < operator_share(OPERATORS["mnist"][kind], noise) < 0.037, kind


@pytest.mark.parametrize(("make", "error"), [
    (lambda: GaussianLowPass(sigma=0), ConfigError),
    (lambda: GaussianLowPass(sigma=float("inf")), ConfigError),
    (lambda: DCTSubspace(ratio=0), ConfigError),
    (lambda: DCTSubspace(ratio=1.5), ConfigError),
    (lambda: DCTSubspace(ration=0.5), ConfigError),
])
def test_bad_configurations(make, error):
    with pytest.raises(error):
        make()


def test_kinds_are_the_registry_of_operators():
    assert set(OPERATOR_KINDS) == {"guided", "lowpass", "dct"}
    for preset in ("mnist", "imagenet"):
        assert {kind: config.kind for kind, config in OPERATORS[preset].items()} == {
            kind: kind for kind in OPERATOR_KINDS}
