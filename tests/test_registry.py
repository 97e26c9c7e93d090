"""The attack registry, names recorded from configuration, make_attack's preset rule, warnings at the
user's line, the evaluation plan, and the after-batch steps each run alone."""

from __future__ import annotations

import dataclasses
import inspect
import warnings

import pytest
import torch

from attack_fixtures import blocky_images, tiny_classifier
from smoothadv import Smoothing
from smoothadv.attacks import (
    ATTACKS,
    FIXED_DISTORTION_ATTACKS,
    PGD2,
    PRESETS,
    CarliniWagnerL2,
    SmoothCarliniWagnerL2,
    make_attack,
)
from smoothadv.core.errors import ConfigError, InferredDefaultWarning, PreflightWarning
from smoothadv.evaluation import EvaluationPlan, evaluate, load_adversarial
from smoothadv.evaluation.batch import BatchJob, attack_batch, kept_images_step, mad_step, transfer_step
from smoothadv.evaluation.records import save_adversarial
from smoothadv.models import load_model


class TestRegistry:
    def test_entries_know_label_colour_smoothness_family(self):
        assert list(ATTACKS) == ["fgsm", "ifgsm", "pgd2", "qpgd2", "cw", "scw", "deepfool", "ddn", "sddn",
                                 "fmn", "sfmn", "apgd2", "sapgd2", "spgd2"]
        scw = ATTACKS["scw"]
        assert scw.label == "sC&W" and scw.smooth and scw.cls is CarliniWagnerL2
        assert ATTACKS["qpgd2"].family == "fixed-distortion" and ATTACKS["cw"].family == "minimization"
        assert FIXED_DISTORTION_ATTACKS == ("fgsm", "ifgsm", "pgd2", "qpgd2", "apgd2", "sapgd2", "spgd2")
        assert ATTACKS["spgd2"].operator == "guided" and ATTACKS["sddn"].operator == "guided"
        assert len({spec.colour for spec in ATTACKS.values()}) == len(ATTACKS)

    @pytest.mark.parametrize(("written", "key"), [
        ("I-FGSM", "ifgsm"), ("sC&W", "scw"), ("C&W", "cw"), ("pgd_2", "pgd2"), ("QPGD2", "qpgd2"),
        (" DeepFool ", "deepfool"), ("sDDN", "sddn"), ("APGD-2", "apgd2"), ("DDN+lowpass", "ddn+lowpass"),
        ("cw+guided", "scw"), ("pgd2+guided", "qpgd2"), ("C&W+DCT", "cw+dct"), ("sddn+guided", "sddn"),
    ])
    def test_one_resolver_for_every_spelling(self, written, key):
        assert ATTACKS.resolve(written) == key

    def test_unknown_attack_suggests_the_closest(self):
        with pytest.raises(ConfigError, match="did you mean 'scw'"):
            ATTACKS.resolve("scx")

    def test_the_cli_help_names_every_attack_and_operator(self):
        from smoothadv.cli._options import ATTACK_HELP, SMOOTHING_KINDS
        from smoothadv.smoothing import OPERATOR_KINDS

        named = {word.strip(" ,") for word in ATTACK_HELP.replace("or ", "").split(", ")}
        assert set(ATTACKS) <= named
        assert tuple(OPERATOR_KINDS) == SMOOTHING_KINDS

    @pytest.mark.parametrize(("name", "message"), [
        ("fgsm+lowpass", "has no smooth form"), ("ifgsm+dct", "has no smooth form"),
        ("scw+lowpass", "already smooth"),
        ("ddn+blur", "unknown smoothing 'blur'"), ("dnn+dct", "did you mean 'ddn'"),
    ])
    def test_smooth_forms_that_do_not_exist(self, name, message):
        with pytest.raises(ConfigError, match=message):
            ATTACKS.resolve(name)

    def test_a_smooth_form_takes_the_presets_operator_and_records_its_name(self):
        from smoothadv.attacks.presets import OPERATORS
        from smoothadv.smoothing import GaussianLowPass

        model = tiny_classifier()
        spec = ATTACKS["ddn+lowpass"]
        assert spec.smooth and spec.label == "DDN+lowpass"
        forms = ["cw", "cw+lowpass", "cw+dct", "ddn", "ddn+lowpass", "ddn+dct"]
        assert len({ATTACKS[key].colour for key in forms}) == len(forms)  # told apart in one plot
        attack = make_attack("ddn+lowpass", model, preset="imagenet", steps=2)
        assert attack.smoothing == OPERATORS["imagenet"]["lowpass"]
        assert isinstance(attack.smoothing, GaussianLowPass)
        result = attack(blocky_images(2))
        assert result.attack == "ddn+lowpass" and result.parameters["smoothing"]["operator"] == "lowpass"
        assert make_attack("pgd2+dct", model, preset="mnist", epsilon=1.0).name == "pgd2+dct"
        assert ATTACKS.label("apgd2+dct") == "APGD2+dct" and ATTACKS.label("unknown") == "unknown"

    def test_recorded_name_follows_the_configuration(self):
        model = tiny_classifier()
        assert CarliniWagnerL2(model, smoothing=Smoothing()).name == "scw"
        assert CarliniWagnerL2(model).name == "cw"
        assert PGD2(model, 1.0, smoothing=Smoothing()).name == "qpgd2"
        assert SmoothCarliniWagnerL2(model).name == "scw"
        result = make_attack("pgd2", model, preset="mnist", smoothing=Smoothing(), steps=1)(blocky_images(2))
        assert result.attack == "qpgd2"

    def test_class_defaults_are_the_mnist_preset(self):
        # epsilon is required by every fixed-distortion attack; every other default is the MNIST value
        for key, spec in ATTACKS.items():
            signature = inspect.signature(spec.cls.__init__)
            defaults = {name: p.default for name, p in signature.parameters.items()}
            if spec.cls.Options is not None:
                defaults.update({f.name: f.default for f in dataclasses.fields(spec.cls.Options)})
            for option, value in PRESETS["mnist"][key].items():
                if option == "epsilon":
                    assert defaults[option] is inspect.Parameter.empty, key
                elif option in defaults:
                    expected = defaults[option]
                    if option == "relative_step" and expected is None:
                        expected = spec.cls.default_relative_step
                    assert expected == pytest.approx(value), (key, option)

    def test_a_preset_less_attack_is_a_clear_error(self):
        class Unpreset(CarliniWagnerL2):
            key = "unpreset"
            presets = {"mnist": {}}

        from smoothadv.attacks.registry import AttackSpec

        with pytest.raises(ConfigError, match="has no 'imagenet' preset"):
            AttackSpec("unpreset", Unpreset, "U", "k").options("imagenet")


