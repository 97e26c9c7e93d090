"""Wall time of sC&W against C&W, measured side by side in one run, per iteration and at the preset budget.

Two ratios per setting (issue "CPU speed"):

* per iteration: both attacks at equal iterations (early abort off, one binary-search step), the
  smoothing's set-up (graph, factorisation, DC gain) timed on its own and subtracted from sC&W's time;
  targets <= 1.35 at 224x224 (EfficientNet-Lite0) and <= 1.05 on MNIST (C4, 100 images);
* at the preset budget (9 x 100 iterations, early abort off so both make the same passes), set-up
  included: target <= 1.25 at 224x224.

Each per-iteration time is split into the model (forward + backward of the classifier on the batch,
timed alone), the smoothing solves (timed inside the solver during the sC&W run) and the rest (Adam,
losses, clipping, the 8-bit checks, autograd). The one-off set-up of a process (compiled kernels, the
ordering of an image size) happens in a warm-up. Runs alternate, and every other pair runs sC&W first,
so that load from other processes hits both alike; ratios are medians of the per-pair ratios, printed
with their quartiles (the spread a shared machine gives one run) and beside the ratio of the two
attacks' fastest runs (each attack's least disturbed run, set-up subtracted first in the per-iteration
rows: another estimate, not the one judged).

Usage: python benchmarks/attacks.py [--repeats 5] [--threads 1 2] [--budget-repeats 1]
       [--rows per_iteration budget] [--settings mnist imagenet] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch
import torch.nn.functional as F

from smoothadv.attacks import PRESETS, CarliniWagnerL2, SmoothCarliniWagnerL2
from smoothadv.smoothing import solvers

TARGETS = {"mnist": {"per_iteration": 1.05}, "imagenet": {"per_iteration": 1.35, "budget": 1.25}}


def mnist_setup(batch: int):
    from smoothadv.data import load_mnist
    from smoothadv.models import load_model

    return load_model("c4"), "C4", load_mnist("test", limit=batch).images


def imagenet_setup(batch: int):
    from smoothadv.experiments.photos import bundled_photo
    from smoothadv.models import load_model

    return load_model("efficientnet-lite0"), "EfficientNet-Lite0", bundled_photo(224).repeat(batch, 1, 1, 1)


class SolveTimer:
    """Accumulates the wall time spent in every solver's ``solve`` and ``solve_divided`` while active (a
    call inside another, ``solve_divided`` dividing around ``solve``, counts once: the outer one, with its
    divisions)."""

    METHODS = ("solve", "solve_divided")

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0
        self._depth = 0

    @contextlib.contextmanager
    def active(self):
        classes = {base for cls in solvers.SOLVERS.values() for base in cls.__mro__}
        originals = {(cls, name): cls.__dict__[name] for cls in classes for name in self.METHODS
                     if name in cls.__dict__}
        timer = self

        def timed(original):
            def method(self, *args, **kwargs):
                start = time.perf_counter()
                timer._depth += 1
                try:
                    return original(self, *args, **kwargs)
                finally:
                    timer._depth -= 1
                    if timer._depth == 0:
                        timer.seconds += time.perf_counter() - start
                        timer.calls += 1
            return method

        for (cls, name), original in originals.items():
            setattr(cls, name, timed(original))
        try:
            yield self
        finally:
            for (cls, name), original in originals.items():
                setattr(cls, name, original)


def seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def quartiles(values: list[float]) -> tuple[float, float]:
    """The lower and upper quartiles of ``values`` (both the value itself for one)."""
    if len(values) < 2:
        return values[0], values[0]
    low, _, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, high


def model_seconds(model, images) -> float:
    """One forward + backward of the classifier to its input (an attack iteration's model cost)."""
    labels = torch.zeros(len(images), dtype=torch.long)

    def step():
        x = images.clone().requires_grad_()
        F.cross_entropy(model(x), labels).backward()

    step()
    return statistics.median(seconds(step) for _ in range(5))


def timed_pair(cw, scw, smoothing, images, *, scw_first: bool) -> dict:
    """Seconds of one C&W run and one sC&W run, the latter with its set-up timed on its own and the time
    inside its solves."""
    def run_cw():
        return {"cw": seconds(lambda: cw(images))}

    def run_scw():
        setup = seconds(lambda: smoothing.prepare(images))
        with SolveTimer().active() as timer:
            scw_time = seconds(lambda: scw(images))
        return {"scw": scw_time, "setup": setup, "solves": timer.seconds}

    first, second = (run_scw, run_cw) if scw_first else (run_cw, run_scw)
    return {**first(), **second()}


def compare(setup, preset: str, batch: int, steps: int, repeats: int, binary_search_steps: int = 1) -> dict:
    model, model_name, images = setup(batch)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    smoothing = PRESETS[preset]["smoothing"]
    options = dict(PRESETS[preset]["cw"], binary_search_steps=binary_search_steps, steps=steps,
                   abort_early=False)
    cw = CarliniWagnerL2(model, **options)
    scw = SmoothCarliniWagnerL2(model, smoothing=smoothing, **options)
    warm = dict(options, binary_search_steps=1, steps=2)
    # warm-up on the whole batch: compiled kernels, the ordering of this size, the team's tasks, and the
    # classifier's kernels for this batch size, which the first run of either attack would otherwise pay
    CarliniWagnerL2(model, **warm)(images)
    SmoothCarliniWagnerL2(model, smoothing=smoothing, **warm)(images)
    iterations = binary_search_steps * steps
    # every other pair runs sC&W first, so that a load rising or falling during the run hits both alike
    pairs = [dict(timed_pair(cw, scw, smoothing, images, scw_first=repeat % 2 == 1),
                  model=model_seconds(model, images)) for repeat in range(repeats)]

    return {"setting": preset, "model": model_name, "images": batch,
            "solver": smoothing.prepare(images[:1]).solver.name, **summary(pairs, iterations)}


def summary(pairs: list[dict], iterations: int) -> dict:
    """Ratios, their spread and the per-iteration split of the timed pairs (seconds of ``cw``, ``scw``, its
    ``setup`` and ``solves``, and the ``model`` alone, per pair)."""
    def median(key, per_iteration=True):
        return statistics.median(pair[key] for pair in pairs) / (iterations if per_iteration else 1)

    with_setup = [p["scw"] / p["cw"] for p in pairs]
    per_iteration = [(p["scw"] - p["setup"]) / p["cw"] for p in pairs]
    model_ms = 1e3 * median("model", False)
    cw_ms, scw_ms = 1e3 * median("cw"), 1e3 * median("scw")
    setup_ms, solves_ms = 1e3 * median("setup", False), 1e3 * median("solves")
    scw_loop_ms = scw_ms - setup_ms / iterations
    return {
        "iterations": iterations,
        "cw_seconds": median("cw", False), "scw_seconds": median("scw", False),
        "setup_seconds": setup_ms / 1e3,
        "ratio_with_setup": statistics.median(with_setup),
        "ratio_per_iteration": statistics.median(per_iteration),
        "quartiles_with_setup": quartiles(with_setup),
        "quartiles_per_iteration": quartiles(per_iteration),
        "fastest_with_setup": min(p["scw"] for p in pairs) / min(p["cw"] for p in pairs),
        "fastest_per_iteration": min(p["scw"] - p["setup"] for p in pairs) / min(p["cw"] for p in pairs),
        "split_ms": {
            "cw": {"model": model_ms, "rest": cw_ms - model_ms},
            "scw": {"model": model_ms, "solves": solves_ms, "rest": scw_loop_ms - model_ms - solves_ms},
        },
        "pair_ratios_with_setup": [round(ratio, 4) for ratio in with_setup],
        "pair_ratios_per_iteration": [round(ratio, 4) for ratio in per_iteration],
        "pair_seconds": [{key: round(value, 5) for key, value in p.items()} for p in pairs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="alternating pairs per per-iteration row")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--imagenet-steps", type=int, default=50, help="iterations of the per-iteration row")
    parser.add_argument("--budget-repeats", type=int, default=1,
                        help="pairs at the preset budget (9 x 100 at 224x224; 0 skips it)")
    parser.add_argument("--rows", nargs="+", choices=("per_iteration", "budget"),
                        default=["per_iteration", "budget"])
    parser.add_argument("--settings", nargs="+", choices=("mnist", "imagenet"), default=["mnist", "imagenet"],
                        help="the per-iteration rows to run (the budget row is ImageNet's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        measured = []
        if "per_iteration" in args.rows and "mnist" in args.settings:
            measured.append(
                ("per_iteration", compare(mnist_setup, "mnist", batch=100, steps=100, repeats=args.repeats)))
        if "per_iteration" in args.rows and "imagenet" in args.settings:
            measured.append(("per_iteration", compare(imagenet_setup, "imagenet", batch=1,
                                                      steps=args.imagenet_steps, repeats=args.repeats)))
        if "budget" in args.rows and args.budget_repeats > 0 and "imagenet" in args.settings:
            measured.append(("budget", compare(imagenet_setup, "imagenet", batch=1, steps=100,
                                               repeats=args.budget_repeats, binary_search_steps=9)))
        for kind, row in measured:
            which = "per_iteration" if kind == "per_iteration" else "with_setup"
            row.update(threads=threads, kind=kind, ratio=row[f"ratio_{which}"],
                       quartiles=row[f"quartiles_{which}"], fastest=row[f"fastest_{which}"],
                       target=TARGETS[row["setting"]].get(kind))
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("sC&W vs C&W (times: medians; ratio: median of the per-pair ratios, judged against the target; "
          "quartiles: theirs; fastest: sC&W's fastest run over C&W's, set-up subtracted in the per-iteration "
          "rows, the least disturbed by other load)")
    print(f"{'thr':>3} {'setting':9} {'row':13} {'images':>6} {'iters':>5} {'C&W s':>7} {'sC&W s':>7} "
          f"{'setup s':>7} {'ratio':>6} {'quartiles':>11} {'fastest':>7} {'target':>6} {'':6}  "
          f"per-iteration ms: model / solves / rest (C&W rest)")
    for row in rows:
        verdict = "" if row["target"] is None else ("ok" if row["ratio"] <= row["target"] else "MISSED")
        split = row["split_ms"]
        print(f"{row['threads']:>3} {row['setting']:9} {row['kind']:13} {row['images']:>6} "
              f"{row['iterations']:>5} "
              f"{row['cw_seconds']:7.2f} {row['scw_seconds']:7.2f} {row['setup_seconds']:7.2f} "
              f"{row['ratio']:6.3f} {row['quartiles'][0]:5.3f}-{row['quartiles'][1]:5.3f} "
              f"{row['fastest']:7.3f} {row['target'] or '-':>6} {verdict:6}  "
              f"{split['scw']['model']:.1f} / {split['scw']['solves']:.1f} / {split['scw']['rest']:.1f} "
              f"({split['cw']['rest']:.1f})")


if __name__ == "__main__":
    main()
