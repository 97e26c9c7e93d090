"""The Ray engine against the local engine: sC&W on MNIST (C4), measured side by side in one run.

Targets (issue 17), on this 2-core machine with one torch thread per worker:
* throughput with 2 Ray workers >= 1.8x one Ray worker;
* the Ray engine with one worker takes <= 5% more wall time than the local engine (one thread).

The three runs go in the order local, 1 worker, 2 workers, then (``--rounds 2``, the default) back in the
mirrored order, so that a slow drift of this shared machine's speed falls on all of them alike; each
configuration's times are summed over the rounds. Each evaluation is timed from the call to its return:
the Ray runs include starting their worker actors and sending them the model, but not starting the Ray
instance itself (a cluster is up before work is sent to it); that start is timed and printed apart, with
the ratio it would give if it were charged to the runs.
All three runs must write the same records (timing fields aside), or the benchmark says so.

Ray listens on every interface it sees, so the benchmark re-runs itself in a network namespace whose only
interface is the loopback one (``unshare --net``) when it can; ``--no-isolate`` skips that.

Usage: python benchmarks/ray_scaling.py [--images 200] [--batch-size 25] [--rounds 2] [--json]
       [--no-isolate]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INSIDE = "SMOOTHADV_BENCH_LOOPBACK"


def isolate(argv: list[str]) -> int | None:
    """Run this script again in a loopback-only network namespace; None when that is not possible."""
    command = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
               sys.executable, *argv]
    try:
        probe = subprocess.run(command[:6] + ["true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if probe.returncode:
        return None
    return subprocess.run(command, env={**os.environ, INSIDE: "1"}).returncode


def records(out: Path) -> list[str]:
    from smoothadv.evaluation.records import parse_records

    path = out / "records.jsonl"
    rows, finished, _ = parse_records(path.read_bytes(), path)
    return sorted([json.dumps({k: v for k, v in r.items() if k != "seconds"}, sort_keys=True) for r in rows]
                  + sorted(finished))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=2, help="rounds, each in the last one's order reversed")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    parser.add_argument("--no-isolate", action="store_true", help="run Ray in this network namespace")
    args = parser.parse_args()
    if not args.no_isolate and os.environ.get(INSIDE) != "1":
        status = isolate(sys.argv)
        if status is not None:
            return status
        print("unshare --net is not available here: Ray runs in this network namespace", file=sys.stderr)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import ray
    import torch

    from smoothadv.data import load_mnist
    from smoothadv.evaluation import evaluate
    from smoothadv.evaluation.ray_engine import RayEngine
    from smoothadv.models import load_model

    torch.set_num_threads(1)
    model, data = load_model("c4"), load_mnist("test", limit=args.images)
    work = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    runs: dict[str, dict] = {}
    engines = {"local": lambda: None, "ray-1-worker": lambda: RayEngine(workers=1),
               "ray-2-workers": lambda: RayEngine(workers=2)}

    def timed(name: str, round_index: int) -> None:
        out = work / f"{name}-{round_index}"
        start = time.perf_counter()
        result = evaluate(model, data, "scw", out, batch_size=args.batch_size, progress=False,
                          engine=engines[name]())
        seconds = time.perf_counter() - start
        run = runs.setdefault(name, {"seconds": 0.0, "rounds": [], "worker_start_seconds": [],
                                     "records": records(out)})
        run["seconds"] += seconds
        run["rounds"].append(seconds)
        run["worker_start_seconds"].append(result.engine.start_seconds)
        run["equal"] = run.get("equal", True) and records(out) == run["records"]
        ready = result.engine.start_seconds
        started = "" if name == "local" else f"  (first worker ready after {ready:.1f} s)"
        print(f"{name:>14}: {seconds:7.1f} s  {args.images / seconds:6.2f} img/s{started}", flush=True)

    print(f"sC&W on {args.images} MNIST images (C4), batches of {args.batch_size}, one torch thread per "
          f"worker; {os.cpu_count()} CPUs; {args.rounds} round(s)", flush=True)
    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    cluster_start = time.perf_counter() - start
    print(f"{'ray start':>14}: {cluster_start:7.1f} s (not charged to the runs)", flush=True)
    try:
        order = list(engines)
        for round_index in range(args.rounds):
            for name in order if round_index % 2 == 0 else order[::-1]:
                timed(name, round_index)
    finally:
        ray.shutdown()
    for run in runs.values():
        run["images_per_s"] = args.images * len(run["rounds"]) / run["seconds"]

    scaling = runs["ray-2-workers"]["images_per_s"] / runs["ray-1-worker"]["images_per_s"]
    overhead = runs["ray-1-worker"]["seconds"] / runs["local"]["seconds"]
    with_start = (runs["ray-1-worker"]["seconds"] + cluster_start * args.rounds) / runs["local"]["seconds"]
    same = (runs["local"]["records"] == runs["ray-1-worker"]["records"] == runs["ray-2-workers"]["records"]
            and all(run["equal"] for run in runs.values()))
    summary = {
        "images": args.images, "batch_size": args.batch_size, "ray_start_seconds": cluster_start,
        "rounds": args.rounds,
        "runs": {name: {k: v for k, v in run.items() if k not in ("records", "equal")}
                 for name, run in runs.items()},
        "throughput_2_over_1_worker": scaling, "ray_1_worker_over_local": overhead,
        "ray_1_worker_with_start_over_local": with_start, "records_equal": same,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0 if same else 1
    print(f"throughput, 2 workers / 1 worker: {scaling:.3f}  (target >= 1.8: "
          f"{'met' if scaling >= 1.8 else 'MISSED'})")
    print(f"wall time, Ray 1 worker / local: {overhead:.3f}  (target <= 1.05: "
          f"{'met' if overhead <= 1.05 else 'MISSED'}); {with_start:.3f} if the Ray start were charged")
    print(f"records equal across all runs: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
