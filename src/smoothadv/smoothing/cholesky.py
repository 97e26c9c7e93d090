"""Sparse Cholesky factorisation of many grid Laplacians at once: the engine of the direct solver.

Every ``L_alpha`` of a batch (one per image, or per image and channel) has the same sparsity pattern: the
pixel grid and its neighbourhood. Only the weights differ. So the symbolic work is done once per image
size and neighbourhood (:func:`grid_pattern`, cached): a fill-reducing ordering, the elimination tree,
the pattern of the factor and its supernodes. The numeric factorisation and the triangular solves then
run on all K matrices together, the K values of each factor entry stored side by side: one index read
serves K matrices, and the innermost loops run over contiguous memory.

The solve walks the factor by supernodes (runs of columns sharing one row pattern below their diagonal
block): the entries of the rows below a supernode are gathered once into a small contiguous buffer,
instead of being touched once per factor entry. The kernels are compiled by Numba on first use and cached
on disk; they release the GIL, so chunks of a batch can run on several threads.

Reference for the algorithms (elimination tree, up-looking factorisation): T. A. Davis, *Direct Methods
for Sparse Linear Systems*, SIAM 2006, chapters 4 and 6.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from numba import njit

from smoothadv.core.errors import SmoothAdvError
from smoothadv.smoothing.graph import grid_edges


@dataclass(frozen=True)
class GridPattern:
    """Symbolic factorisation of the Laplacians of an ``height x width`` grid with given neighbours.

    Attributes:
        size: n, the number of pixels.
        order: (n,) pixel eliminated at each position (the fill-reducing permutation).
        matrix_indptr, matrix_indices: upper triangle of the permuted matrix, column by column (CSC).
        matrix_source: (nnz(A),) where each entry's value comes from: an edge index into the
            ``(offset, y, x)`` map of weights, or ``-1`` for the diagonal.
        parent: (n,) elimination tree.
        factor_indptr, factor_indices: pattern of the lower factor L, column by column, rows ascending.
        supernodes: (S + 1,) first column of each supernode, then n.
        ordering: name of the ordering used (``"minimum degree"`` or ``"nested dissection"``).
    """

    size: int
    order: np.ndarray
    matrix_indptr: np.ndarray
    matrix_indices: np.ndarray
    matrix_source: np.ndarray
    parent: np.ndarray
    factor_indptr: np.ndarray
    factor_indices: np.ndarray
    supernodes: np.ndarray
    ordering: str

    @property
    def factor_nonzeros(self) -> int:
        """Entries of L (diagonal included) for one matrix."""
        return int(self.factor_indptr[-1])

    @property
    def max_rows_below(self) -> int:
        """Largest row count below a supernode's diagonal block (size of the solve's gather buffer)."""
        last = self.supernodes[1:] - 1
        return int((self.factor_indptr[last + 1] - self.factor_indptr[last] - 1).max(initial=0))


@functools.lru_cache(maxsize=16)
def grid_pattern(height: int, width: int, offsets: tuple[tuple[int, int], ...]) -> GridPattern:
    """Order, analyse and find the supernodes of the grid Laplacian pattern (cached per arguments).

    Args:
        height, width: image size.
        offsets: half of the neighbour offsets (dy, dx), as in :class:`~smoothadv.smoothing.graph.PixelGraph`.
    """
    n = height * width
    rows, cols, source = grid_edges(height, width, offsets)
    candidates = {
        "minimum degree": _minimum_degree_order(n, rows, cols),
        "nested dissection": nested_dissection_order(height, width),
    }
    best = None
    for name, order in candidates.items():
        indptr, indices, matrix_source = _permuted_upper(order, rows, cols, source)
        parent = _elimination_tree(n, indptr, indices)
        counts = _column_counts(n, indptr, indices, parent)
        if best is None or counts.sum() < best[-1].sum():
            best = (name, order, indptr, indices, matrix_source, parent, counts)
    name, order, indptr, indices, matrix_source, parent, counts = best
    factor_indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=factor_indptr[1:])
    factor_indices = _factor_pattern(n, indptr, indices, parent, factor_indptr)
    # column j + 1 continues the supernode of j when L[:, j] = {j} + L[:, j + 1] (same rows below)
    continues = (parent[:-1] == np.arange(1, n)) & (counts[:-1] == counts[1:] + 1)
    supernodes = np.concatenate([[0], np.flatnonzero(~continues) + 1, [n]]).astype(np.int64)
    return GridPattern(n, order, indptr, indices, matrix_source, parent, factor_indptr, factor_indices,
                       supernodes, name)


def nested_dissection_order(height: int, width: int, leaf: int = 4) -> np.ndarray:
    """Geometric nested dissection: split the longer side by a one-pixel line, order the halves first.

    A one-pixel line separates the two halves for 4 and 8 neighbours alike. Returns the (n,) pixel order.
    """
    index = np.arange(height * width).reshape(height, width)
    parts: list[np.ndarray] = []

    def visit(y0: int, y1: int, x0: int, x1: int) -> None:
        rows, cols = y1 - y0, x1 - x0
        if rows <= 0 or cols <= 0:
            return
        if rows * cols <= leaf:
            parts.append(index[y0:y1, x0:x1].ravel())
        elif rows >= cols:
            middle = (y0 + y1) // 2
            visit(y0, middle, x0, x1)
            visit(middle + 1, y1, x0, x1)
            parts.append(index[middle, x0:x1])
        else:
            middle = (x0 + x1) // 2
            visit(y0, y1, x0, middle)
            visit(y0, y1, middle + 1, x1)
            parts.append(index[y0:y1, middle])

    visit(0, height, 0, width)
    return np.concatenate(parts)


def _minimum_degree_order(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """SuperLU's multiple minimum degree ordering of the pattern (as a pixel order)."""
    data = np.concatenate([np.full(len(rows), -0.1), np.full(len(rows), -0.1), np.ones(n)])
    matrix = scipy.sparse.csc_matrix(
        (data, (np.concatenate([rows, cols, np.arange(n)]), np.concatenate([cols, rows, np.arange(n)]))),
        shape=(n, n),
    )
    factor = scipy.sparse.linalg.splu(matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                                      options={"SymmetricMode": True})
    return np.argsort(factor.perm_c)


