"""The smoothing's compiled solve pieces with their data in cache and evicted, side by side in one run.

In an attack a classifier runs between two solves and evicts the factor from the caches, so the evicted
times are the ones an attack sees. For each piece this prints the median of ``--repeats`` runs of:

* warm: the piece run again right after itself;
* evicted: the piece run right after reading a buffer larger than the caches (``--evict-mb``).

The pieces: the two float32 sweeps of one refinement pass at 224x224x3 (ImageNet preset, the bundled
photo), one product with the exact matrices plus the new residual, the start of a warm solve, and the exact
float64 solve of 100 MNIST guides (MNIST preset). Used for ``docs/smoothing.md`` ("CPU speed").

Usage: python benchmarks/sweeps.py [--repeats 15] [--evict-mb 512] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from smoothadv.attacks import PRESETS
from smoothadv.data import load_mnist
from smoothadv.experiments.photos import bundled_photo
from smoothadv.smoothing import cholesky


def refined_pieces() -> dict:
    """Callables for the refined solve's pieces on the bundled photo's factor (one group of three)."""
    solver = PRESETS["imagenet"]["smoothing"].prepare(bundled_photo(224)).solver
    factor = solver.factors(1)
    n = factor.pattern.size
    rng = np.random.default_rng(0)
    work = np.zeros((n, cholesky.WIDTH), np.float32)
    work[:, :3] = rng.standard_normal((n, 3))
    rhs, solution = rng.standard_normal((n, 3)), rng.standard_normal((n, 3))
    product, residual, close = np.empty_like(rhs), np.empty_like(rhs), 0.99 * rhs
    indptr, indices, values = factor.factor_indptr[0], factor.factor_indices[0], factor.factor_values[0]
    matrix = (factor.pattern.matrix_indptr, factor.matrix_indices, factor.matrix_values[0],
              factor.matrix_diagonals[0], factor.matrix_scale)

    def sweeps():
        factor._sweeps(indptr, indices, values, factor.splits[0], work.copy())

    kept, corrected = np.ones(3, np.uint8), np.empty_like(rhs)

    def correction():  # from an extrapolated start, as the first correction of a warm solve
        cholesky._apply_correction(work, np.ones(3), close, solution, kept, corrected, *matrix, rhs, product,
                                   residual)

    def start():
        norms = np.empty(3), np.empty(3)
        cholesky._start_refinement(rhs, close, solution, True, residual, *norms, kept.copy())

    return {"sweeps 224x224x3 (one pass)": sweeps, "product + residual 224x224x3": correction,
            "warm start 224x224x3": start}


def exact_piece() -> dict:
    images = load_mnist("test", limit=100).images
    solver = PRESETS["mnist"]["smoothing"].prepare(images).solver
    signal = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    return {"exact solve, 100 MNIST guides": lambda: solver.solve(signal)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--evict-mb", type=int, default=512, help="buffer read to evict the caches")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    buffer = np.ones(args.evict_mb * 2**20 // 8)
    rows = []
    for name, piece in {**refined_pieces(), **exact_piece()}.items():
        piece()  # compiled, factors built
        times = {}
        for state, before in (("warm", lambda: None), ("evicted", buffer.sum)):
            samples = []
            for _ in range(args.repeats):
                before()
                start = time.perf_counter()
                piece()
                samples.append(time.perf_counter() - start)
            times[state] = 1e3 * statistics.median(samples)
        rows.append({"piece": name, "warm_ms": times["warm"], "evicted_ms": times["evicted"]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"one thread, medians of {args.repeats}; evicted: after reading {args.evict_mb} MB")
    print(f"{'piece':34} {'warm ms':>8} {'evicted ms':>10}")
    for row in rows:
        print(f"{row['piece']:34} {row['warm_ms']:8.2f} {row['evicted_ms']:10.2f}")


if __name__ == "__main__":
    main()
