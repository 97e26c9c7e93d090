"""benchmarks/attacks.py alternates which attack of a pair runs first and reports the pairs' spread."""

from __future__ import annotations

import pytest

from attack_fixtures import blocky_images, tiny_classifier
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def script():
    return load_benchmark("attacks.py", "attacks_benchmark")


class _Recorder:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def __call__(self, images):
        self.log.append(self.name)

    def prepare(self, images):
        self.log.append("setup")


@pytest.mark.parametrize("scw_first, expected", [(False, ["cw", "setup", "scw"]),
                                                 (True, ["setup", "scw", "cw"])])
def test_a_pair_runs_the_attacks_in_the_order_asked(script, scw_first, expected):
    log = []
    pair = script.timed_pair(_Recorder("cw", log), _Recorder("scw", log), _Recorder("smoothing", log), None,
                             scw_first=scw_first)
    assert log == expected
    assert set(pair) == {"cw", "scw", "setup", "solves"} and pair["solves"] == 0.0


def test_quartiles_bracket_the_median(script):
    assert script.quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 4.0)
    assert script.quartiles([1.03]) == (1.03, 1.03)


def test_the_summary_judges_the_median_pair_and_reports_the_fastest_runs_apart(script):
    # seconds per pair (model: one forward + backward alone): C&W's fastest run is in the second pair,
    # sC&W's in the third, so their ratio is no pair's own
    pairs = [{"cw": 10.0, "scw": 10.6, "setup": 0.1, "solves": 0.3, "model": 0.08},
             {"cw": 9.0, "scw": 12.1, "setup": 0.1, "solves": 0.3, "model": 0.08},
             {"cw": 9.5, "scw": 9.4, "setup": 0.1, "solves": 0.3, "model": 0.08}]
    row = script.summary(pairs, iterations=100)
    assert row["ratio_per_iteration"] == pytest.approx(10.5 / 10.0)
    assert row["ratio_with_setup"] == pytest.approx(10.6 / 10.0)
    assert row["fastest_per_iteration"] == pytest.approx(9.3 / 9.0)
    assert row["fastest_with_setup"] == pytest.approx(9.4 / 9.0)
    assert row["quartiles_per_iteration"] == pytest.approx(((9.3 / 9.5 + 1.05) / 2, (1.05 + 12.0 / 9.0) / 2))
    assert row["pair_ratios_per_iteration"] == pytest.approx([1.05, 12.0 / 9.0, 9.3 / 9.5], abs=1e-4)
    assert row["split_ms"]["scw"]["solves"] == pytest.approx(3.0)
    assert row["split_ms"]["scw"]["rest"] == pytest.approx(106.0 - 1.0 - 80.0 - 3.0)
    assert row["split_ms"]["cw"]["rest"] == pytest.approx(95.0 - 80.0)


def test_compare_runs_scw_first_in_every_other_pair(script, monkeypatch):
    orders = []

    def fake_pair(cw, scw, smoothing, images, *, scw_first):
        orders.append(scw_first)
        return {"cw": 1.0, "scw": 1.02, "setup": 0.0, "solves": 0.01}

    monkeypatch.setattr(script, "timed_pair", fake_pair)
    monkeypatch.setattr(script, "model_seconds", lambda model, images: 0.005)
    model, images = tiny_classifier(), blocky_images(batch=2)
    row = script.compare(lambda batch: (model, "tiny", images), "mnist", batch=2, steps=3, repeats=5)
    assert orders == [False, True, False, True, False]
    assert row["ratio_per_iteration"] == pytest.approx(1.02) and row["iterations"] == 3
