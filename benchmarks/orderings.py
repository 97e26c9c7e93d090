"""Fill of the Cholesky factor of grid Laplacians under the orderings the direct solver can use.

Compares our two candidates (SuperLU's multiple minimum degree, our geometric nested dissection;
``grid_pattern`` keeps the one with less fill) with METIS nested dissection, when the ``pymetis`` binding
is installed (``pip install pymetis``; it is not a dependency of smoothadv). The fill is nnz(L) for one
graph, 4 neighbours.

Usage: python benchmarks/orderings.py [--sides 28 224 299] [--json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from smoothadv.smoothing import cholesky
from smoothadv.smoothing.graph import NEIGHBOUR_OFFSETS, grid_edges


def fill(order: np.ndarray, rows: np.ndarray, cols: np.ndarray, source: np.ndarray) -> int:
    """nnz(L) of the grid Laplacian eliminated in ``order``."""
    n = len(order)
    indptr, indices, _ = cholesky._permuted_upper(order, rows, cols, source)
    parent = cholesky._elimination_tree(n, indptr, indices)
    return int(cholesky._column_counts(n, indptr, indices, parent).sum())


def metis_order(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
    try:
        import pymetis
    except ImportError:
        return None
    adjacency = [[] for _ in range(n)]
    for a, b in zip(rows.tolist(), cols.tolist(), strict=True):
        adjacency[a].append(b)
        adjacency[b].append(a)
    permutation, _ = pymetis.nested_dissection(adjacency=adjacency)
    return np.asarray(permutation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[28, 224, 299])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows_out = []
    for side in args.sides:
        n = side * side
        rows, cols, source = grid_edges(side, side, NEIGHBOUR_OFFSETS[4])
        row = {"side": side,
               "minimum_degree": fill(cholesky._minimum_degree_order(n, rows, cols), rows, cols, source),
               "geometric_nested_dissection": fill(cholesky.nested_dissection_order(side, side), rows, cols,
                                                   source),
               "chosen": cholesky.grid_pattern(side, side, NEIGHBOUR_OFFSETS[4]).ordering}
        metis = metis_order(n, rows, cols)
        row["metis"] = None if metis is None else fill(metis, rows, cols, source)
        rows_out.append(row)
    if args.json:
        print(json.dumps(rows_out, indent=2))
        return
    print("nnz(L) per graph, 4 neighbours (METIS: pymetis nested dissection, '-' when not installed)")
    for row in rows_out:
        metis = row["metis"]
        cells = [f"{row['side']:>4}x{row['side']:<4} METIS {'-' if metis is None else f'{metis:,}':>10}"]
        for key, label in (("minimum_degree", "minimum degree"),
                           ("geometric_nested_dissection", "geometric ND")):
            versus = "" if metis is None else f" ({100 * (row[key] / metis - 1):+.1f}% vs METIS)"
            cells.append(f"{label} {row[key]:>10,}{versus}")
        print("  ".join(cells) + f"  chosen: {row['chosen']}")


if __name__ == "__main__":
    main()