def _permuted_upper(order, rows, cols, source):
    """CSC upper triangle of the matrix permuted by ``order``, each entry's value source (-1: diagonal)."""
    n = len(order)
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    a, b = position[rows], position[cols]
    entry_rows = np.concatenate([np.minimum(a, b), np.arange(n)])
    entry_cols = np.concatenate([np.maximum(a, b), np.arange(n)])
    entry_source = np.concatenate([source, np.full(n, -1)])
    sort = np.lexsort((entry_rows, entry_cols))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(entry_cols, minlength=n), out=indptr[1:])
    return indptr, entry_rows[sort].astype(np.int64), entry_source[sort].astype(np.int64)


def factorize(pattern: GridPattern, matrix_values: np.ndarray) -> np.ndarray:
    """Cholesky factors ``L L^T = P A P^T`` of K matrices with the pattern's sparsity.

    Args:
        pattern: from :func:`grid_pattern`.
        matrix_values: (nnz(A), K) float64 values of the upper triangles in the pattern's entry order.

    Returns:
        (nnz(L), K) factor values, in the order of ``pattern.factor_indices``.

    Raises:
        SmoothAdvError: a matrix is not positive definite (a non-finite weight got through).
    """
    values = np.empty((pattern.factor_nonzeros, matrix_values.shape[1]), np.float64)
    failed = _numeric_factor(pattern.size, pattern.matrix_indptr, pattern.matrix_indices,
                             np.ascontiguousarray(matrix_values), pattern.parent, pattern.factor_indptr,
                             pattern.factor_indices, values)
    if failed >= 0:
        raise SmoothAdvError(
            f"the smoothing matrix is not positive definite (pivot {failed}); the graph weights must be "
            "finite and alpha in [0, 1)."
        )
    return values


