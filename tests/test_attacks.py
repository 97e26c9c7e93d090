"""Attack table on a tiny model: bounds, budgets, honesty of success flags, batching, smoothness."""

from __future__ import annotations

import warnings

import pytest
import torch

from attack_fixtures import blocky_images, tiny_classifier
from devices import DEVICES
from smoothadv.attacks import (
    ATTACKS,
    FIXED_DISTORTION_ATTACKS,
    CarliniWagnerL2,
    make_attack,
    margin_loss,
    quantize_8bit,
)
from smoothadv.attacks.apgd import APGD2, checkpoints
from smoothadv.attacks.base import quantize_within_budget
from smoothadv.attacks.losses import OBJECTIVES
from smoothadv.attacks.minimum_norm import DDN, FMN, DDNOptions
from smoothadv.attacks.strategies import BestIterates
from smoothadv.core.errors import (
    ConfigError,
    InputError,
    ModelError,
    OptionError,
    PreflightWarning,
    RangeError,
    ShapeError,
)
from smoothadv.smoothing import GaussianLowPass, Smoothing

FAST = {
    "cw": {"binary_search_steps": 3, "steps": 30},
    "scw": {"binary_search_steps": 3, "steps": 30},
    "pgd2": {"epsilon": 1.5},
    "qpgd2": {"epsilon": 1.5},
    "ddn": {"steps": 30}, "sddn": {"steps": 30},
    "fmn": {"steps": 30}, "sfmn": {"steps": 30},
    "apgd2": {"epsilon": 1.5, "steps": 10}, "sapgd2": {"epsilon": 4.0, "steps": 10},
    "spgd2": {"epsilon": 4.0},
    "ddn+lowpass": {"steps": 30}, "fmn+dct": {"steps": 30}, "apgd2+lowpass": {"epsilon": 4.0, "steps": 10},
}
#: The registered attacks and a smooth form with each image-agnostic operator.
TABLE = [*ATTACKS, "ddn+lowpass", "fmn+dct", "apgd2+lowpass"]
#: Each smooth attack and its plain version.
SMOOTH_PAIRS = [("cw", "scw"), ("ddn", "sddn"), ("fmn", "sfmn"), ("apgd2", "sapgd2"), ("pgd2", "spgd2")]


