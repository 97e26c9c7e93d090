"""Benchmark of the guided Laplacian smoothing (paper sections 3 and 4.2.3) against a classifier.

For each guide size and solver it measures, as the median of several runs:

* setup: graph (eq. 5) + solver set-up (factorisation, dense inverse) + the DC gain ``s_alpha(1)``, once
  per guide image;
* fwd+bwd: one ``r = smoother(z)`` (eq. 9) and ``r.backward(g)`` (eq. 19), the cost the smoothing adds to
  every iteration of an attack;
* the relative residual ``||L_alpha x - z|| / ||z||`` reached by ``x = s_alpha(z)`` (largest over images
  and channels), computed with the matrix-free product ``matvec``.

It also times an ImageNet classifier forward+backward (gradient with respect to the input, as in an attack)
at 224x224 in the same run, alternating with the exact smoothing pair after pair, and reports the median
ratio exact smoothing / classifier, the smoothings replaying the signals of a real sC&W run (a warm-started
solver sees what it sees in an attack). Target: at most 25%; moonshot 15%.

Usage::

    .venv/bin/python benchmarks/smoothing.py            # table
    .venv/bin/python benchmarks/smoothing.py --json     # machine-readable
    .venv/bin/python benchmarks/smoothing.py --cases imagenet224 --repeats 9
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from smoothadv.core.errors import ConvergenceWarning
from smoothadv.experiments.photos import bundled_photo
from smoothadv.smoothing import Smoothing

#: Paper presets (section 5.2.4 and DESIGN.md section 2). Gaussian exp(-300 d^2) = exp(-d^2 / (2 sigma^2)).
MNIST_PRESET = {"alpha": 0.95, "kernel": "laplacian", "sigma": 0.1, "channels": "per_channel"}
IMAGENET_PRESET = {"alpha": 0.997, "kernel": "gaussian", "sigma": (1 / 600) ** 0.5, "channels": "per_channel"}

#: name -> (guide size, channels, preset, solvers timed, images per batch)
CASES = {
    "mnist28": (28, 1, MNIST_PRESET, ("dense", "direct", "cg"), 1),
    "mnist28x100": (28, 1, MNIST_PRESET, ("direct", "direct-superlu", "cg"), 100),  # a C&W batch
    "imagenet224": (224, 3, IMAGENET_PRESET, ("direct", "direct-joint", "cg"), 1),
    "imagenet299": (299, 3, IMAGENET_PRESET, ("direct", "direct-joint", "cg"), 1),
}
CG_FIXED_ITERATIONS = 50  # the authors' setting on ImageNet (section 5.2.4)
CG_TOL = 1e-6
TARGET_RATIO = 0.25
MOONSHOT_RATIO = 0.15


def median_seconds(function: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median wall time and median CPU time of this process (all its threads) of ``function()``.

    ``repeats`` timed runs after ``warmup`` untimed ones. CPU time is less sensitive to other processes
    on the machine than wall time (but it counts the time threads spend spinning while they wait).
    """
    for _ in range(warmup):
        function()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def guide_image(size: int, channels: int, batch: int = 1) -> tuple[torch.Tensor, str]:
    """A natural guide image: the bundled photo in colour, or its grey version for one channel; for a
    batch of 28x28 grey guides, the first MNIST test images (the photo repeated if MNIST is missing)."""
    if batch > 1:
        try:
            from smoothadv.data import load_mnist

            return load_mnist(split="test", limit=batch).images, f"first {batch} MNIST test images"
        except Exception as error:  # noqa: BLE001 - any failure: fall back to the photo
            guide, _ = guide_image(size, channels)
            return guide.repeat(batch, 1, 1, 1), f"bundled photo x {batch} (MNIST unavailable: {error})"
    photo = bundled_photo(size)
    if channels == 1:
        return photo.mean(dim=1, keepdim=True), f"bundled photo, grey, resized to {size}x{size} (MNIST-size)"
    return photo, f"bundled photo, resized to {size}x{size}"


def relative_residual(smoother, z: torch.Tensor) -> float:
    """Largest ``||L x - z|| / ||z||`` over images and channels for ``x = s_alpha(z)``, in float64.

    ``x`` is computed in the dtype of ``z``; the residual itself is evaluated in float64 (the float32
    rounding of ``x`` alone leaves about 1e-7 to 1e-6 at alpha = 0.997).
    """
    with torch.no_grad():
        x = smoother.smooth(z, normalize=False).double()
        z = z.double()
        error = (smoother.matvec(x) - z).norm(dim=(-2, -1)) / z.norm(dim=(-2, -1))
    return float(error.max())


