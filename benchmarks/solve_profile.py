"""Where the refined solves of an sC&W run at 224x224 spend their time, per iteration and per piece.

Runs sC&W (ImageNet preset, EfficientNet-Lite0, the bundled photo, one binary-search step, early abort off)
with every compiled piece of :mod:`smoothadv.smoothing.cholesky` and the solver's packing wrapped in a
timer, and prints ms per iteration for each (with sweeps in parts, the parts' times add up over threads).
The first solve builds the float32 factors; that set-up is reported apart, and the whole set-up (graph,
factors, DC gain: one ``prepare`` timed before the run) is left out of the time per iteration. The solves
include the DC gain's cold solve. The model's forward+backward, timed alone, is printed for scale.

Usage: python benchmarks/solve_profile.py [--steps 40] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import torch

from attacks import SolveTimer, imagenet_setup, model_seconds, seconds
from smoothadv.attacks import PRESETS, SmoothCarliniWagnerL2
from smoothadv.smoothing import cholesky, solvers

KERNELS = ("_start_refinement", "_finish_start", "_scale_residual", "_forward_part", "_forward_top",
           "_backward", "_apply_correction", "_extrapolate_lanes")
# in parts on torch's threads (two threads or more) the pieces between the sweeps go through these
METHODS = ((cholesky.LaneFactor, "pack"), (cholesky.LaneFactor, "unpack"), (cholesky.LaneFactor, "_sweeps"),
           (cholesky.LaneFactor, "_rows_on_team"), (cholesky.LaneFactor, "_correct_on_team"),
           (solvers.CholeskySolver, "_lane_factor"))


def timed(function, name, totals, calls):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start
            calls[name] += 1
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _, images = imagenet_setup(1)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    smoothing = PRESETS["imagenet"]["smoothing"]
    options = dict(PRESETS["imagenet"]["cw"], binary_search_steps=1, steps=args.steps, abort_early=False)
    # compile every kernel first: a compiled kernel that calls another (``_forward_top``) must not meet
    # the timing wrapper when it is compiled
    SmoothCarliniWagnerL2(model, smoothing=smoothing, **dict(options, steps=2))(images)
    totals, calls = collections.Counter(), collections.Counter()
    for name in KERNELS:
        setattr(cholesky, name, timed(getattr(cholesky, name), name, totals, calls))
    for owner, name in METHODS:
        setattr(owner, name, timed(getattr(owner, name), name, totals, calls))
    prepare_seconds = seconds(lambda: smoothing.prepare(images))  # the set-up the attack repeats
    totals.clear()
    calls.clear()
    with SolveTimer().active() as timer:
        total = seconds(lambda: SmoothCarliniWagnerL2(model, smoothing=smoothing, **options)(images))
    setup = totals.pop("_lane_factor", 0.0)
    per_iteration = {name: 1e3 * value / args.steps for name, value in totals.most_common()}
    result = {"threads": args.threads, "steps": args.steps,
              "iteration_ms": 1e3 * (total - prepare_seconds) / args.steps,
              "solves_ms": 1e3 * (timer.seconds - setup) / args.steps, "factor_setup_s": setup,
              "model_ms": 1e3 * model_seconds(model, images), "pieces_ms": per_iteration,
              "calls_per_iteration": {name: calls[name] / args.steps for name in per_iteration}}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"sC&W at 224x224, {args.steps} iterations, {args.threads} thread(s): "
          f"{result['iteration_ms']:.1f} ms per iteration, solves {result['solves_ms']:.1f} ms, "
          f"Lite0 fwd+bwd alone {result['model_ms']:.1f} ms; float32 factors built in {setup:.2f} s "
          "(not counted)")
    for name, value in per_iteration.items():
        print(f"  {name:20} {value:6.2f} ms/iteration  ({result['calls_per_iteration'][name]:.1f} calls)")


if __name__ == "__main__":
    main()