@pytest.fixture(scope="module", params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(scope="module")
def model(device):
    return tiny_classifier().to(device)


@pytest.fixture(scope="module")
def images(device):
    return blocky_images(batch=6).to(device)


@pytest.fixture(scope="module")
def results(model, images):
    originals = images.clone()
    out = {name: make_attack(name, model, preset="mnist", **FAST.get(name, {}))(images) for name in TABLE}
    assert torch.equal(images, originals), "an attack modified its input images"
    return out


@pytest.mark.parametrize("name", TABLE)
class TestAttackTable:
    def test_outputs_are_valid_8bit_images(self, results, images, name):
        adversarial = results[name].adversarial
        assert adversarial.shape == images.shape
        assert adversarial.min() >= 0 and adversarial.max() <= 1
        assert torch.allclose(adversarial * 255, torch.round(adversarial * 255), atol=1e-4)

    def test_success_flags_agree_with_model(self, results, model, name):
        result = results[name]
        with torch.no_grad():
            predictions = model(result.adversarial).argmax(dim=1)
        assert torch.equal(predictions, result.predictions)
        assert torch.equal(result.success, predictions != result.labels)

    def test_distortions_are_measured_on_returned_images(self, results, images, name):
        result = results[name]
        difference = (result.adversarial - images).flatten(1)
        assert torch.allclose(result.l2, difference.norm(dim=1))
        assert torch.allclose(result.linf, difference.abs().amax(dim=1))

    def test_batched_equals_per_image(self, model, images, results, name):
        attack = make_attack(name, model, preset="mnist", **FAST.get(name, {}))
        for i in (0, 3):
            single = attack(images[i:i + 1])
            assert torch.allclose(single.adversarial[0], results[name].adversarial[i], atol=1.5 / 255)
            assert bool(single.success[0]) == bool(results[name].success[i])

    def test_generate_returns_the_same_images(self, model, images, results, name):
        generated = make_attack(name, model, preset="mnist", **FAST.get(name, {})).generate(images)
        torch.testing.assert_close(generated, results[name].adversarial, atol=1e-6, rtol=0)

    def test_records(self, results, name):
        records = results[name].to_records()
        assert len(records) == 6 and records[0]["attack"] == name
        assert {"success", "l2", "linf", "iterations", "gradient_evaluations"} <= set(records[0])


@pytest.mark.parametrize("name", [*FIXED_DISTORTION_ATTACKS, "apgd2+lowpass"])
def test_fixed_distortion_attacks_respect_epsilon(results, name):
    result = results[name]
    epsilon = result.parameters["epsilon"]
    measured = result.linf if result.parameters["norm"] == "linf" else result.l2
    assert bool((measured <= epsilon + 1e-5).all())


def test_strong_attacks_succeed_on_tiny_model(results):
    for name in ("ifgsm", "pgd2", "cw", "scw", "deepfool", "ddn", "sddn", "fmn", "sfmn", "apgd2", "sapgd2"):
        assert results[name].success_rate == 1.0, name


def test_minimum_norm_attacks_find_smaller_perturbations_than_the_fixed_budget(results):
    """DDN and FMN adapt the norm per image: they stay well below what APGD2, which succeeded on every
    image, spent at its fixed budget."""
    assert results["apgd2"].success_rate == 1.0
    for name in ("ddn", "fmn"):
        assert float(results[name].l2.mean()) < 0.8 * float(results["apgd2"].l2.mean()), name


def test_binary_search_lowers_distortion(model, images):
    single = CarliniWagnerL2(model, binary_search_steps=1, steps=100, initial_constant=15.0)(images)
    searched = CarliniWagnerL2(model, binary_search_steps=6, steps=100, initial_constant=15.0)(images)
    both = single.success & searched.success
    assert bool(both.any())
    assert float(searched.l2[both].mean()) < 0.95 * float(single.l2[both].mean())
    assert bool((searched.l2[both] <= single.l2[both] + 1e-6).all())


def flat_region_roughness(perturbation: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Energy of perturbation differences across 4-neighbour edges where the guide is flat, relative to
    the perturbation's energy: sum_{flat edges} (r_i - r_j)^2 / sum_i r_i^2, per image (lower = smoother)."""
    rough = torch.zeros(len(perturbation), device=perturbation.device)
    for dim in (2, 3):
        d_guide = guide.diff(dim=dim).abs()
        d_pert = perturbation.diff(dim=dim)
        rough += (d_pert.pow(2) * (d_guide < 1e-6)).flatten(1).sum(dim=1)
    return rough / perturbation.flatten(1).pow(2).sum(dim=1).clamp_min(1e-12)


@pytest.mark.parametrize(("plain", "smooth"), SMOOTH_PAIRS)
def test_smooth_attacks_are_smoother_on_flat_regions(results, images, plain, smooth):
    """Measure: energy of the perturbation's differences across flat edges of the guide, relative to its
    energy (``flat_region_roughness``), at most half of the plain attack's on the same images."""
    both = results[plain].success & results[smooth].success
    assert bool(both.any())
    rough_plain = flat_region_roughness(results[plain].adversarial - images, images)[both]
    rough_smooth = flat_region_roughness(results[smooth].adversarial - images, images)[both]
    assert float(rough_smooth.mean()) < 0.5 * float(rough_plain.mean())


@pytest.mark.parametrize("name", ["cw+dct", "ddn+dct", "fmn+dct", "apgd2+dct"])
def test_latent_perturbation_lies_in_the_operator_range(model, name):
    """r = P(z) exactly: with the DCT projection, P(r) = r for every image whose pixels were not clipped."""
    images = 0.3 + 0.4 * blocky_images(batch=4)  # away from 0 and 1, so that the clip rarely binds
    options = {"epsilon": 3.0, "steps": 20} if name.startswith("apgd2") else {"steps": 40}
    if name.startswith("cw"):
        options = {"binary_search_steps": 2, "steps": 30}
    result = make_attack(name, model, preset="mnist", quantize=False, **options)(images)
    perturbation = result.adversarial - images
    operator = ATTACKS[name].options("mnist")["smoothing"].prepare(images)
    unclipped = ((result.adversarial > 0) & (result.adversarial < 1)).flatten(1).all(dim=1)
    unclipped &= perturbation.flatten(1).norm(dim=1) > 0
    assert bool(unclipped.any())
    torch.testing.assert_close(operator(perturbation)[unclipped], perturbation[unclipped],
                               atol=1e-5, rtol=1e-4)


class CountingModel(torch.nn.Module):
    """Wraps a model and counts its forward passes and the images they carry."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.images_seen = model, 0, 0

    def forward(self, x):
        self.calls += 1
        self.images_seen += len(x)
        return self.model(x)


@pytest.mark.parametrize(("steps", "measured", "expected_calls"), [(1, True, 2), (1, False, 1), (3, True, 4)])
def test_first_step_reuses_the_clean_forward_pass(model, images, steps, measured, expected_calls):
    counting = CountingModel(model).eval()
    attack = make_attack("pgd2", counting, preset="mnist", epsilon=1.5, steps=steps)
    adversarial = attack(images).adversarial if measured else attack.generate(images)
    assert counting.calls == expected_calls  # steps forward passes (the first shared) + the measurement
    fresh = make_attack("pgd2", model, preset="mnist", epsilon=1.5, steps=steps)
    fresh.reuses_clean_graph = False  # first gradient from its own forward pass
    assert torch.equal(adversarial, fresh.generate(images))


class ThresholdModel(torch.nn.Module):
    """One-pixel images: class 1 wins when the pixel exceeds ``threshold``; counts the images it sees."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold, self.images_seen = threshold, 0

    def forward(self, x):
        self.images_seen += len(x)
        score = 1000.0 * (x.flatten(1).mean(dim=1) - self.threshold)
        return torch.stack([torch.zeros_like(score), score], dim=1)


def _offer(best, model, value: float):
    iterate = torch.full((1, 1, 1, 1), value, dtype=torch.float64)
    return best.offer(iterate, model(iterate), torch.tensor([0]))


def test_best_iterates_checks_the_least_distorted_first_and_falls_back():
    model = ThresholdModel(threshold=0.6)
    original = torch.full((1, 1, 1, 1), 0.5, dtype=torch.float64)
    best = BestIterates(model, original, torch.tensor([0]), None, verify_8bit=True)
    for value in (0.7, 0.65, 0.6005):  # each succeeds and is less distorted than the one before
        assert not bool(_offer(best, model, value))  # kept aside for the check after rounding
    model.images_seen = 0
    improved, verified = best.settle()
    # 0.6005 rounds to 153/255 = 0.6, which fails; the next older one, 0.65, passes once rounded
    assert model.images_seen == 2
    assert bool(improved[0]) and bool(verified[0])
    assert float(best.images[0].item()) == round(0.65 * 255) / 255
    assert float(best.l2[0]) == pytest.approx(round(0.65 * 255) / 255 - 0.5)
    assert not bool(best.settle()[0][0])  # nothing new since


class CallCountingThreshold(ThresholdModel):
    def __init__(self, threshold: float):
        super().__init__(threshold)
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(len(x))
        return super().forward(x)


def test_best_iterates_settle_checks_by_depth_in_few_passes():
    # image 0 improves at offers 1 and 3, image 1 at offers 2 and 4; the newest of each are checked together,
    # then only image 0's next older one, whose newest (0.6005) fails once rounded
    model = CallCountingThreshold(threshold=0.6)
    original = torch.full((2, 1, 1, 1), 0.5, dtype=torch.float64)
    best = BestIterates(model, original, torch.tensor([0, 0]), None, verify_8bit=True)
    for row, value in ((0, 0.7), (1, 0.8), (0, 0.6005), (1, 0.7)):
        iterate = torch.full((1, 1, 1, 1), value, dtype=torch.float64)
        best.offer(iterate, model(iterate), torch.tensor([row]))
    model.batches.clear()
    improved, verified = best.settle()
    assert model.batches == [2, 1]
    assert improved.tolist() == [True, True] and verified.tolist() == [True, True]
    assert best.images[:, 0, 0, 0].tolist() == [round(0.7 * 255) / 255, round(0.7 * 255) / 255]


def test_best_iterates_without_rounding_keeps_every_improvement_at_once():
    model = ThresholdModel(threshold=0.6)
    original = torch.full((1, 1, 1, 1), 0.5, dtype=torch.float64)
    best = BestIterates(model, original, torch.tensor([0]), None, verify_8bit=False)
    assert bool(_offer(best, model, 0.6005))
    assert float(best.l2[0]) == pytest.approx(0.1005)
    assert not bool(_offer(best, model, 0.55))  # fails: best unchanged
    assert float(best.l2[0]) == pytest.approx(0.1005)


def test_scw_checks_rounding_once_per_window_not_per_improvement(model, images):
    # images through the model: the iterations, the clean pass, and at most one check after rounding per
    # image and abort window (a tenth of the steps); checking each improvement as it came cost 89 checks
    # here instead of 26
    counting = CountingModel(model).eval()
    attack = CarliniWagnerL2(counting, smoothing=Smoothing(alpha=0.9), binary_search_steps=1, steps=50,
                             abort_early=False, initial_constant=10.0, margin=0.0)
    attack.generate(images)
    batch = len(images)
    assert counting.images_seen <= (50 + 1) * batch + 10 * batch


def test_qpgd2_is_pgd2_with_a_smoother(model, images):
    smoothing = Smoothing(alpha=0.9)
    via_name = make_attack("qpgd2", model, preset="mnist", epsilon=1.5, smoothing=smoothing)(images)
    via_pgd2 = make_attack("pgd2", model, preset="mnist", epsilon=1.5, smoothing=smoothing)(images)
    assert torch.equal(via_name.adversarial, via_pgd2.adversarial)


def test_margin_loss_untargeted_and_targeted():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.5]])
    labels = torch.tensor([0, 1])
    assert torch.allclose(margin_loss(logits, labels), torch.tensor([2.0, 0.5]))
    assert torch.allclose(margin_loss(logits, labels, margin=1.0), torch.tensor([3.0, 1.5]))
    targets = torch.tensor([1, 2])
    assert torch.allclose(margin_loss(logits, labels, targets=targets), torch.tensor([2.0, 0.5]))


