"""GPU measurements (issue 16): smoothing solvers, the classifier, and sC&W / C&W, side by side in one run.

Prints, for each case (guide size x channels x batch, paper preset):

* per solver: set-up (graph, solver, ``s_alpha(1)``), one forward+backward ``r = s_hat(z)``,
  ``r.backward(g)`` (median of ``--repeats``), and the true relative residual ``||L x - z|| / ||z||`` of a
  forward solve, computed in float64;
* EfficientNet-Lite0's forward+backward (gradient with respect to the input) at the same batch and size,
  and the ratio smoothing / classifier;
* sC&W / C&W on Lite0 at equal iterations (one binary-search step of ``--steps``), set-up included.

Times are taken with ``torch.cuda.synchronize()`` around each call. On the CPU (``--device cpu``) the same
script runs as a smoke test; ``--quick`` shrinks every case so that it takes seconds.

Usage::

    python benchmarks/gpu.py --device cuda --json out/gpu/gpu.json     # what benchmarks/gpu_check.sh runs
    python benchmarks/gpu.py --device cpu --quick                       # smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from smoothadv.attacks import make_attack
from smoothadv.attacks.presets import SMOOTHING
from smoothadv.core.errors import ConvergenceWarning
from smoothadv.core.runtime import resolve_device
from smoothadv.smoothing import Smoothing

#: name -> (side, channels, batch, preset, solvers)
CASES = {
    "28x28x1 x100": (28, 1, 100, "mnist", ("dense", "chebyshev", "cg", "direct")),
    "224x224x3 x4": (224, 3, 4, "imagenet", ("chebyshev", "cg", "direct")),
    "299x299x3 x4": (299, 3, 4, "imagenet", ("chebyshev", "cg", "direct")),
}
QUICK_CASES = {
    "28x28x1 x4": (28, 1, 4, "mnist", ("dense", "chebyshev", "cg", "direct")),
    "48x48x3 x2": (48, 3, 2, "imagenet", ("chebyshev", "cg", "direct")),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(function: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``function`` in milliseconds (device work included)."""
    for _ in range(warmup):
        function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def smooth_guides(side: int, channels: int, batch: int, device: torch.device) -> torch.Tensor:
    """Guides with flat regions and edges (random blocks, lightly blurred), deterministic."""
    generator = torch.Generator().manual_seed(0)
    blocks = torch.rand(batch, channels, max(2, side // 16), max(2, side // 16), generator=generator)
    guide = torch.nn.functional.interpolate(blocks, size=(side, side), mode="nearest")
    guide = torch.nn.functional.avg_pool2d(guide, 3, stride=1, padding=1, count_include_pad=False)
    noise = 0.02 * torch.rand(guide.shape, generator=generator)
    return (guide + noise).clamp(0, 1).to(device)


def true_residual(smoother, x: torch.Tensor, z: torch.Tensor) -> float:
    """Largest ``||L_alpha x - z|| / ||z||`` over images and channels, in float64."""
    residual = smoother.solver.matvec(x.double()) - z.double()
    return float((residual.norm(dim=(-2, -1)) / z.double().norm(dim=(-2, -1))).max())


def bench_solver(guide: torch.Tensor, config: Smoothing, repeats: int) -> dict:
    device = guide.device
    start = time.perf_counter()
    smoother = config.prepare(guide)
    synchronize(device)
    setup_ms = (time.perf_counter() - start) * 1e3
    z = torch.randn(guide.shape, generator=torch.Generator().manual_seed(1)).to(device)
    gradient = torch.randn(guide.shape, generator=torch.Generator().manual_seed(2)).to(device)

    def forward_backward():
        latent = z.clone().requires_grad_()
        smoother(latent).backward(gradient)

    fwd_bwd = median_ms(forward_backward, device, repeats)
    residual = true_residual(smoother, smoother.smooth(z, normalize=False), z)
    solver = smoother.solver
    return {"solver": solver.name, "setup_ms": setup_ms, "fwd_bwd_ms": fwd_bwd, "residual": residual,
            "steps_per_solve": getattr(solver, "last_iterations", None)}


def load_lite0(device: torch.device):
    from smoothadv.models import load_model

    return load_model("efficientnet-lite0", device)


def bench_classifier(model, side: int, batch: int, device: torch.device, repeats: int) -> float:
    images = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(3)).to(device)

    def forward_backward():
        inputs = images.clone().requires_grad_()
        model(inputs).logsumexp(dim=1).sum().backward()

    return median_ms(forward_backward, device, repeats, warmup=3)  # the first passes compile kernels


def bench_attacks(model, side: int, batch: int, steps: int, device: torch.device) -> dict:
    images = smooth_guides(side, 3, batch, device)
    seconds = {}
    for name in ("cw", "scw", "cw", "scw"):  # alternate, keep the second of each
        attack = make_attack(name, model, preset="imagenet", binary_search_steps=1, steps=steps)
        synchronize(device)
        start = time.perf_counter()
        attack(images)
        synchronize(device)
        seconds[name] = time.perf_counter() - start
    return {"steps": steps, "batch": batch, "side": side, "cw_s": seconds["cw"], "scw_s": seconds["scw"],
            "ratio": seconds["scw"] / seconds["cw"]}


def run(device: torch.device, quick: bool, repeats: int, steps: int,
        report: Callable[[dict], None] = lambda results: None) -> dict:
    """Measure every case; ``report(results)`` is called after each one (partial results survive a
    time limit)."""
    cases = QUICK_CASES if quick else CASES
    model = load_lite0(device)
    results = {"device": str(device), "device_name": torch.cuda.get_device_name(device)
               if device.type == "cuda" else platform.processor() or platform.machine(),
               "torch": torch.__version__, "python": platform.python_version(), "cases": []}
    for name, (side, channels, batch, preset, solvers) in cases.items():
        guide = smooth_guides(side, channels, batch, device)
        rows = []
        for solver in solvers:
            config = SMOOTHING[preset].with_options(solver=solver)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # the residual is reported instead
                rows.append(bench_solver(guide, config, repeats))
        auto = config.with_options(solver="auto").prepare(guide[:1]).solver.name
        classifier = bench_classifier(model, side, batch, device, repeats) if channels == 3 else None
        for row in rows:
            row["over_lite0"] = None if classifier is None else row["fwd_bwd_ms"] / classifier
        results["cases"].append({"case": name, "auto": auto, "lite0_fwd_bwd_ms": classifier, "solvers": rows})
        report(results)
    side = 48 if quick else 224
    results["attacks"] = bench_attacks(model, side, 2 if quick else 4, steps, device)
    report(results)
    return results


def format_table(results: dict) -> str:
    lines = [f"{results['device_name']} ({results['device']}), torch {results['torch']}, "
             f"python {results['python']}"]
    for case in results["cases"]:
        lite0 = case["lite0_fwd_bwd_ms"]
        lines.append(f"\n{case['case']}  (auto picks {case['auto']}"
                     + (f"; Lite0 fwd+bwd {lite0:.2f} ms)" if lite0 else ")"))
        lines.append(f"  {'solver':10s} {'setup ms':>10s} {'fwd+bwd ms':>11s} {'residual':>9s} "
                     f"{'/ Lite0':>8s} {'steps':>6s}")
        for row in case["solvers"]:
            ratio = "" if row["over_lite0"] is None else f"{100 * row['over_lite0']:.1f}%"
            steps = "" if row["steps_per_solve"] is None else str(row["steps_per_solve"])
            lines.append(f"  {row['solver']:10s} {row['setup_ms']:10.1f} {row['fwd_bwd_ms']:11.2f} "
                         f"{row['residual']:9.1e} {ratio:>8s} {steps:>6s}")
    attacks = results.get("attacks")
    if attacks is None:
        return "\n".join(lines)
    lines.append(f"\nsC&W / C&W on Lite0, {attacks['batch']} images {attacks['side']}x{attacks['side']}, "
                 f"1 x {attacks['steps']} iterations (set-up included): {attacks['ratio']:.2f} "
                 f"({attacks['scw_s']:.2f} s vs {attacks['cw_s']:.2f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cuda (default when present) or cpu")
    parser.add_argument("--quick", action="store_true", help="small cases (a smoke test in seconds)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--steps", type=int, default=20, help="C&W/sC&W iterations (one search step)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    def report(results: dict) -> None:
        print(format_table(results).split("\n\n")[-1] if results["cases"] else "", flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")

    results = run(resolve_device(args.device), args.quick, args.repeats, args.steps, report)
    print("\n" + format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
