"""benchmarks/attacks.py alternates which attack of a pair runs first and reports the pairs' spread."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "attacks.py"


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("attacks_benchmark", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


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