@pytest.mark.parametrize(("name", "options"), [
    ("pgd2", {"epsilon": 3.0, "steps": 30}),
    ("ddn", {"steps": 50}), ("sddn", {"steps": 50}),
    ("fmn", {"steps": 50}), ("sfmn", {"steps": 50}),
    ("apgd2", {"epsilon": 3.0, "steps": 30}), ("apgd2", {"epsilon": 3.0, "steps": 30, "loss": "dlr"}),
    ("sapgd2", {"epsilon": 6.0, "steps": 30}), ("spgd2", {"epsilon": 6.0, "steps": 30}),
])
def test_targeted_attack_reaches_target(model, images, name, options):
    with torch.no_grad():
        targets = (model(images).argmax(1) + 1) % 5
    result = make_attack(name, model, preset="mnist", **options)(images, targets=targets)
    assert torch.equal(result.success, result.predictions == targets)
    assert result.success_rate >= 0.5


def test_quantize_within_budget_never_exceeds_epsilon():
    generator = torch.Generator().manual_seed(1)
    originals = quantize_8bit(torch.rand(4, 3, 8, 8, generator=generator))
    adversarial = (originals + 0.05 * torch.randn(4, 3, 8, 8, generator=generator)).clamp(0, 1)
    epsilon = float((adversarial - originals).abs().amax())
    q = quantize_within_budget(adversarial, originals, epsilon, "linf")
    assert float((q - originals).abs().amax()) <= epsilon + 1e-6
    l2_eps = float((adversarial - originals).flatten(1).norm(dim=1).min())
    projected = originals + (adversarial - originals) * (
        l2_eps / (adversarial - originals).flatten(1).norm(dim=1))[:, None, None, None]
    q2 = quantize_within_budget(projected, originals, l2_eps, "l2")
    assert bool(((q2 - originals).flatten(1).norm(dim=1) <= l2_eps * (1 + 1e-6)).all())