class TestMakeAttack:
    def test_infers_the_preset_from_the_model_and_says_so(self):
        model = load_model("c4")
        with pytest.warns(InferredDefaultWarning, match="using 'mnist'") as caught:
            attack = make_attack("fgsm", model)
        assert attack.epsilon == PRESETS["mnist"]["fgsm"]["epsilon"]
        assert caught[0].filename == __file__  # the user's line, not the library's

    def test_refuses_when_it_cannot_tell(self):
        with pytest.raises(ConfigError, match="preset='mnist'"):
            make_attack("fgsm", tiny_classifier())

    def test_imagenet_side_takes_the_imagenet_preset(self):
        model = tiny_classifier()
        model.input_shape = (3, 224, 224)
        with pytest.warns(InferredDefaultWarning, match="imagenet"):
            assert make_attack("fgsm", model).epsilon == PRESETS["imagenet"]["fgsm"]["epsilon"]

    def test_misspelled_option_is_a_config_error(self):
        with pytest.raises(ConfigError, match="has no option 'stpes'"):
            make_attack("pgd2", tiny_classifier(), preset="mnist", stpes=3)

    def test_preflight_warning_points_at_the_callers_line(self):
        model = tiny_classifier().train()
        with pytest.warns(PreflightWarning, match="training mode") as caught:
            make_attack("fgsm", model, preset="mnist")(blocky_images(2))
        assert caught[0].filename == __file__