def solve(pattern: GridPattern, factor: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``A^{-1} rhs`` for each of the K matrices, given their factors.

    Args:
        pattern: from :func:`grid_pattern`.
        factor: (nnz(L), K) from :func:`factorize`.
        rhs: (K, n) right-hand sides in pixel order (one per matrix), any float dtype.

    Returns:
        (K, n) float64 solutions in pixel order.
    """
    work = np.ascontiguousarray(rhs[:, pattern.order].T, dtype=np.float64)  # (n, K), eliminated order
    buffer = np.empty((max(pattern.max_rows_below, 1), work.shape[1]), np.float64)
    _supernodal_solve(pattern.factor_indptr, pattern.factor_indices, factor, pattern.supernodes, work, buffer)
    out = np.empty_like(rhs, dtype=np.float64)
    out[:, pattern.order] = work.T
    return out


# --- kernels -----------------------------------------------------------------------------------------------

@njit(cache=True)
def _elimination_tree(n, indptr, indices):
    parent = np.full(n, -1, np.int64)
    ancestor = np.full(n, -1, np.int64)
    for k in range(n):
        for p in range(indptr[k], indptr[k + 1]):
            i = indices[p]
            while i != -1 and i < k:  # walk up from i to the root of its current subtree, compressing
                following = ancestor[i]
                ancestor[i] = k
                if following == -1:
                    parent[i] = k
                i = following
    return parent


@njit(cache=True)
def _column_counts(n, indptr, indices, parent):
    """Entries per column of L: row k of L holds the nodes met walking up the tree from A's row k."""
    counts = np.ones(n, np.int64)
    mark = np.full(n, -1, np.int64)
    for k in range(n):
        mark[k] = k
        for p in range(indptr[k], indptr[k + 1]):
            i = indices[p]
            while i < k and mark[i] != k:
                counts[i] += 1
                mark[i] = k
                i = parent[i]
    return counts


@njit(cache=True, nogil=True)
def _row_reach(k, indptr, indices, parent, mark, path, stack):
    """Columns of row k of L (the tree reach of A's column k), in ``stack[top:]``, topologically ordered."""
    n = len(parent)
    top = n
    mark[k] = k
    for p in range(indptr[k], indptr[k + 1]):
        i = indices[p]
        length = 0
        while i < k and mark[i] != k:
            path[length] = i
            length += 1
            mark[i] = k
            i = parent[i]
        while length > 0:
            top -= 1
            length -= 1
            stack[top] = path[length]
    return top


@njit(cache=True)
def _factor_pattern(n, indptr, indices, parent, factor_indptr):
    """Row indices of L, column by column; row k is added at step k, so each column comes out sorted."""
    factor_indices = np.empty(factor_indptr[n], np.int64)
    fill = factor_indptr[:-1].copy()
    mark = np.full(n, -1, np.int64)
    path = np.empty(n, np.int64)
    stack = np.empty(n, np.int64)
    for k in range(n):
        top = _row_reach(k, indptr, indices, parent, mark, path, stack)
        for q in range(top, n):
            i = stack[q]
            factor_indices[fill[i]] = k
            fill[i] += 1
        factor_indices[fill[k]] = k  # column k is still empty: its diagonal comes first
        fill[k] += 1
    return factor_indices


@njit(cache=True, nogil=True)
def _numeric_factor(n, indptr, indices, matrix_values, parent, factor_indptr, factor_indices, factor_values):
    """Up-looking Cholesky (Davis, section 4.8) of K matrices at once; returns the failing row or -1."""
    k_count = matrix_values.shape[1]
    fill = factor_indptr[:-1].copy()
    work = np.zeros((n, k_count))
    coefficient = np.empty(k_count)
    mark = np.full(n, -1, np.int64)
    path = np.empty(n, np.int64)
    stack = np.empty(n, np.int64)
    for k in range(n):
        top = _row_reach(k, indptr, indices, parent, mark, path, stack)
        for p in range(indptr[k], indptr[k + 1]):
            i = indices[p]
            for t in range(k_count):
                work[i, t] += matrix_values[p, t]
        # solve L[:k, :k] l = A[:k, k] along the reach; l is row k of L
        for q in range(top, n):
            i = stack[q]
            diagonal = factor_indptr[i]
            for t in range(k_count):
                coefficient[t] = work[i, t] / factor_values[diagonal, t]
                work[i, t] = 0.0
            for p in range(diagonal + 1, fill[i]):
                row = factor_indices[p]
                for t in range(k_count):
                    work[row, t] -= factor_values[p, t] * coefficient[t]
            for t in range(k_count):
                work[k, t] -= coefficient[t] * coefficient[t]
                factor_values[fill[i], t] = coefficient[t]
            fill[i] += 1
        for t in range(k_count):
            if not work[k, t] > 0.0:
                return k
            factor_values[fill[k], t] = np.sqrt(work[k, t])
            work[k, t] = 0.0
        fill[k] += 1
    return -1


@njit(cache=True, nogil=True)
def _supernodal_solve(factor_indptr, factor_indices, factor_values, supernodes, work, below):
    """``work <- L^-T L^-1 work`` in place; work (n, K) in elimination order, below a (rows, K) buffer."""
    k_count = work.shape[1]
    count = len(supernodes) - 1
    accumulator = np.empty(k_count)
    for s in range(count):  # forward: L y = b
        first, end = supernodes[s], supernodes[s + 1]
        start_below = factor_indptr[end - 1] + 1
        rows_below = factor_indptr[end] - start_below
        for j in range(first, end):
            diagonal = factor_indptr[j]
            for t in range(k_count):
                work[j, t] /= factor_values[diagonal, t]
            for q in range(1, end - j):
                for t in range(k_count):
                    work[j + q, t] -= factor_values[diagonal + q, t] * work[j, t]
        if rows_below > 0:
            below[:rows_below] = 0.0
            for j in range(first, end):
                offset = factor_indptr[j] + end - j
                for m in range(rows_below):
                    for t in range(k_count):
                        below[m, t] += factor_values[offset + m, t] * work[j, t]
            for m in range(rows_below):
                row = factor_indices[start_below + m]
                for t in range(k_count):
                    work[row, t] -= below[m, t]
    for s in range(count - 1, -1, -1):  # backward: L^T x = y
        first, end = supernodes[s], supernodes[s + 1]
        start_below = factor_indptr[end - 1] + 1
        rows_below = factor_indptr[end] - start_below
        for m in range(rows_below):
            row = factor_indices[start_below + m]
            for t in range(k_count):
                below[m, t] = work[row, t]
        for j in range(end - 1, first - 1, -1):
            diagonal = factor_indptr[j]
            offset = diagonal + end - j
            accumulator[:] = 0.0
            for m in range(rows_below):
                for t in range(k_count):
                    accumulator[t] += factor_values[offset + m, t] * below[m, t]
            for q in range(1, end - j):
                for t in range(k_count):
                    accumulator[t] += factor_values[diagonal + q, t] * work[j + q, t]
            for t in range(k_count):
                work[j, t] = (work[j, t] - accumulator[t]) / factor_values[diagonal, t]
