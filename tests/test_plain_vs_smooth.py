"""benchmarks/plain_vs_smooth.py judges the paper's claim and the MAD share from records alone."""

from __future__ import annotations

import pytest

from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def script():
    return load_benchmark("plain_vs_smooth.py", "plain_vs_smooth_benchmark")


def records(smooth_l2: list[float], smooth_mad: list[float], smooth_success: list[bool]) -> list[dict]:
    rows = [{"kind": "clean", "model": "m", "image_id": str(i), "correct": i < 4} for i in range(5)]
    for attack, l2s, mads, successes in (("cw", [1.0, 1.0, 1.0, 1.0, 9.0], [0.5] * 5, [True] * 5),
                                         ("scw", smooth_l2, smooth_mad, smooth_success)):
        for i in range(5):
            rows.append({"kind": "attack", "model": "m", "attack": attack, "image_id": str(i),
                         "success": successes[i], "l2": l2s[i], "linf": 0.1, "epsilon": None, "mad": mads[i],
                         "iterations": 10, "gradient_evaluations": 10, "seconds": 0.5, "batch": "b"})
    return rows


def test_claim_holds_within_five_percent_and_one_point_of_success(script):
    row = script.compare(records([1.04] * 5, [0.4, 0.6, 0.4, 0.4, 0.0], [True] * 5), "m", "cw", "scw")
    assert row["n"] == 4  # the misclassified image 4 does not count
    assert row["claim_holds"] and row["d_bar_change"] == pytest.approx(0.04)
    assert row["smooth_lower_mad_share"] == pytest.approx(3 / 4) and row["mad_images"] == 4
    assert "holds" in script.markdown([row], "t")


def test_claim_fails_on_distortion_or_success(script):
    assert not script.compare(records([1.06] * 5, [0.4] * 5, [True] * 5), "m", "cw", "scw")["claim_holds"]
    failing = script.compare(records([1.0] * 5, [0.4] * 5, [True, True, True, False, True]), "m", "cw", "scw")
    assert failing["p_suc_change"] == pytest.approx(-0.25) and not failing["claim_holds"]
    assert "fails" in script.markdown([failing], "t")


def test_a_run_cut_short_is_compared_on_the_images_both_attacks_have(script):
    rows = [r for r in records([1.0] * 5, [0.4] * 5, [True] * 5)
            if not (r.get("attack") == "scw" and r["image_id"] in {"2", "3"})]
    row = script.compare(rows, "m", "cw", "scw")
    assert row["n"] == 2 and row["plain_stats"]["d_bar"] == pytest.approx(1.0)