def test_craft_files_takes_display_names(tmp_path):
    from smoothadv.core.images import save_image
    from smoothadv.experiments import craft_files

    digit = save_image(torch.zeros(1, 28, 28), tmp_path / "digit.png")
    summary = craft_files("c4", "I-FGSM", [digit], tmp_path / "out", epsilon=0.1)
    assert summary["attack"] == "ifgsm" and summary["parameters"]["epsilon"] == 0.1


class TestPlanAndSteps:
    def test_plan_object_and_keywords_give_the_same_run(self, tmp_path):
        model, images = tiny_classifier(), blocky_images(4)
        labels = model(images).argmax(1)
        plan = EvaluationPlan("fgsm,I-FGSM", epsilons={"fgsm": [0.1]}, batch_size=2,
                              attack_options={"ifgsm": {"steps": 2}})
        assert plan.attacks == ["fgsm", "ifgsm"] and plan.grids["fgsm"] == [0.1]
        one = evaluate(model, (images, labels), plan, tmp_path / "a", progress=False)
        two = evaluate(model, (images, labels), ["fgsm", "ifgsm"], tmp_path / "b", progress=False,
                       epsilons={"fgsm": [0.1]}, batch_size=2, attack_options={"ifgsm": {"steps": 2}})
        def rows(result):
            return [{k: v for k, v in row.to_dict().items() if k != "seconds"} for row in result.table]

        assert rows(one) == rows(two)
        with pytest.raises(ConfigError, match="not beside it"):
            evaluate(model, (images, labels), plan, tmp_path / "c", batch_size=3)

    @pytest.mark.parametrize("bad", [{"batch_size": 0}, {"preset": "cifar"}, {"attacks": "nope"},
                                     {"attack_options": {"cw": {}}}, {"epsilons": {"cw": [1.0]}}])
    def test_plan_rejects_bad_fields(self, bad):
        with pytest.raises(ConfigError):
            EvaluationPlan(**{"attacks": "fgsm", **bad})

    def test_steps_run_alone(self, tmp_path):
        from smoothadv.evaluation.plan import as_dataset

        model = tiny_classifier()
        images = blocky_images(3, size=36)
        model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(12), model).eval()
        dataset = as_dataset((images, model(images).argmax(1)))
        job = BatchJob("fgsm", 0.3, {}, "key-1", [0, 1, 2], dataset.ids)
        batch = dataset.batch(job.indices)
        outcome = attack_batch(job, make_attack("fgsm", model, preset="mnist", epsilon=0.3), batch.images,
                               batch.labels, "m")
        flipped = torch.nn.Sequential(model, torch.nn.Flatten()).eval()
        transfer_step(outcome, {"other": flipped})
        assert list(outcome.predictions) == ["m", "other"]
        assert torch.equal(outcome.predictions["other"], outcome.result.predictions)  # same network
        mad_step(outcome, upsample_to=None)
        fooled = outcome.fooled_any().nonzero()[:, 0].tolist()
        assert sorted(outcome.mads) == [i for i in fooled if outcome.mads.get(i) is not None]
        ids, images = kept_images_step(outcome)
        assert ids == [dataset.ids[i] for i in fooled]
        if ids:
            save_adversarial(tmp_path, "key-1", ids, images)
        for i in range(3):
            kept = load_adversarial(tmp_path, "key-1", dataset.ids[i])
            assert (kept is not None) == (i in fooled)
            if kept is not None:
                assert torch.equal(kept, outcome.result.adversarial[i])


def test_no_warning_for_an_eval_model_with_a_preset():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_attack("fgsm", tiny_classifier(), preset="mnist")(blocky_images(2))
