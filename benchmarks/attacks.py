"""Wall time of sC&W against C&W at equal iterations, measured side by side in one run.

Targets (issue "attacks"): sC&W / C&W <= 1.10 on MNIST (C4, dense smoothing inverse) and <= 1.20 at
224x224 (EfficientNet-Lite0, exact sparse factorisation reused across iterations). The paper reports
205 s vs 47 s per ImageNet image (ratio 4.4) with 50 CG iterations per smoothing in TensorFlow.

Both attacks run with early abort off, so they do exactly the same number of model forward/backward
passes; the difference is the smoothing (forward solve + adjoint solve per iteration) and its set-up.

Usage: python benchmarks/attacks.py [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from smoothadv.attacks import CarliniWagnerL2, SmoothCarliniWagnerL2
from smoothadv.attacks.presets import PRESETS


def mnist_setup(batch: int):
    from smoothadv.models.c4 import C4

    try:
        from smoothadv.models import load_model

        model, name = load_model("c4"), "C4 (trained)"
    except Exception:  # weights not available: timing does not depend on the weights
        model, name = C4().eval(), "C4 (random weights)"
    images = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return model, name, torch.round(images * 255) / 255


def imagenet_setup(batch: int):
    try:
        from smoothadv.models import load_model

        model, name = load_model("efficientnet-lite0"), "EfficientNet-Lite0"
    except Exception as error:  # pragma: no cover - stand-in when the model zoo is unavailable
        raise SystemExit(f"EfficientNet-Lite0 unavailable: {error}") from error
    from smoothadv.demo import bundled_photo

    return model, name, bundled_photo(224).repeat(batch, 1, 1, 1)


def time_once(attack, images) -> float:
    start = time.perf_counter()
    attack(images)
    return time.perf_counter() - start


def compare(setup, preset: str, batch: int, steps: int, repeats: int) -> dict:
    model, model_name, images = setup(batch)
    options = dict(PRESETS[preset]["cw"], binary_search_steps=1, steps=steps, abort_early=False)
    cw = CarliniWagnerL2(model, **options)
    scw = SmoothCarliniWagnerL2(model, smoothing=PRESETS[preset]["smoothing"], **options)
    time_once(cw, images[:1])  # warm-up
    # Alternate the two attacks so that load from other processes hits both alike; ratio of medians.
    cw_times, scw_times = [], []
    for _ in range(repeats):
        cw_times.append(time_once(cw, images))
        scw_times.append(time_once(scw, images))
    cw_time, scw_time = statistics.median(cw_times), statistics.median(scw_times)
    return {
        "setting": preset, "model": model_name, "images": batch, "iterations": steps,
        "solver": PRESETS[preset]["smoothing"].prepare(images[:1]).solver.name,
        "cw_seconds": cw_time, "scw_seconds": scw_time, "ratio": scw_time / cw_time,
        "target": 1.10 if preset == "mnist" else 1.20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is the most stable on a shared 2-core machine)")
    parser.add_argument("--imagenet-steps", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [
        compare(mnist_setup, "mnist", batch=100, steps=100, repeats=args.repeats),
        compare(imagenet_setup, "imagenet", batch=2, steps=args.imagenet_steps, repeats=args.repeats),
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"sC&W vs C&W at equal iterations, torch threads {args.threads} "
          "(median of alternating repeats; the machine may be shared)")
    print(f"{'setting':9} {'model':22} {'images':>6} {'iters':>5} {'solver':>6} {'C&W s':>8} {'sC&W s':>8} "
          f"{'ratio':>6} {'target':>6}")
    for row in rows:
        verdict = "ok" if row["ratio"] <= row["target"] else "MISSED"
        print(f"{row['setting']:9} {row['model']:22} {row['images']:>6} {row['iterations']:>5} "
              f"{row['solver']:>6} {row['cw_seconds']:8.2f} {row['scw_seconds']:8.2f} {row['ratio']:6.2f} "
              f"{row['target']:6.2f} {verdict}")


if __name__ == "__main__":
    main()
