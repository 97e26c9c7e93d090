"""Statistics of section 5.1 on hand-made records: accuracy filtering, P_suc, conditional D_bar, min over
epsilons, operating characteristic."""

from __future__ import annotations

import numpy as np
import pytest

from smoothadv.core.errors import InputError
from smoothadv.evaluation import (
    accuracy,
    attack_statistics,
    evaluate_curve,
    image_outcomes,
    mean_distortion,
    median_distortion,
    operating_characteristic,
    success_probability,
    summary_table,
)
from smoothadv.evaluation.metrics import ImageOutcome


def clean(image_id, correct, model="m"):
    return {
        "kind": "clean",
        "model": model,
        "image_id": image_id,
        "index": 0,
        "label": 1,
        "prediction": 1 if correct else 2,
        "correct": correct,
    }


def attack(image_id, success, l2, *, name="pgd2", epsilon=None, model="m", source="m", linf=None, mad=None):
    return {
        "kind": "attack",
        "model": model,
        "source_model": source,
        "attack": name,
        "epsilon": epsilon,
        "image_id": image_id,
        "success": success,
        "l2": l2,
        "linf": l2 / 10 if linf is None else linf,
        "iterations": 10,
        "gradient_evaluations": 10,
        "seconds": 0.5,
        "batch": f"b-{image_id}-{epsilon}",
        "mad": mad,
    }


@pytest.fixture
def records():
    # Five images; "e" is misclassified (its attack records must not count).
    rows = [clean("a", True), clean("b", True), clean("c", True), clean("d", True), clean("e", False)]
    rows += [
        attack("a", False, 4.0, epsilon=1.0),
        attack("a", True, 2.0, epsilon=2.0),
        attack("a", True, 1.5, epsilon=3.0),
        attack("b", True, 1.0, epsilon=1.0),
        attack("b", True, 1.8, epsilon=2.0),
        attack("b", True, 2.5, epsilon=3.0),
        attack("c", False, 9.0, epsilon=1.0),
        attack("c", False, 9.5, epsilon=2.0),
        attack("c", False, 9.9, epsilon=3.0),
        attack("d", False, 0.7, epsilon=1.0),
        attack("d", False, 0.8, epsilon=2.0),
        attack("d", True, 3.0, epsilon=3.0),
        attack("e", True, 0.1, epsilon=1.0),
        attack("e", True, 0.1, epsilon=2.0),
        attack("e", True, 0.1, epsilon=3.0),
    ]
    return rows


def test_accuracy_counts_clean_records(records):
    assert accuracy(records, "m") == (4, 5)
    assert accuracy(records, "other") == (0, 0)


def test_misclassified_images_are_left_out(records):
    outcomes = image_outcomes(records, "m", "pgd2")
    assert sorted(o.image_id for o in outcomes) == ["a", "b", "c", "d"]


def test_min_over_epsilons_keeps_least_distorted_success(records):
    outcomes = {o.image_id: o for o in image_outcomes(records, "m", "pgd2")}
    assert outcomes["a"].success and outcomes["a"].l2 == 1.5 and outcomes["a"].epsilon == 3.0
    assert outcomes["b"].l2 == 1.0 and outcomes["b"].epsilon == 1.0
    # Failures at small epsilons never lower the distortion of a later success.
    assert outcomes["d"].success and outcomes["d"].l2 == 3.0
    assert not outcomes["c"].success and outcomes["c"].l2 is None
    assert all(o.runs == 3 for o in outcomes.values())


def test_success_probability_and_conditional_distortion(records):
    outcomes = image_outcomes(records, "m", "pgd2")
    assert success_probability(outcomes) == pytest.approx(3 / 4)
    # D_bar averages successes only: (1.5 + 1.0 + 3.0) / 3; the failure "c" (l2 9.x) is ignored.
    assert mean_distortion(outcomes) == pytest.approx(5.5 / 3)
    assert median_distortion(outcomes) == pytest.approx(1.5)
    stats = attack_statistics(records, "m", "pgd2")
    assert (stats.n_total, stats.n_correct, stats.n, stats.n_success) == (5, 4, 4, 3)
    assert stats.accuracy == pytest.approx(0.8)
    assert stats.p_success == pytest.approx(0.75)
    assert stats.mean_l2 == pytest.approx(5.5 / 3)
    assert stats.mean_linf == pytest.approx(5.5 / 30)
    assert stats.epsilons == (1.0, 2.0, 3.0)
    assert stats.seconds == pytest.approx(12 * 0.5)


def test_no_success_and_no_images():
    failed = [ImageOutcome("x", "m", "cw", False, None, None, None, None, None, 1)]
    assert success_probability(failed) == 0.0
    assert mean_distortion(failed) is None and median_distortion(failed) is None
    d, p = operating_characteristic(failed)
    assert d.tolist() == [0.0] and p.tolist() == [0.0]
    assert success_probability([]) is None
    assert operating_characteristic([])[0].size == 0


def test_operating_characteristic_is_a_step_curve(records):
    outcomes = image_outcomes(records, "m", "pgd2")
    d, p = operating_characteristic(outcomes)
    assert d.tolist() == [0.0, 1.0, 1.5, 3.0]
    assert p.tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75])
    curve = (d, p)
    assert evaluate_curve(curve, 0.0) == 0.0  # P(0) = 0
    assert evaluate_curve(curve, 0.99) == 0.0
    assert evaluate_curve(curve, 1.0) == 0.25  # D(x) <= D counts
    assert evaluate_curve(curve, 2.9) == 0.5
    assert evaluate_curve(curve, 3.0) == pytest.approx(success_probability(outcomes))  # P(D_max) = P_suc
    assert evaluate_curve(curve, 100.0) == pytest.approx(0.75)
    with pytest.raises(InputError):
        evaluate_curve(curve, -1.0)


def test_operating_characteristic_merges_ties():
    outcomes = [ImageOutcome(str(i), "m", "cw", True, 2.0, 0.1, None, None, None, 1) for i in range(3)]
    outcomes.append(ImageOutcome("f", "m", "cw", False, None, None, None, None, None, 1))
    d, p = operating_characteristic(outcomes)
    assert d.tolist() == [0.0, 2.0]
    assert p.tolist() == pytest.approx([0.0, 0.75])
    assert np.all(np.diff(p) >= 0)


def test_transfer_counts_images_correct_on_the_target():
    rows = [clean("a", True), clean("b", True), clean("a", True, "t"), clean("b", False, "t")]
    rows += [
        attack("a", True, 1.0, name="cw"),
        attack("b", True, 2.0, name="cw"),
        attack("a", False, 1.0, name="cw", model="t"),
        attack("b", True, 2.0, name="cw", model="t"),
    ]
    table = {(s.model, s.attack): s for s in summary_table(rows)}
    assert set(table) == {("m", "cw"), ("t", "cw")}
    source, target = table[("m", "cw")], table[("t", "cw")]
    assert (source.n, source.p_success, source.mean_l2) == (2, 1.0, 1.5)
    assert (target.n, target.n_success, target.p_success) == (1, 0, 0.0)
    assert target.source_model == "m" and target.mean_l2 is None


def test_mad_is_averaged_over_successes():
    rows = [
        clean("a", True),
        clean("b", True),
        attack("a", True, 1.0, name="scw", mad=2.0),
        attack("b", True, 1.0, name="scw", mad=4.0),
    ]
    assert attack_statistics(rows, "m", "scw").mean_mad == pytest.approx(3.0)