class TestPreflight:
    def test_inputs_outside_unit_range(self, model, images):
        with pytest.raises(RangeError):
            make_attack("fgsm", model, preset="mnist")(images * 2)

    def test_labels_out_of_range(self, model, images):
        with pytest.raises(InputError, match="lie in"):
            make_attack("fgsm", model, preset="mnist")(images, torch.full((6,), 7))

    def test_labels_wrong_shape(self, model, images):
        with pytest.raises(ShapeError):
            make_attack("fgsm", model, preset="mnist")(images, torch.zeros(5, dtype=torch.long))

    def test_probabilities_warn(self, images):
        softmax_model = torch.nn.Sequential(tiny_classifier(), torch.nn.Softmax(dim=1)).eval()
        softmax_model = softmax_model.to(images.device)
        with pytest.warns(PreflightWarning, match="probabilities"):
            make_attack("fgsm", softmax_model, preset="mnist")(images)

    def test_training_mode_warns(self, images):
        with pytest.warns(PreflightWarning, match="training mode"):
            make_attack("fgsm", tiny_classifier().train().to(images.device), preset="mnist")(images)

    def test_zero_gradients_warn(self, images):
        class Constant(torch.nn.Module):
            def forward(self, x):
                return torch.tensor([[2.0, 0.0]], device=x.device).repeat(len(x), 1) + 0 * x.sum()

        with pytest.warns(PreflightWarning, match="gradient is exactly zero"):
            make_attack("pgd2", Constant().eval(), preset="mnist")(images, torch.zeros(6, dtype=torch.long,
                                                                                   device=images.device))

    def test_no_warning_for_clean_model(self, model, images):
        with warnings.catch_warnings():
            warnings.simplefilter("error", PreflightWarning)
            make_attack("fgsm", model, preset="mnist")(images)

    def test_bad_configuration(self, model, images):
        with pytest.raises(ConfigError):
            make_attack("nope", model, preset="mnist")
        with pytest.raises(ConfigError):
            make_attack("pgd2", model, preset="mnist", epsilon=-1.0)
        with pytest.raises(ConfigError):
            make_attack("cw", model, preset="mnist", steps=0)
        with pytest.raises(ConfigError):
            make_attack("deepfool", model, preset="mnist")(
                images[:2], targets=torch.zeros(2, dtype=torch.long, device=images.device))

    def test_model_must_return_logits(self, images):
        with pytest.raises(ModelError):
            make_attack("fgsm", torch.nn.Identity().eval(), preset="mnist")(images)