def bench_solver(guide: torch.Tensor, config: Smoothing, repeats: int, label: str) -> dict:
    """Time set-up and one forward+backward smoothing of one solver configuration.

    Consecutive calls alternate between two unrelated random (signal, gradient) pairs, so a warm-started
    solver gains nothing from its start: the worst case (``bench_classifier`` measures an attack's).
    """
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(guide.shape, generator=generator)
    pairs = [(torch.randn(guide.shape, generator=generator), torch.randn(guide.shape, generator=generator))
             for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # CG at a fixed 50 iterations stops early
        setup, setup_cpu = median_seconds(lambda: config.prepare(guide), repeats, warmup=0)
        smoother = config.prepare(guide)
        calls = [0]

        def forward_backward():
            signal, upstream = pairs[calls[0] % 2]
            calls[0] += 1
            smoother(signal.clone().requires_grad_()).backward(upstream)

        fwd_bwd, fwd_bwd_cpu = median_seconds(forward_backward, repeats)
        iterations = smoother.solver.last_iterations if smoother.solver.name == "cg" else None
        residual = relative_residual(smoother, z)
        # the same solver run in float64 end to end: its own accuracy, without float32 rounding
        residual64 = relative_residual(config.prepare(guide.double()), z.double())
    row = {
        "solver": label,
        "setup_ms": 1e3 * setup,
        "setup_cpu_ms": 1e3 * setup_cpu,
        "fwd_bwd_ms": 1e3 * fwd_bwd,
        "fwd_bwd_cpu_ms": 1e3 * fwd_bwd_cpu,
        "rel_residual": residual,
        "rel_residual_float64_run": residual64,
    }
    if iterations is not None:
        row["cg_iterations"] = iterations
    return row


def bench_case(name: str, repeats: int) -> dict:
    size, channels, preset, solvers, batch = CASES[name]
    guide, guide_description = guide_image(size, channels, batch)
    rows = []
    for solver in solvers:
        if solver == "cg":
            config = Smoothing(**preset, solver="cg", cg_tol=CG_TOL, cg_maxiter=1000)
            rows.append(bench_solver(guide, config, repeats, f"cg (tol {CG_TOL:.0e})"))
            config = Smoothing(**preset, solver="cg", cg_tol=CG_TOL, cg_maxiter=CG_FIXED_ITERATIONS)
            rows.append(bench_solver(guide, config, repeats, f"cg ({CG_FIXED_ITERATIONS} iterations)"))
        elif solver == "direct-superlu":  # the direct solver's method for large images, for comparison
            config = Smoothing(**preset, solver="superlu")
            rows.append(bench_solver(guide, config, repeats, "direct (superlu)"))
        elif solver == "direct-joint":  # not the preset: one graph for the 3 channels, 3 right-hand sides
            config = Smoothing(**{**preset, "channels": "joint"}, solver="direct")
            rows.append(bench_solver(guide, config, repeats, "direct, joint graph"))
        else:
            rows.append(bench_solver(guide, Smoothing(**preset, solver=solver), repeats, solver))
    by_label = {row["solver"]: row for row in rows}
    exact = by_label["dense"] if "dense" in by_label else by_label["direct"]
    cg_fixed = by_label[f"cg ({CG_FIXED_ITERATIONS} iterations)"]
    return {
        "case": name,
        "guide": guide_description,
        "shape": list(guide.shape),
        "preset": preset,
        "rows": rows,
        "exact_solver": exact["solver"],
        "exact_fwd_bwd_ms": exact["fwd_bwd_ms"],
        "exact_fwd_bwd_cpu_ms": exact["fwd_bwd_cpu_ms"],
        "direct_over_cg50": by_label["direct"]["fwd_bwd_ms"] / cg_fixed["fwd_bwd_ms"],
        "cg_to_tol_fwd_bwd_ms": by_label[f"cg (tol {CG_TOL:.0e})"]["fwd_bwd_ms"],
    }


# -------------------------------------------------------------------------------------------------------
# Classifier
# -------------------------------------------------------------------------------------------------------


class _InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project, residual when shapes allow."""

    def __init__(self, inputs: int, outputs: int, stride: int, expansion: int):
        super().__init__()
        hidden = inputs * expansion
        layers = []
        if expansion != 1:
            layers += [nn.Conv2d(inputs, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, outputs, 1, bias=False),
            nn.BatchNorm2d(outputs),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and inputs == outputs

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class StandInClassifier(nn.Module):
    """A MobileNetV2-like ImageNet CNN (about 0.3 GFLOPs at 224x224, EfficientNet-Lite0 is about 0.4).

    Random weights: only its cost matters here. Used when ``efficientnet-lite0`` cannot be loaded.
    """

    # (expansion, output channels, repeats, first stride), as in MobileNetV2
    STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()]
        channels = 32
        for expansion, outputs, repeats, stride in self.STAGES:
            for index in range(repeats):
                layers.append(_InvertedResidual(channels, outputs, stride if index == 0 else 1, expansion))
                channels = outputs
        layers += [nn.Conv2d(channels, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(-2, -1)))


def load_classifier() -> tuple[nn.Module, str]:
    """EfficientNet-Lite0 from ``smoothadv.models`` when available, else the stand-in CNN."""
    try:
        from smoothadv.models import load_model

        return load_model("efficientnet-lite0"), "efficientnet-lite0 (smoothadv.models.load_model)"
    except Exception as error:  # noqa: BLE001 - any failure means: use the stand-in
        reason = f"{type(error).__name__}: {error}".splitlines()[0][:120]
        return StandInClassifier(), f"stand-in MobileNetV2-like CNN, random weights ({reason})"


def read_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Single-thread memory read bandwidth in bytes/s (best of ``repeats`` sums of a large array)."""
    array = np.random.default_rng(0).random(megabytes * (1 << 20) // 8)
    array.sum()  # warm-up once; each timed sum below reads the whole array
    best = min(median_seconds(array.sum, 1, warmup=0)[0] for _ in range(repeats))
    return array.nbytes / best


def traffic_floor_ms(smoother) -> dict:
    """Lower bound of one forward+backward smoothing set by memory traffic alone.

    Refined Cholesky: each of the two solves reads the factor (float32 values of three graphs side by
    side and one int32 row index per entry) twice, once per triangular sweep, and the exact float64
    matrices once for the residual of its single correction. Exact Cholesky (small images): the float64
    values once per solve (a block's backward sweep finds them in cache). SuperLU: every L and U entry
    (8-byte value + 4-byte index) once per solve.
    """
    solver = smoother.solver
    bandwidth = read_bandwidth()
    if getattr(solver, "refined", False):
        factor = solver.factors(1)
        matrix_bytes = factor.matrix_values.nbytes + factor.groups * factor.matrix_indices.nbytes
        per_solve = 2 * factor.nbytes + matrix_bytes
    elif solver.name == "cholesky":
        per_solve = sum(part.nbytes for part in solver.factors(1))
    else:
        per_solve = 12 * solver.factor_nonzeros
    return {
        "solver": solver.name,
        "factor_nonzeros": solver.factor_nonzeros,
        "bytes_per_solve": per_solve,
        "read_bandwidth_gb_s": bandwidth / 1e9,
        "floor_ms": 1e3 * 2 * per_solve / bandwidth,
    }


def attack_sequence(model, image: torch.Tensor, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (signal, upstream gradient) pairs the smoother meets in ``steps`` iterations of a real sC&W
    run on ``image`` (ImageNet preset): what a warm-started solver sees in an attack."""
    from smoothadv.attacks import PRESETS, SmoothCarliniWagnerL2
    from smoothadv.smoothing.operator import GuidedSmoother

    signals, gradients = [], []
    forward, adjoint = GuidedSmoother._forward, GuidedSmoother._adjoint

    def record_forward(self, z, normalize):
        signals.append(z.detach().clone())
        return forward(self, z, normalize)

    def record_adjoint(self, g, normalize):
        gradients.append(g.detach().clone())
        return adjoint(self, g, normalize)

    GuidedSmoother._forward, GuidedSmoother._adjoint = record_forward, record_adjoint
    try:
        options = dict(PRESETS["imagenet"]["cw"], binary_search_steps=1, steps=steps, abort_early=False)
        SmoothCarliniWagnerL2(model, smoothing=Smoothing(**IMAGENET_PRESET), **options)(image)
    finally:
        GuidedSmoother._forward, GuidedSmoother._adjoint = forward, adjoint
    return list(zip(signals[1:], gradients[1:], strict=False))  # from the first non-zero signal


def bench_classifier(repeats: int, size: int = 224, sequence_steps: int = 40) -> dict:
    """Classifier forward + backward (to the input, batch of one) against the smoothing at one size.

    The smoothings replay the signals and gradients of a real sC&W run (:func:`attack_sequence`), so a
    warm-started solver sees what it sees in an attack. They are run alternately with the classifier,
    pair after pair, so that both see the same load of a shared machine; the ratio reported is the median
    of the per-pair ratios (wall time and CPU time).
    """
    model, description = load_classifier()
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # an attack needs the gradient with respect to the input only
    image = bundled_photo(size)
    label = torch.tensor([0])
    sequence = attack_sequence(model, image, sequence_steps)

    def classifier_step():
        x = image.clone().requires_grad_()
        F.cross_entropy(model(x), label).backward()

    def smoothing_step(smoother, position):
        def step():
            z, g = sequence[position[0] % len(sequence)]
            position[0] += 1
            signal = z.clone().requires_grad_()
            smoother(signal).backward(g)
            if smoother.last_residual is not None:
                residuals[name].append(smoother.last_residual)

        return step

    smoothers = {  # the preset (per channel), the solver it replaces, and one joint graph
        "per_channel": Smoothing(**IMAGENET_PRESET, solver="direct").prepare(image),
        "superlu": Smoothing(**IMAGENET_PRESET, solver="superlu").prepare(image),
        "joint": Smoothing(**{**IMAGENET_PRESET, "channels": "joint"}, solver="direct").prepare(image),
    }
    positions = {name: [0] for name in smoothers}
    residuals: dict[str, list[float]] = {name: [] for name in smoothers}
    rounds = []
    for index in range(2 * repeats + 2):
        timings = {"classifier": median_seconds(classifier_step, 1, warmup=0)}
        for name, smoother in smoothers.items():
            timings[name] = median_seconds(smoothing_step(smoother, positions[name]), 1, warmup=0)
        if index >= 2:  # the first two rounds warm up
            rounds.append(timings)

    def median_ms(name, which=0):
        return 1e3 * statistics.median(r[name][which] for r in rounds)

    def ratio(name, which=0):
        return statistics.median(r[name][which] / r["classifier"][which] for r in rounds)

    return {
        "model": description,
        "input": [1, 3, size, size],
        "pairs": len(rounds),
        "sequence": f"{len(sequence)} (signal, gradient) pairs of a {sequence_steps}-iteration sC&W run",
        "fwd_bwd_ms": median_ms("classifier"),
        "fwd_bwd_cpu_ms": median_ms("classifier", 1),
        "exact_smoothing_fwd_bwd_ms": median_ms("per_channel"),
        "ratio": ratio("per_channel"),
        "ratio_cpu_time": ratio("per_channel", 1),
        "largest_residual": max(residuals["per_channel"], default=None),
        "superlu_fwd_bwd_ms": median_ms("superlu"),
        "superlu_ratio": ratio("superlu"),
        "joint_exact_smoothing_fwd_bwd_ms": median_ms("joint"),
        "joint_ratio": ratio("joint"),
        "traffic_floor": traffic_floor_ms(smoothers["per_channel"]),
    }


# -------------------------------------------------------------------------------------------------------
# Report
# -------------------------------------------------------------------------------------------------------


def run(cases: list[str], repeats: int, with_classifier: bool = True, threads: int = 2) -> dict:
    torch.set_num_threads(threads)
    results = {
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "note": "other processes may share this machine; timings are medians of "
            f"{repeats} runs and vary with its load",
        },
        "repeats": repeats,
        "cases": [bench_case(name, repeats) for name in cases],
    }
    if with_classifier:
        classifier = bench_classifier(repeats)
        results["classifier"] = classifier
        results["target"] = {
            "exact_smoothing_over_classifier_224": classifier["ratio"],
            "exact_smoothing_over_classifier_224_cpu_time": classifier["ratio_cpu_time"],
            "limit": TARGET_RATIO,
            "met": classifier["ratio"] <= TARGET_RATIO,
        }
    if hasattr(os, "getloadavg"):
        results["machine"]["load_average_at_end"] = list(os.getloadavg())
    return results


def format_table(results: dict) -> str:
    machine = results["machine"]
    load = ", ".join(f"{value:.1f}" for value in machine["load_average_at_start"] or [])
    lines = [
        f"Guided Laplacian smoothing benchmark (torch {machine['torch']}, "
        f"{machine['torch_threads']} threads, {machine['cpu_count']} CPUs, load average at start {load})",
        f"Note: {machine['note']}. ms = wall time; cpu = CPU time of this process.",
        "",
    ]
    header = (
        f"{'case':<12} {'solver':<18} {'setup ms':>9} {'(cpu)':>7} {'fwd+bwd ms':>11} {'(cpu)':>7} "
        f"{'residual f32':>13} {'(f64 run)':>10} {'CG it.':>6}"
    )
    for case in results["cases"]:
        preset = case["preset"]
        lines.append(
            f"{case['case']}: {case['guide']}, shape {tuple(case['shape'])}, alpha {preset['alpha']}, "
            f"{preset['kernel']} sigma {preset['sigma']:.4g}, {preset['channels']}"
        )
        lines.append(header)
        for row in case["rows"]:
            iterations = str(row.get("cg_iterations", "-"))
            lines.append(
                f"{case['case']:<12} {row['solver']:<18} {row['setup_ms']:>9.1f} {row['setup_cpu_ms']:>7.1f} "
                f"{row['fwd_bwd_ms']:>11.2f} {row['fwd_bwd_cpu_ms']:>7.2f} {row['rel_residual']:>13.2e} "
                f"{row['rel_residual_float64_run']:>10.1e} {iterations:>6}"
            )
        lines.append(
            f"  exact ({case['exact_solver']}) fwd+bwd {case['exact_fwd_bwd_ms']:.2f} ms; "
            f"direct / cg-{CG_FIXED_ITERATIONS} time ratio {case['direct_over_cg50']:.2f}; "
            f"CG to {CG_TOL:.0e}: {case['cg_to_tol_fwd_bwd_ms']:.2f} ms"
        )
        lines.append("")
    if "classifier" in results:
        classifier = results["classifier"]
        lines.append(
            f"Classifier fwd+bwd (input gradient) at {tuple(classifier['input'])}: "
            f"{classifier['fwd_bwd_ms']:.1f} ms (cpu {classifier['fwd_bwd_cpu_ms']:.1f} ms)  "
            f"[{classifier['model']}]"
        )
        lines.append(
            f"Exact smoothing (direct: refined Cholesky, residual <= {CG_TOL:.0e}) fwd+bwd at 224x224x3, "
            f"replaying {classifier['sequence']}, alternately with the classifier ({classifier['pairs']} "
            f"rounds): {classifier['exact_smoothing_fwd_bwd_ms']:.1f} ms per channel (preset; largest "
            f"residual reached {classifier['largest_residual']:.1e}); "
            f"SuperLU {classifier['superlu_fwd_bwd_ms']:.1f} ms ({100 * classifier['superlu_ratio']:.1f}%); "
            f"{classifier['joint_exact_smoothing_fwd_bwd_ms']:.1f} ms with one joint graph "
            f"({100 * classifier['joint_ratio']:.1f}% of the classifier)"
        )
        floor = classifier["traffic_floor"]
        lines.append(
            f"Memory-traffic floor of the preset's smoothing ({floor['solver']}): "
            f"{floor['bytes_per_solve'] / 1e6:.1f} MB read per solve, two solves at "
            f"{floor['read_bandwidth_gb_s']:.1f} GB/s = {floor['floor_ms']:.1f} ms "
            f"({100 * floor['floor_ms'] / classifier['fwd_bwd_ms']:.1f}% of the classifier)"
        )
    if "target" in results:
        target = results["target"]
        verdict = "met" if target["met"] else "MISSED"
        lines.append(
            f"Exact smoothing / classifier, median over pairs: "
            f"{100 * target['exact_smoothing_over_classifier_224']:.1f}% of wall time (target <= "
            f"{100 * target['limit']:.0f}%: {verdict}; moonshot {100 * MOONSHOT_RATIO:.0f}%); "
            f"{100 * target['exact_smoothing_over_classifier_224_cpu_time']:.1f}% of CPU time"
        )
    end = machine.get("load_average_at_end")
    if end:
        lines.append("Load average at end: " + ", ".join(f"{value:.1f}" for value in end))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median; >= 1)")
    parser.add_argument("--cases", nargs="+", choices=tuple(CASES), default=list(CASES))
    parser.add_argument("--no-classifier", action="store_true", help="skip the classifier timing")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads (default 2); 1 is stabler on a crowded machine")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1")
    results = run(args.cases, args.repeats, with_classifier=not args.no_classifier, threads=args.threads)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