def test_objectives_are_lower_closer_to_the_goal():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.5]])
    labels, targets = torch.tensor([0, 1]), torch.tensor([3, 2])
    # DLR untargeted: (y_t - max other) / (y_pi1 - y_pi3);
    # targeted: (y_t - y_s) / (y_pi1 - (y_pi3 + y_pi4) / 2)
    torch.testing.assert_close(OBJECTIVES["dlr"](logits, labels), torch.tensor([2.0 / 3.0, 1.0 / 1.5]))
    torch.testing.assert_close(OBJECTIVES["dlr"](logits, labels, targets=targets),
                               torch.tensor([4.0 / 3.5, 1.0 / 1.75]))
    torch.testing.assert_close(OBJECTIVES["margin"](logits, labels), torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(OBJECTIVES["margin"](logits, labels, targets=targets),
                               torch.tensor([4.0, 1.0]))
    reference = torch.log_softmax(logits, dim=1)
    torch.testing.assert_close(OBJECTIVES["ce"](logits, labels), reference[[0, 1], [0, 1]])
    torch.testing.assert_close(OBJECTIVES["ce"](logits, labels, targets=targets), -reference[[0, 1], [3, 2]])


def test_cross_entropy_keeps_its_gradient_on_a_confident_model():
    """log_softmax rounds to 0 at a margin of 60 in float32; the objective still has a gradient."""
    logits = torch.tensor([[60.0, 0.0, -10.0]], requires_grad=True)
    assert float(torch.log_softmax(logits.detach(), dim=1)[0, 0]) == 0.0
    (gradient,) = torch.autograd.grad(OBJECTIVES["ce"](logits, torch.tensor([0])).sum(), logits)
    assert float(gradient.abs().max()) > 0


def test_apgd_checkpoints_follow_the_paper():
    assert sorted(checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_attack_options_are_a_dataclass_recorded_as_parameters(model):
    attack = DDN(model, steps=7, smoothing=Smoothing())
    assert attack.steps == 7 and attack.options == DDNOptions(steps=7, smoothing=Smoothing())
    assert attack.parameters() == {"quantize": True, **{k: v for k, v in vars(attack.options).items()
                                                         if k != "smoothing"},
                                   "smoothing": vars(Smoothing())}
    assert attack.name == "sddn" and DDN(model, smoothing=GaussianLowPass()).name == "ddn+lowpass"
    with pytest.raises(OptionError, match="steps"):
        DDN(model, stpes=3)
    with pytest.raises(ConfigError):
        APGD2(model, 1.0, momentum=0.0)
    with pytest.raises(ConfigError):
        FMN(model, loss="ce")


def test_dlr_needs_enough_classes(images):
    model = tiny_classifier(classes=2)
    with pytest.raises(ConfigError, match="classes"):
        APGD2(model, 1.0, loss="dlr", steps=2)(images)
