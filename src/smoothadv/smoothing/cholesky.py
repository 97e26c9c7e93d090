"""Sparse Cholesky factorisation of many grid Laplacians at once: the engine of the direct solver.

Every ``L_alpha`` of a batch (one per image, or per image and channel) has the same sparsity pattern: the
pixel grid and its neighbourhood. Only the weights differ. So the symbolic work is done once per image
size and neighbourhood (:func:`grid_pattern`, cached): a fill-reducing ordering, the elimination tree, the
pattern of the factor. The numeric factorisation and the triangular solves then run on
many matrices at once, the values of each factor entry stored side by side, so that one index read serves
them all. Two solve methods:

* :func:`solve`, float64, exact to rounding, for small images (an MNIST batch): the K matrices of a batch
  in blocks of :data:`EXACT_LANES`, each block's values side by side (:class:`ExactFactor`). A block's
  backward sweep finds its factor in cache, read by its forward sweep; it runs interleaved with the
  forward sweep of the next block, which reads that block's factor from memory meanwhile.
* :class:`LaneFactor`, for large images: the triangular solves are bound by memory traffic there (the
  factor of a 224x224 image does not stay in cache while a classifier runs between two solves), so the
  factor is stored in float32, without the entries below float32's resolution, three matrices (the
  channels of a photo) side by side. Float64 accuracy is restored by iterative refinement against the
  exact matrices, starting from a previous solution where the caller smooths a sequence of close signals.
  With more threads than groups of three matrices, each sweep runs in parts at once: independent
  subtrees of the elimination tree, then their common ancestors.

The kernels are compiled by Numba on first use and cached on disk; they release the GIL, so chunks of a
batch can run on several threads.

References (elimination tree, up-looking factorisation, iterative refinement):
T. A. Davis, *Direct Methods for Sparse Linear Systems*, SIAM 2006, chapters 4 and 6; N. J. Higham,
*Accuracy and Stability of Numerical Algorithms*, SIAM 2002, chapter 12.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import llvmlite.binding
import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from smoothadv.core.errors import SmoothAdvError
from smoothadv.smoothing import team
from smoothadv.smoothing._vectors import (
    EXACT_WIDTH,
    WIDTH,
    exact_backward,
    exact_forward,
    gather_column,
    scatter_column,
)
from smoothadv.smoothing.graph import grid_edges


@dataclass(frozen=True)
class GridPattern:
    """Symbolic factorisation of the Laplacians of an ``height x width`` grid with given neighbours.

    Attributes:
        size: n, the number of pixels.
        order: (n,) pixel eliminated at each position (the fill-reducing permutation).
        matrix_indptr, matrix_indices: upper triangle of the permuted matrix, column by column (CSC); the
            int64 column starts are read as they are by the compiled kernels.
        matrix_source: (nnz(A),) where each entry's value comes from: an edge index into the
            ``(offset, y, x)`` map of weights, or ``-1`` for the diagonal.
        parent: (n,) elimination tree.
        factor_indptr, factor_indices: pattern of the lower factor L, column by column, rows ascending.
        ordering: name of the ordering used (``"minimum degree"`` or ``"nested dissection"``).
        part_bounds: (P + 1,) the columns of part q are ``part_bounds[q]:part_bounds[q + 1]``; the columns
            from ``part_bounds[-1]`` on (the top) are their common ancestors in the elimination tree. A
            part's columns only reach rows of the same part and of the top, so the P parts of a
            triangular sweep can run at once (P = 1: one part, no top).
    """

    size: int
    order: np.ndarray
    matrix_indptr: np.ndarray
    matrix_indices: np.ndarray
    matrix_source: np.ndarray
    parent: np.ndarray
    factor_indptr: np.ndarray
    factor_indices: np.ndarray
    ordering: str
    part_bounds: np.ndarray

    @property
    def parts(self) -> int:
        """P, the parts of a sweep that can run at once."""
        return len(self.part_bounds) - 1

    @property
    def top(self) -> int:
        """First column of the top (the common ancestors of the parts)."""
        return int(self.part_bounds[-1])

    @property
    def factor_nonzeros(self) -> int:
        """Entries of L (diagonal included) for one matrix."""
        return int(self.factor_indptr[-1])


@functools.lru_cache(maxsize=16)
def grid_pattern(height: int, width: int, offsets: tuple[tuple[int, int], ...],
                 parts: int = 1) -> GridPattern:
    """Order and analyse the grid Laplacian pattern (cached per arguments).

    Args:
        height, width: image size.
        offsets: half of the neighbour offsets (dy, dx), as in :class:`~smoothadv.smoothing.graph.PixelGraph`.
        parts: subtrees of the elimination tree to make contiguous (for sweeps on that many threads). The
            ordering is then a reordering of the one-part ordering with the same tree and the same fill.
    """
    n = height * width
    rows, cols, source = grid_edges(height, width, offsets)
    if parts > 1:
        single = grid_pattern(height, width, offsets)
        labels = _partition(single.parent, np.diff(single.factor_indptr), parts)
        # the parts' columns, each part in its old relative order, then the top: still children first
        position = np.argsort(np.where(labels < 0, parts, labels), kind="stable")
        order = single.order[position]
        return _analyse(order, rows, cols, source, single.ordering, np.bincount(labels[labels >= 0],
                                                                                 minlength=parts))
    candidates = {
        "minimum degree": _minimum_degree_order(n, rows, cols),
        "nested dissection": nested_dissection_order(height, width),
    }
    fills = {}
    for name, order in candidates.items():
        indptr, indices, _ = _permuted_upper(order, rows, cols, source)
        parent = _elimination_tree(n, indptr, indices)
        fills[name] = _column_counts(n, indptr, indices, parent).sum()
    name = min(fills, key=fills.get)
    return _analyse(candidates[name], rows, cols, source, name, np.array([n]))


def _analyse(order, rows, cols, source, ordering: str, part_sizes: np.ndarray) -> GridPattern:
    """Symbolic factorisation of the grid pattern under ``order``, whose first columns are parts of
    ``part_sizes`` columns each."""
    n = len(order)
    indptr, indices, matrix_source = _permuted_upper(order, rows, cols, source)
    parent = _elimination_tree(n, indptr, indices)
    counts = _column_counts(n, indptr, indices, parent)
    factor_indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=factor_indptr[1:])
    factor_indices = _factor_pattern(n, indptr, indices, parent, factor_indptr)
    part_bounds = np.concatenate([[0], np.cumsum(part_sizes)]).astype(np.int64)
    return GridPattern(n, order, indptr, indices, matrix_source, parent, factor_indptr, factor_indices,
                       ordering, part_bounds)


def _partition(parent: np.ndarray, counts: np.ndarray, parts: int) -> np.ndarray:
    """Label each column with one of ``parts`` groups of whole subtrees, or -1 for the top, so that a
    sweep's time, the heaviest group's factor entries plus the top's (run alone), is least.

    The heaviest subtree is opened (its root goes to the top, its children become subtrees) again and
    again; after each opening the subtrees are packed largest first into the lightest group (after Geist
    and Ng, 1989), and the best packing met is kept. Opening stops once the top alone outweighs it.
    """
    n = len(parent)
    weight = _subtree_weights(parent, counts.astype(np.int64))
    key = np.where(parent >= 0, parent, n)
    by_parent = np.argsort(key, kind="stable")
    first_child = np.searchsorted(key[by_parent], np.arange(n + 1))  # children of j: by_parent[a:b]
    front, top, top_weight = list(np.flatnonzero(parent < 0)), [], 0
    best = None
    while True:
        front.sort(key=lambda node: -weight[node])
        loads, groups = np.zeros(parts, np.int64), []
        for node in front:
            groups.append(int(np.argmin(loads)))
            loads[groups[-1]] += weight[node]
        if best is None or loads.max() + top_weight < best[0]:
            best = (loads.max() + top_weight, list(front), groups, len(top))
        heaviest = front[0]
        children = by_parent[first_child[heaviest]:first_child[heaviest + 1]]
        top_weight += counts[heaviest]
        if len(children) == 0 or top_weight >= best[0]:
            break
        top.append(heaviest)
        front = front[1:] + list(children)
    _, front, groups, opened = best
    labels = np.full(n, -2, np.int64)
    labels[np.array(top[:opened], np.int64)] = -1
    labels[np.array(front, np.int64)] = groups
    _inherit_labels(parent, labels)
    return labels


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
        (nnz(L), K) factor values, in the order of ``pattern.factor_indices``, with ``1 / L_jj`` in place of
        each diagonal entry: the solves multiply by it instead of dividing.

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
    diagonals = pattern.factor_indptr[:-1]
    values[diagonals] = 1.0 / values[diagonals]
    return values


#: Matrices an exact solve walks together: each entry of a block of an :class:`ExactFactor` holds this many
#: float64 values, one per matrix (64 bytes, a cache line).
EXACT_LANES = EXACT_WIDTH


def _aligned_empty(shape: tuple[int, ...], dtype=np.float64, alignment: int = 64) -> np.ndarray:
    """An uninitialised C-contiguous array whose first element starts an ``alignment``-byte boundary (a
    cache line: every 64-byte entry of an exact block then fills one line, not two)."""
    itemsize = np.dtype(dtype).itemsize
    count = int(np.prod(shape))
    raw = np.empty(count + alignment // itemsize, dtype)
    skip = (-raw.ctypes.data % alignment) // itemsize
    return raw[skip:skip + count].reshape(shape)


class ExactFactor:
    """Float64 Cholesky factors of K matrices with one pattern, for the exact solves of :func:`solve`.

    Args:
        pattern: from :func:`grid_pattern`.
        values: (nnz(L), K) from :func:`factorize`.

    Attributes:
        blocks: (ceil(K / EXACT_LANES), nnz(L), EXACT_LANES) float64, 64-byte aligned: block b holds the
            values of matrices ``8 b`` to ``8 b + 7`` side by side (``1 / L_jj`` on the diagonal), and the
            identity in the lanes past K.
        count: K.
        pattern: the pattern given.
        work: (2, n, EXACT_LANES) float64, 64-byte aligned, the sweeps' scratch (two blocks' right-hand
            sides, see :func:`_solve_exact`): kept with the factor, because a buffer allocated per solve is
            not in cache after a classifier's pass (docs/smoothing.md). So one solve at a time per factor.
        position: (n,) int64, the elimination position of each pixel (the inverse of ``pattern.order``).
    """

    def __init__(self, pattern: GridPattern, values: np.ndarray):
        stored, self.count = values.shape
        self.pattern = pattern
        lanes = -(-self.count // EXACT_LANES) * EXACT_LANES
        padded = np.zeros((stored, lanes))
        padded[:, :self.count] = values
        padded[pattern.factor_indptr[:-1], self.count:] = 1.0
        self.blocks = _aligned_empty((lanes // EXACT_LANES, stored, EXACT_LANES))
        self.blocks[:] = padded.reshape(stored, -1, EXACT_LANES).transpose(1, 0, 2)
        self.work = _aligned_empty((2, pattern.size, EXACT_LANES))
        self.position = np.argsort(pattern.order)  # (n,) int64: the elimination position of each pixel

    def values(self) -> np.ndarray:
        """(nnz(L), K) float64, the values as :func:`factorize` returned them."""
        stored = self.blocks.shape[1]
        return self.blocks.transpose(1, 0, 2).reshape(stored, -1)[:, :self.count].copy()

    def repeated(self, repeat: int) -> ExactFactor:
        """The factors with each matrix repeated ``repeat`` times in a row (a graph shared by channels)."""
        return ExactFactor(self.pattern, np.repeat(self.values(), repeat, axis=1))

    @property
    def nbytes(self) -> int:
        """Bytes of the factor values (what a solve reads from memory once)."""
        return self.blocks.nbytes


#: Matrices solved together by one pass of the refined kernels: each factor entry holds this many values
#: side by side, one per matrix, so that one index read serves them all. Three fits the channels of a
#: colour image; a batch of K matrices is cut into ceil(K / LANES) groups, and unused lanes hold the
#: identity.
LANES = 3

#: An off-diagonal entry of a float32 factor is dropped when ``|L_ij| < DROP_BELOW * L_jj`` in every lane
#: of its group: its term ``(L_ij / L_jj) x_j`` in a sweep is then below float32's rounding of ``x_j``.
#: Fill entries decay fast away from the diagonal; about a fifth of a 224x224 factor falls below this
#: (float32's unit roundoff), and the refinement's residual check covers what dropping them changes.
DROP_BELOW = 2.0**-24


class LaneFactor:
    """Cholesky factors of K matrices with one pattern, in groups of :data:`LANES`, and their solves.

    The factors are computed in float64 and stored in float32, without the entries below float32's
    resolution (:data:`DROP_BELOW`). A solve is an iterative refinement (mixed precision): the residual
    ``b - A x`` is computed in float64 from the exact matrices, a correction is solved with the float32
    factor, and this repeats until the relative residual ``||b - A x|| / ||b||`` of every system is at
    most ``tol``. A float32 factor halves the memory traffic of the triangular solves, which bounds their
    speed; each correction gains about six digits, so one or two are enough. A solve may start from a
    previous solution (a warm start): consecutive right-hand sides of an attack are close, so the first
    correction is small and one pass usually meets ``tol``.

    Args:
        pattern: from :func:`grid_pattern`.
        matrix_values: (nnz(A), K) float64 values of the upper triangles in the pattern's entry order.
        off_diagonal_scale: c when every off-diagonal value is ``c * w`` with ``w`` a float32 number and
            every matrix has one diagonal value (``L_alpha``: ``c = -alpha / (1 - alpha)``, ``w`` the graph's
            float32 weights). The products with A then read the float32 ``w`` and the per-lane diagonal,
            half the bytes, and give the same values to the last bit. Checked: values that do not have this
            form are kept in float64.

    Attributes:
        matrix_values, matrix_diagonals, matrix_scale: what the products with A read, per group: (nnz(A),
            LANES) values (float32 weights when compact, else float64 values), (LANES,) diagonal values
            (empty when not compact: the diagonal is in the values) and the scale of the off-diagonal
            values (1.0 when not compact).
        factor_indptr, factor_indices, factor_values: per group, the stored factor: (n + 1,) int64 column
            starts, (stored,) int32 rows, ascending in each column, diagonal first, and (stored, WIDTH)
            float32 values with the reciprocal of each diagonal entry in its place: the LANES values, then
            a padding lane that holds the identity, so that an entry is one four-wide vector
            (:mod:`~smoothadv.smoothing._vectors`).
        splits: per group, (top,) the first entry of each column of the parts that lies in the top.

    Raises:
        SmoothAdvError: a matrix is not positive definite.
    """

    def __init__(self, pattern: GridPattern, matrix_values: np.ndarray, *,
                 off_diagonal_scale: float | None = None):
        self.pattern = pattern
        self.count = matrix_values.shape[1]
        self.groups = -(-self.count // LANES)
        padded = np.zeros((matrix_values.shape[0], self.groups * LANES))
        padded[:, :self.count] = matrix_values
        padded[pattern.matrix_source < 0, self.count:] = 1.0  # unused lanes: the identity
        #: (groups, nnz(A), LANES) float64: each group's entries contiguous, an entry's lanes adjacent
        self.matrix_values = np.ascontiguousarray(padded.reshape(-1, self.groups, LANES).transpose(1, 0, 2))
        self.matrix_indices = pattern.matrix_indices.astype(np.int32)
        self.factor_indptr, self.factor_indices, self.factor_values, self.splits = [], [], [], []
        columns = np.repeat(np.arange(pattern.size), np.diff(pattern.factor_indptr))
        diagonals = pattern.factor_indptr[:-1]
        for group in self.matrix_values:
            factor = factorize(pattern, group)  # (nnz(L), LANES) float64, 1 / L_jj on the diagonal
            keep = (np.abs(factor) * factor[diagonals][columns] >= DROP_BELOW).any(axis=1)
            keep[diagonals] = True
            indptr = np.zeros(pattern.size + 1, np.int64)
            np.cumsum(np.bincount(columns[keep], minlength=pattern.size), out=indptr[1:])
            values = factor[keep]
            rows = pattern.factor_indices[keep]
            below_top = np.bincount(columns[keep][rows < pattern.top], minlength=pattern.size)
            self.factor_indptr.append(indptr)
            self.factor_indices.append(rows.astype(np.int32))
            padded_values = np.zeros((len(values), WIDTH), np.float32)  # the padding lane: the identity
            padded_values[:, :LANES] = values
            padded_values[indptr[:-1], LANES:] = 1.0
            self.factor_values.append(padded_values)
            self.splits.append(indptr[:pattern.top] + below_top[:pattern.top])
        self.matrix_diagonals, self.matrix_scale = np.empty((self.groups, 0)), 1.0
        if off_diagonal_scale is not None:
            self._compact_matrices(float(off_diagonal_scale))

    def _compact_matrices(self, scale: float) -> None:
        """Keep the matrices as float32 weights times ``scale`` plus one diagonal value per lane, where that
        reproduces every value exactly."""
        last = self.pattern.matrix_indptr[1:] - 1  # the diagonal closes each column
        off = np.ones(self.matrix_values.shape[1], bool)
        off[last] = False
        weights = (self.matrix_values / scale).astype(np.float32)
        weights[:, last] = 0.0
        diagonals = self.matrix_values[:, last[0]]  # (groups, LANES)
        exact = np.array_equal(weights[:, off].astype(np.float64) * scale, self.matrix_values[:, off])
        if exact and bool((self.matrix_values[:, last] == diagonals[:, None]).all()):
            self.matrix_values, self.matrix_diagonals, self.matrix_scale = weights, diagonals.copy(), scale

    @property
    def stored_nonzeros(self) -> int:
        """Factor entries stored, all groups (each holds LANES values)."""
        return sum(len(indices) for indices in self.factor_indices)

    @property
    def nbytes(self) -> int:
        """Bytes a solve pass reads from the factor (values and row indices), all groups."""
        return sum(values.nbytes + indices.nbytes
                   for values, indices in zip(self.factor_values, self.factor_indices, strict=True))

    def pack(self, rhs: np.ndarray) -> np.ndarray:
        """(K, n) vectors in pixel order, float32 or float64 -> (groups, n, LANES) float64 in elimination
        order, unused lanes zero."""
        packed = np.empty((self.groups, self.pattern.size, LANES))
        _pack(rhs, self.pattern.order, packed)
        return packed

    def unpack(self, packed: np.ndarray, dtype=np.float64) -> np.ndarray:
        """Inverse of :meth:`pack`: (groups, n, LANES) -> (K, n) in pixel order, in ``dtype``."""
        out = np.empty((self.count, self.pattern.size), dtype)
        _unpack(packed, self.pattern.order, out)
        return out

    def solve_group(self, group: int, rhs: np.ndarray, solution: np.ndarray, product: np.ndarray, *,
                    start: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None, tol: float,
                    max_passes: int) -> tuple[int, np.ndarray]:
        """Solve ``A x = rhs`` for one group by refinement, into ``solution`` (all (n, LANES) float64, packed,
        C-contiguous: the slices of :meth:`pack`'s output are).

        Args:
            rhs: right-hand sides.
            solution: where the solution is written.
            product: where ``A @ solution`` is written (the next warm start's residual costs no product).
            start: None to start from zero, or ``(x_previous, x_last, p_previous, p_last)``: two earlier
                solutions and their products, not ``solution`` or ``product`` themselves. The start is
                their linear extrapolation ``2 x_last - x_previous``, whose product is ``2 p_last -
                p_previous`` (pass the same arrays twice to start from ``x_last``). It is formed inside the
                first correction rather than stored first, and each system falls back to zero where it is
                worse than zero.
            tol: relative residual to reach; 0 makes exactly ``max_passes`` corrections.
            max_passes: most corrections.

        Returns:
            The corrections made, and the (LANES,) relative residuals ``||rhs - A x|| / ||rhs||`` reached,
            computed in float64 (0 for a zero right-hand side).
        """
        indptr, indices = self.factor_indptr[group], self.factor_indices[group]
        values = self.factor_values[group]
        residual = np.empty_like(rhs)
        work = np.empty((rhs.shape[0], WIDTH), np.float32)
        rhs_norms, norms, relative = np.empty(LANES), np.empty(LANES), np.zeros(LANES)
        kept = np.zeros(LANES, np.uint8)  # per system: whether the start is used
        previous, last = (start[0], start[1]) if start is not None else (rhs, rhs)
        products = (start[2], start[3]) if start is not None else (rhs, rhs)
        # with parts on torch's threads, the pieces between the sweeps run in parts too
        on_team = self.pattern.parts > 1 and team.available()
        if on_team and start is not None:
            squares = self._rows_on_team(_TASK_START, [rhs, *products, residual])
            _finish_start(rhs, residual, squares, True, rhs_norms, norms, kept)
        else:
            _start_refinement(rhs, *products, start is not None, residual, rhs_norms, norms, kept)
        passes = 0
        while True:
            np.divide(norms, rhs_norms, out=relative, where=rhs_norms > 0)
            if relative.max() <= tol or passes >= max_passes:
                if passes == 0:  # the start is the solution
                    _extrapolate_lanes(previous, last, kept, solution)
                    _extrapolate_lanes(*products, kept, product)
                return passes, relative
            if on_team:
                self._rows_on_team(_TASK_SCALE, [residual], [norms], [work])
            else:
                _scale_residual(residual, norms, work)
            self._sweeps(indptr, indices, values, self.splits[group], work)
            matrix = (self.pattern.matrix_indptr, self.matrix_indices, self.matrix_values[group],
                      self.matrix_diagonals[group], self.matrix_scale)
            if on_team:
                self._correct_on_team(work, norms, previous, last, kept, solution, matrix, product)
                squares = self._rows_on_team(_TASK_RESIDUAL, [rhs, product, residual])
                np.sqrt(squares[:LANES], out=norms)
            else:
                _apply_correction(work, norms, previous, last, kept, solution, *matrix, rhs, product,
                                  residual)
            # later corrections add to the solution: 2 x - x is x exactly
            previous = last = solution
            kept[:] = 1
            passes += 1

    def _rows_on_team(self, kind: int, lanes: list, shared: list = (), wide: list = ()) -> np.ndarray | None:
        """Run a row-wise kernel on torch's threads, the rows cut into one span per part: ``lanes`` (n, 3)
        and ``wide`` (n, WIDTH) arrays are cut, ``shared`` ones passed whole. Kernels that sum squares
        (start, residual) get a (6,) row of their own; returns the sums, added, or None."""
        n, parts = self.pattern.size, self.pattern.parts
        bounds = np.linspace(0, n, parts + 1).round().astype(np.int64)
        squares = np.zeros((parts, 6)) if kind in (_TASK_START, _TASK_RESIDUAL) else None
        table = team.task_table(parts)
        for q in range(parts):
            rows = slice(bounds[q], bounds[q + 1])
            arrays = [*(array[rows] for array in lanes), *shared, *(array[rows] for array in wide)]
            _fill_task(table, q, kind, (rows.stop - rows.start,),
                       arrays + ([squares[q]] if squares is not None else []), ())
        team.run(_team_worker(), table, parts)
        return None if squares is None else squares.sum(axis=0)

    def _correct_on_team(self, work, norms, previous, last, kept, solution, matrix, product) -> None:
        """:func:`_correct_and_multiply` with the columns of each part at once on torch's threads, then the
        top's columns. In the upper triangle, a column's rows are descendants of it in the elimination
        tree, so the columns of a part read and write only the rows of that part; the top's columns read
        and write any rows, after the parts."""
        indptr, indices, values, diagonal, scale = matrix
        bounds, top, parts = self.pattern.part_bounds, self.pattern.top, self.pattern.parts
        n = self.pattern.size
        kind = _TASK_CORRECT_COMPACT if values.dtype == np.float32 else _TASK_CORRECT_FLOAT64
        arrays = [work, norms, previous, last, kept, solution, indptr, indices, values, diagonal,
                  np.array([scale]), product]
        table = team.task_table(parts)
        for q in range(parts):
            _fill_task(table, q, kind, (n, len(indices), len(diagonal)), arrays, (bounds[q], bounds[q + 1]))
        team.run(_team_worker(), table, parts)
        _correct_and_multiply(work, norms, previous, last, kept, solution, *matrix, product, top, n)

    def _sweeps(self, indptr, indices, values, split, work) -> None:
        """``work <- L^-T L^-1 work`` in place: the parts of each sweep at once (on torch's OpenMP threads
        where :func:`~smoothadv.smoothing.team.available`), the top alone."""
        bounds, top, parts = self.pattern.part_bounds, self.pattern.top, self.pattern.parts
        n = self.pattern.size
        spills = np.empty((parts, n - top, WIDTH), np.float32)
        if parts > 1 and team.available():
            forward, backward = team.task_table(parts), team.task_table(parts)
            arrays, sizes = [indptr, indices, values, work], (n, len(indices), top)
            for q in range(parts):
                columns = (bounds[q], bounds[q + 1])
                _fill_task(forward, q, _TASK_FORWARD_PART, sizes, [*arrays, split, spills[q]], columns)
                _fill_task(backward, q, _TASK_BACKWARD_PART, sizes, arrays, columns)
            forward_parts = functools.partial(team.run, _team_worker(), forward, parts)
            backward_parts = functools.partial(team.run, _team_worker(), backward, parts)
        else:
            forward_parts = functools.partial(_at_once, [
                functools.partial(_forward_part, indptr, indices, values, work, bounds[q], bounds[q + 1],
                                  split, top, spills[q]) for q in range(parts)])
            backward_parts = functools.partial(_at_once, [
                functools.partial(_backward, indptr, indices, values, work, bounds[q], bounds[q + 1])
                for q in range(parts)])
        forward_parts()
        _forward_top(indptr, indices, values, work, top, spills)
        _backward(indptr, indices, values, work, top, n)
        backward_parts()


def _at_once(tasks: list) -> None:
    """Run the tasks (compiled kernels that release the GIL) at once: the first on this thread, the
    others on a pool kept for the process (a task never waits on another, so the pool cannot deadlock)."""
    global _POOL
    if len(tasks) > 1 and _POOL is None:
        with _POOL_LOCK:  # groups on several threads may get here at once
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                           thread_name_prefix="smoothadv-sweep")
    pending = [_POOL.submit(task) for task in tasks[1:]]
    tasks[0]()
    for future in pending:
        future.result()


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _forget_pool_in_child() -> None:
    """A forked child has none of the pool's threads: it starts a pool of its own when it needs one."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


#: What an exact solve does with its ``divisor``: nothing, ``A^{-1} (rhs / divisor)``, or
#: ``(A^{-1} rhs) / divisor`` (the normalised smoothing of eq. 9 and its adjoint divide by the DC gain).
DIVIDE_NONE, DIVIDE_BEFORE, DIVIDE_AFTER = 0, 1, 2


def solve(factor: ExactFactor, rhs: np.ndarray, out: np.ndarray | None = None, *,
          divisor: np.ndarray | None = None, divide: int = DIVIDE_NONE) -> np.ndarray:
    """``A^{-1} rhs`` for each of the K matrices, given their float64 factors, exact to rounding: one
    triangular-solve pair, block by block of :data:`EXACT_LANES` matrices (the method for small images,
    where a batch holds many matrices and one index read serves a block).

    Args:
        factor: the K matrices' factors.
        rhs: (K, n) right-hand sides in pixel order (one per matrix), float32 or float64.
        out: (K, n) float32 or float64, where to write the solutions (rounded to its dtype); None makes a
            float64 array.
        divisor: (K, n), of the dtype of ``rhs`` (before) or ``out`` (after), used as ``divide`` says
            (:data:`DIVIDE_BEFORE`, :data:`DIVIDE_AFTER`); each division is done in that dtype, as a
            division of the arrays would be, while the values pass through the sweeps' work array.

    Returns:
        (K, n) solutions in pixel order: ``out``, or a new float64 array.
    """
    pattern = factor.pattern
    if rhs.shape != (factor.count, pattern.size) or (out is not None and out.shape != rhs.shape):
        raise ValueError(f"solve needs rhs and out of shape ({factor.count}, {pattern.size}); got {rhs.shape}"
                         f" and {None if out is None else out.shape}.")
    if out is None:
        out = np.empty(rhs.shape)
    _solve_exact(pattern.factor_indptr, pattern.factor_indices, factor.blocks, factor.position, rhs, out,
                 factor.work, *_checked_divisor(divisor, divide, rhs, out))
    return out


def _checked_divisor(divisor, divide, rhs, out) -> tuple[np.ndarray, int]:
    """The divisor the kernels read (``rhs`` itself, unread, when there is none) and the mode."""
    if divide == DIVIDE_NONE:
        return rhs, DIVIDE_NONE
    like = rhs if divide == DIVIDE_BEFORE else out
    if divide not in (DIVIDE_BEFORE, DIVIDE_AFTER) or divisor is None or divisor.shape != like.shape or (
            divisor.dtype != like.dtype):
        raise ValueError(f"an exact solve divides by a divisor of the shape and dtype of its "
                         f"{'rhs' if divide == DIVIDE_BEFORE else 'out'} ({like.shape}, {like.dtype}), with "
                         f"divide DIVIDE_BEFORE or DIVIDE_AFTER; got divide {divide!r} and "
                         f"{None if divisor is None else (divisor.shape, divisor.dtype)}.")
    return divisor, divide


def solve_blocks(factors: list[ExactFactor], rhs: np.ndarray, out: np.ndarray, *,
                 divisor: np.ndarray | None = None, divide: int = DIVIDE_NONE) -> None:
    """:func:`solve` of consecutive blocks of rows, ``factors[i]`` serving the next ``factors[i].count``
    rows: at once on torch's OpenMP threads where :func:`~smoothadv.smoothing.team.available`, else one
    after the other on this thread (see :class:`ExactPlan`).

    Args:
        factors: the blocks' factors, of one pattern.
        rhs: (sum k_i, n) float32 or float64 right-hand sides, C-contiguous.
        out: (sum k_i, n) C-contiguous, of the dtype of ``rhs``, where the solutions are written.
        divisor, divide: as for :func:`solve` (a divisor C-contiguous, of the dtype of ``rhs``).
    """
    if rhs.dtype != out.dtype or rhs.dtype not in (np.float32, np.float64):
        raise TypeError(f"solve_blocks takes float32 or float64 rhs and out of one dtype; got {rhs.dtype}, "
                        f"{out.dtype}: convert both with .astype(np.float64), or both to float32.")
    rows = sum(factor.count for factor in factors)
    if rhs.shape != (rows, factors[0].pattern.size) or out.shape != rhs.shape:
        raise ValueError(f"solve_blocks needs rhs and out of shape ({rows}, {factors[0].pattern.size}); got "
                         f"{rhs.shape} and {out.shape}.")
    if not (rhs.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError("solve_blocks needs C-contiguous rhs and out: pass np.ascontiguousarray(rhs) and an "
                         "out from np.empty.")
    ExactPlan(factors, rhs.dtype, None if divide == DIVIDE_NONE else divisor, divide).run(
        rhs.ctypes.data, out.ctypes.data)


#: Positions in an exact task's row (after its kind and sizes, see :func:`_run_exact`) that
#: :class:`ExactPlan` fills per run: the addresses of the block's rhs, out and divisor, the division mode,
#: and the block's byte offset in rhs, out and divisor.
_EXACT_RHS, _EXACT_OUT, _EXACT_DIVISOR, _EXACT_DIVIDE, _EXACT_OFFSET = 5, 11, 12, 13, 14


class ExactPlan:
    """The exact solves of one layout of rows, set up once for the many solves of an attack.

    The rows are cut into consecutive blocks, each with its own factor. The plan holds their task table:
    the kernel's sizes, and the addresses of everything but the right-hand sides and solutions. It also
    holds the divisor. Each :meth:`run` writes two addresses into the table and starts the kernel, so a
    solve costs a few calls from Python (after a classifier's pass over megabytes, each such call runs
    from memory: docs/smoothing.md). Runs of one plan take turns (a lock): they share the table and the
    factors' scratch.

    Args:
        factors: ``factors[i]`` serves the next ``factors[i].count`` rows; all of one pattern.
        dtype: of the right-hand sides and solutions, float32 or float64.
        divisor: (rows, n) C-contiguous, of ``dtype``, kept with the plan (it must not change while the
            plan is in use); None when ``divide`` is :data:`DIVIDE_NONE`.
        divide: :data:`DIVIDE_NONE`, :data:`DIVIDE_BEFORE` or :data:`DIVIDE_AFTER`, as for :func:`solve`.

    Raises:
        TypeError: another dtype. ValueError: factors of several patterns, or a divisor that does not
            match ``divide``, the rows, or ``dtype``.
    """

    def __init__(self, factors: list[ExactFactor], dtype, divisor: np.ndarray | None = None,
                 divide: int = DIVIDE_NONE):
        dtype = np.dtype(dtype)
        pattern = factors[0].pattern
        rows, size = sum(factor.count for factor in factors), pattern.size
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"an exact plan solves float32 or float64 systems, not {dtype}: convert them "
                            f"with .astype(np.float64).")
        if any(factor.pattern is not pattern for factor in factors):
            raise ValueError("an exact plan needs factors of one pattern: build every factor on the same "
                             "grid_pattern(...).")
        if divide not in (DIVIDE_NONE, DIVIDE_BEFORE, DIVIDE_AFTER) or (divisor is None) != (
                divide == DIVIDE_NONE) or (divisor is not None and (
                    divisor.shape != (rows, size) or divisor.dtype != dtype
                    or not divisor.flags.c_contiguous)):
            raise ValueError(f"an exact plan divides by a C-contiguous ({rows}, {size}) {dtype} "
                             f"divisor with divide DIVIDE_BEFORE or DIVIDE_AFTER, or by none with "
                             f"DIVIDE_NONE; got divide {divide!r} and "
                             f"{None if divisor is None else (divisor.shape, divisor.dtype)}.")
        self.factors, self.divisor = factors, divisor
        self._lock = threading.Lock()
        kind = _TASK_EXACT_FLOAT32 if dtype == np.float32 else _TASK_EXACT_FLOAT64
        self.table = team.task_table(len(factors))
        first = 0
        for index, factor in enumerate(factors):
            offset = first * size * dtype.itemsize  # of the block's rows in rhs, out and divisor
            sizes = (size, pattern.factor_nonzeros, factor.count, len(factor.blocks))
            # rhs and out (and the divisor when none divides) are placed by each run (_place)
            _fill_task(self.table, index, kind, sizes,
                       [0, factor.position, factor.work, pattern.factor_indptr, pattern.factor_indices,
                        factor.blocks, 0, 0 if divisor is None else _address(divisor) + offset],
                       (divide, offset))
            first += factor.count

    def run(self, rhs_address: int, out_address: int) -> None:
        """Solve the right-hand sides at ``rhs_address`` into the solutions at ``out_address``.

        The blocks run at once on torch's OpenMP threads when there are several and the team is available,
        else one after the other on this thread.

        Args:
            rhs_address, out_address: addresses of (rows, n) C-contiguous arrays of the plan's dtype, which
                the caller has checked and keeps alive until this returns.
        """
        with self._lock:
            _place(self.table, rhs_address, out_address)
            if len(self.factors) > 1 and team.available():
                team.run(_team_worker(), self.table, len(self.factors))
            else:
                _run_tasks(self.table)


#: Kinds of the tasks :func:`_team_worker` runs (a task row: kind, sizes, array addresses, integers; see
#: :func:`_run_task` for each kind's row).
_TASK_FORWARD_PART, _TASK_BACKWARD_PART, _TASK_EXACT_FLOAT32, _TASK_EXACT_FLOAT64 = 1, 2, 3, 4
_TASK_START, _TASK_SCALE, _TASK_RESIDUAL, _TASK_CORRECT_COMPACT, _TASK_CORRECT_FLOAT64 = 5, 6, 7, 8, 9


def _fill_task(table: np.ndarray, index: int, kind: int, sizes: tuple, arrays: list, integers: tuple) -> None:
    """Row ``index`` of a task table: ``kind``, its sizes, the arrays' addresses (C-contiguous, kept alive
    by the caller; an int is an address already), then integers (each kind's row: :func:`_run_task`)."""
    values = [kind, *sizes, *(_address(array) if isinstance(array, np.ndarray) else int(array)
                              for array in arrays), *integers]
    if len(values) > team.TASK_WIDTH:
        raise ValueError(f"a task row holds at most {team.TASK_WIDTH} integers, not {len(values)}")
    start = 2 + index * team.TASK_WIDTH
    table[start:start + len(values)] = values


def _address(array: np.ndarray) -> int:
    if not array.flags.c_contiguous:
        raise ValueError("a task's arrays must be C-contiguous")
    return array.ctypes.data


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
def _subtree_weights(parent, counts):
    """Sum of ``counts`` over each node's subtree (a parent comes after its children)."""
    weight = counts.copy()
    for j in range(len(parent)):
        if parent[j] >= 0:
            weight[parent[j]] += weight[j]
    return weight


@njit(cache=True)
def _inherit_labels(parent, labels):
    """Unlabelled nodes (-2) take their parent's label, from the roots down."""
    for j in range(len(parent) - 1, -1, -1):
        if labels[j] == -2:
            labels[j] = labels[parent[j]]


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


@njit(cache=True, nogil=True, error_model="numpy")
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


# The float64 kernels spell out the LANES = 3 values of an entry so that they stay in registers (the
# compiler cannot prove that work[i] and work[j] do not overlap); the float32 sweeps handle an entry as one
# vector of WIDTH values (smoothing/_vectors.py). error_model="numpy" drops Python's zero-division checks;
# "contract" lets multiply-subtract pairs fuse, nothing else of fastmath.
_SOLVE_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": {"contract"}}

#: Entries of the factor (or of the matrices) read ahead of the sweep. Between two solves a classifier
#: evicts them from the caches; the hardware prefetchers, which stop at page boundaries, leave the sweeps
#: waiting on memory, and reading a few kilobytes ahead hides that (docs/smoothing.md, "CPU speed").
PREFETCH_AHEAD = 256

# llvm.prefetch is mangled by its pointer type: typed pointers (LLVM < 17, older llvmlite) or opaque ones.
_PREFETCH_NAME = "llvm.prefetch.p0" if llvmlite.binding.llvm_version_info[0] >= 17 else "llvm.prefetch.p0i8"


@intrinsic
def _prefetch(typingctx, array, index):
    """Hint the CPU to load the cache line of ``array[index, 0, ...]`` (a read, kept in all levels)."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        position = [args[1]] + [context.get_constant(types.intp, 0)] * (array_type.ndim - 1)
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, position, wraparound=False)
        byte_pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        int32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer.type, int32, int32, int32]),
            _PREFETCH_NAME)
        read, keep_in_all_levels, data_cache = (ir.Constant(int32, flag) for flag in (0, 3, 1))
        builder.call(function, [byte_pointer, read, keep_in_all_levels, data_cache])
        return context.get_dummy_value()
    return types.void(array, types.intp), codegen


@njit(inline="always")
def _prefetch_up_to(values, indices, position, target, step):
    """Prefetch entries ``position, position + step, ...`` below ``target`` of ``values`` (step entries are
    at most a cache line) and of the int32 ``indices`` (one line in 16 entries); returns the new position."""
    while position < target:
        _prefetch(values, position)
        if position & 15 < step:
            _prefetch(indices, position)
        position += step
    return position


@njit(inline="always")
def _prefetch_lines(array, position, target, step):
    """Prefetch the cache line at the start of each of ``array[position:target:step]`` (along the first
    axis: elements of a 1-d array, rows of an exact block); returns ``target`` (or where it stopped past
    it), walking up, or down when ``step`` < 0."""
    while (position < target) if step > 0 else (position > target):
        _prefetch(array, position)
        position += step
    return position


@njit(inline="always")
def _prefetch_down_to(values, indices, position, target, step):
    """As :func:`_prefetch_up_to`, walking down to ``target`` (exclusive)."""
    while position > target:
        _prefetch(values, position)
        if position & 15 < step:
            _prefetch(indices, position)
        position -= step
    return position


@njit(**_SOLVE_OPTIONS)
def _forward_part(indptr, indices, values, work, first, end, split, top, spill):
    """Forward sweep ``L y = b`` over columns ``first:end`` of one part, scattering each solved value below:
    into ``work`` (n, WIDTH) for the rows of the part, into ``spill`` (n - top, WIDTH), zeroed first, for
    the rows of the top, which other parts update too. ``split[j]``: the first entry of column j in the
    top. values (stored, WIDTH) hold the reciprocal of each diagonal entry in its place."""
    spill[:] = 0.0
    ahead, final = indptr[first], len(indices) - 1
    for j in range(first, end):
        ahead = _prefetch_up_to(values, indices, ahead, min(indptr[j + 1] + PREFETCH_AHEAD, final), 4)
        diagonal = indptr[j]
        x0 = work[j, 0] * values[diagonal, 0]
        x1 = work[j, 1] * values[diagonal, 1]
        x2 = work[j, 2] * values[diagonal, 2]
        x3 = work[j, 3] * values[diagonal, 3]
        work[j, 0], work[j, 1], work[j, 2], work[j, 3] = x0, x1, x2, x3
        scatter_column(work, 0, values, indices, diagonal + 1, split[j], x0, x1, x2, x3)
        scatter_column(spill, top, values, indices, split[j], indptr[j + 1], x0, x1, x2, x3)


@njit(**_SOLVE_OPTIONS)
def _forward_top(indptr, indices, values, work, top, spills):
    """The parts' updates of the top rows (spills (P, n - top, WIDTH)) added, then the forward sweep over
    the top columns (a part whose entries all stay in ``work``)."""
    n = work.shape[0]
    for q in range(spills.shape[0]):
        for i in range(n - top):
            for t in range(WIDTH):
                work[top + i, t] += spills[q, i, t]
    _forward_part(indptr, indices, values, work, top, n, indptr[1:], n, spills[0, :0])


@njit(**_SOLVE_OPTIONS)
def _backward(indptr, indices, values, work, first, end):
    """Backward sweep ``L^T x = y`` over columns ``end - 1`` down to ``first``, gathering column j of L
    (its rows are solved already: rows below, in the same part or in the top)."""
    ahead = indptr[end] - 1
    for j in range(end - 1, first - 1, -1):
        ahead = _prefetch_down_to(values, indices, ahead, max(indptr[j] - PREFETCH_AHEAD, 0), 4)
        diagonal = indptr[j]
        s0, s1, s2, s3 = gather_column(work, values, indices, diagonal + 1, indptr[j + 1])
        work[j, 0] = (work[j, 0] - s0) * values[diagonal, 0]
        work[j, 1] = (work[j, 1] - s1) * values[diagonal, 1]
        work[j, 2] = (work[j, 2] - s2) * values[diagonal, 2]
        work[j, 3] = (work[j, 3] - s3) * values[diagonal, 3]


@njit(**_SOLVE_OPTIONS)
def _extrapolate_lanes(previous, last, kept, out):
    """``out <- 2 last - previous`` in the lanes where ``kept`` (3,), zero in the others; all (n, 3)."""
    for j in range(out.shape[0]):
        for t in range(3):
            out[j, t] = 2.0 * last[j, t] - previous[j, t] if kept[t] else 0.0


@njit(**_SOLVE_OPTIONS)
def _pack(rhs, order, packed):
    """``packed[g, i, t] = rhs[lanes g + t, order[i]]`` (lanes = ``packed.shape[2]``), zero past the K
    rows of rhs. Row by row of ``packed``: its writes are contiguous, and the K values of a row are read
    from K rows of rhs at one offset."""
    count, size, lanes = rhs.shape[0], packed.shape[1], packed.shape[2]
    for g in range(packed.shape[0]):
        used = max(0, min(lanes, count - lanes * g))
        for i in range(size):
            pixel = order[i]
            for t in range(used):
                packed[g, i, t] = rhs[lanes * g + t, pixel]
            for t in range(used, lanes):
                packed[g, i, t] = 0.0


@njit(**_SOLVE_OPTIONS)
def _unpack(packed, order, out):
    """Inverse of :func:`_pack` for the K rows of ``out``."""
    lanes = packed.shape[2]
    for row in range(out.shape[0]):
        g, t = row // lanes, row % lanes
        for i in range(packed.shape[1]):
            out[row, order[i]] = packed[g, i, t]


@njit(**_SOLVE_OPTIONS)
def _correct_and_multiply(work, norms, previous, last, kept, solution, indptr, indices, values, diagonal,
                          scale, out, first, end):
    """``solution <- start + work * norm`` per lane and ``out <- A solution``, in one walk of the columns
    ``first:end`` (all columns: ``0:n``; the columns of a part touch only the rows of that part, see
    :meth:`LaneFactor._correct_on_team`).

    The start is ``2 last - previous`` where ``kept`` (3,) and zero elsewhere (``previous`` and ``last`` may
    be ``solution`` itself). A is symmetric, given by its upper triangle (CSC, the diagonal last in each
    column): off-diagonal entries ``scale * values`` (values (nnz(A), 3)), diagonal entries ``diagonal``
    (3,) per lane, or, when that is empty, the diagonal of ``values``. Column j's rows are all before j, so
    when j is reached their solution values are final and ``out[j]`` has received nothing yet: the column
    gathers ``out[j]`` and scatters ``A_ij x_j`` into the rows above. work (n, WIDTH) float32; the others
    (n, 3) float64."""
    scale0 = norms[0] if norms[0] > 0.0 else 1.0
    scale1 = norms[1] if norms[1] > 0.0 else 1.0
    scale2 = norms[2] if norms[2] > 0.0 else 1.0
    compact = diagonal.shape[0] > 0
    ahead, final = indptr[first], len(indices) - 1
    step = 2 if values.itemsize == 8 else 4  # entries per cache line of values
    for j in range(first, end):
        ahead = _prefetch_up_to(values, indices, ahead, min(indptr[j + 1] + PREFETCH_AHEAD, final), step)
        x0 = (2.0 * last[j, 0] - previous[j, 0] if kept[0] else 0.0) + work[j, 0] * scale0
        x1 = (2.0 * last[j, 1] - previous[j, 1] if kept[1] else 0.0) + work[j, 1] * scale1
        x2 = (2.0 * last[j, 2] - previous[j, 2] if kept[2] else 0.0) + work[j, 2] * scale2
        solution[j, 0], solution[j, 1], solution[j, 2] = x0, x1, x2
        last_entry = indptr[j + 1] - 1  # the diagonal
        if compact:
            s0, s1, s2 = diagonal[0] * x0, diagonal[1] * x1, diagonal[2] * x2
        else:
            s0, s1, s2 = values[last_entry, 0] * x0, values[last_entry, 1] * x1, values[last_entry, 2] * x2
        for p in range(indptr[j], last_entry):
            i = indices[p]
            a0, a1, a2 = values[p, 0] * scale, values[p, 1] * scale, values[p, 2] * scale
            out[i, 0] += a0 * x0
            out[i, 1] += a1 * x1
            out[i, 2] += a2 * x2
            s0 += a0 * solution[i, 0]
            s1 += a1 * solution[i, 1]
            s2 += a2 * solution[i, 2]
        out[j, 0], out[j, 1], out[j, 2] = s0, s1, s2


@njit(**_SOLVE_OPTIONS)
def _residual_squares(rhs, product, residual, squares):
    """``residual <- rhs - product``, and the (6,) squared column norms of residual (0:3) and of rhs (3:6);
    all (n, 3) C-contiguous, walked flat with two sums per lane in flight (one chain of sums is bound by
    the latency of the additions, not by memory)."""
    a, b, r = rhs.reshape(-1), product.reshape(-1), residual.reshape(-1)
    s0 = s1 = s2 = s3 = s4 = s5 = 0.0  # lane t sums in s_t and s_(t+3)
    q0 = q1 = q2 = q3 = q4 = q5 = 0.0
    i, m = 0, a.shape[0]
    while i + 6 <= m:
        d0, d1, d2 = a[i] - b[i], a[i + 1] - b[i + 1], a[i + 2] - b[i + 2]
        d3, d4, d5 = a[i + 3] - b[i + 3], a[i + 4] - b[i + 4], a[i + 5] - b[i + 5]
        r[i], r[i + 1], r[i + 2], r[i + 3], r[i + 4], r[i + 5] = d0, d1, d2, d3, d4, d5
        s0, s1, s2 = s0 + d0 * d0, s1 + d1 * d1, s2 + d2 * d2
        s3, s4, s5 = s3 + d3 * d3, s4 + d4 * d4, s5 + d5 * d5
        q0, q1, q2 = q0 + a[i] * a[i], q1 + a[i + 1] * a[i + 1], q2 + a[i + 2] * a[i + 2]
        q3, q4, q5 = q3 + a[i + 3] * a[i + 3], q4 + a[i + 4] * a[i + 4], q5 + a[i + 5] * a[i + 5]
        i += 6
    if i < m:  # an odd number of rows: one left
        d0, d1, d2 = a[i] - b[i], a[i + 1] - b[i + 1], a[i + 2] - b[i + 2]
        r[i], r[i + 1], r[i + 2] = d0, d1, d2
        s0, s1, s2 = s0 + d0 * d0, s1 + d1 * d1, s2 + d2 * d2
        q0, q1, q2 = q0 + a[i] * a[i], q1 + a[i + 1] * a[i + 1], q2 + a[i + 2] * a[i + 2]
    squares[0], squares[1], squares[2] = s0 + s3, s1 + s4, s2 + s5
    squares[3], squares[4], squares[5] = q0 + q3, q1 + q4, q2 + q5


@njit(**_SOLVE_OPTIONS)
def _residual_norms(rhs, product, residual, norms, rhs_norms):
    """``residual <- rhs - product``, and the (3,) column norms of residual and of rhs (see
    :func:`_residual_squares`)."""
    squares = np.empty(6)
    _residual_squares(rhs, product, residual, squares)
    for t in range(3):
        norms[t], rhs_norms[t] = np.sqrt(squares[t]), np.sqrt(squares[3 + t])


@njit(**_SOLVE_OPTIONS)
def _start_squares(rhs, previous_product, last_product, residual, squares):
    """``residual <- rhs - (2 last_product - previous_product)`` (the residual of an extrapolated start,
    its product formed here and not stored) and the (6,) squared column norms of residual (0:3) and of rhs
    (3:6); all arrays (n, 3)."""
    s0 = s1 = s2 = q0 = q1 = q2 = 0.0
    for j in range(rhs.shape[0]):
        b0, b1, b2 = rhs[j, 0], rhs[j, 1], rhs[j, 2]
        d0 = b0 - (2.0 * last_product[j, 0] - previous_product[j, 0])
        d1 = b1 - (2.0 * last_product[j, 1] - previous_product[j, 1])
        d2 = b2 - (2.0 * last_product[j, 2] - previous_product[j, 2])
        residual[j, 0], residual[j, 1], residual[j, 2] = d0, d1, d2
        s0, s1, s2 = s0 + d0 * d0, s1 + d1 * d1, s2 + d2 * d2
        q0, q1, q2 = q0 + b0 * b0, q1 + b1 * b1, q2 + b2 * b2
    squares[0], squares[1], squares[2] = s0, s1, s2
    squares[3], squares[4], squares[5] = q0, q1, q2


@njit(**_SOLVE_OPTIONS)
def _finish_start(rhs, residual, squares, warm, rhs_norms, norms, kept):
    """The (3,) norms of rhs and of the start's residual from their squares (6,); a lane whose start is
    worse than zero, or every lane when not ``warm``, starts from zero: ``kept[t]`` 0, its residual
    ``rhs``."""
    for t in range(3):
        norms[t], rhs_norms[t] = np.sqrt(squares[t]), np.sqrt(squares[3 + t])
        kept[t] = warm and norms[t] < rhs_norms[t]
        if not kept[t]:
            for j in range(rhs.shape[0]):
                residual[j, t] = rhs[j, t]
            norms[t] = rhs_norms[t]


@njit(**_SOLVE_OPTIONS)
def _start_refinement(rhs, previous_product, last_product, warm, residual, rhs_norms, norms, kept):
    """The residual of the start and the (3,) norms of rhs and of that residual; all arrays (n, 3).

    Warm, the start's product is ``2 last_product - previous_product`` (see :func:`_start_squares`); a
    lane whose start is worse than zero starts from zero (``kept[t]`` 0, its residual ``rhs``). Cold, every
    lane starts from zero (the products are not read)."""
    squares = np.empty(6)
    if warm:
        _start_squares(rhs, previous_product, last_product, residual, squares)
    else:
        _residual_squares(rhs, np.zeros_like(rhs), residual, squares)
    _finish_start(rhs, residual, squares, warm, rhs_norms, norms, kept)


@njit(**_SOLVE_OPTIONS)
def _scale_residual(residual, norms, work):
    """``work <- residual / norm`` per lane, in the factor's dtype (work (n, WIDTH), the lane past the
    three zero): no overflow, no underflow."""
    scale0 = 1.0 / norms[0] if norms[0] > 0.0 else 1.0
    scale1 = 1.0 / norms[1] if norms[1] > 0.0 else 1.0
    scale2 = 1.0 / norms[2] if norms[2] > 0.0 else 1.0
    for j in range(residual.shape[0]):
        work[j, 0] = residual[j, 0] * scale0
        work[j, 1] = residual[j, 1] * scale1
        work[j, 2] = residual[j, 2] * scale2
        work[j, 3] = 0.0  # the padding lane


@njit(**_SOLVE_OPTIONS)
def _apply_correction(work, norms, previous, last, kept, solution, matrix_indptr, matrix_indices,
                      matrix_values, matrix_diagonal, matrix_scale, rhs, product, residual):
    """``solution <- start + work * norm`` per lane and ``product <- A solution`` (see
    :func:`_correct_and_multiply`), then the new residual and norms."""
    _correct_and_multiply(work, norms, previous, last, kept, solution, matrix_indptr, matrix_indices,
                          matrix_values, matrix_diagonal, matrix_scale, product, 0, solution.shape[0])
    _residual_norms(rhs, product, residual, norms, np.empty(3))


#: Entries of an exact block (64 bytes each) read ahead of its forward sweep: 4 KB, as for the refined
#: sweeps' :data:`PREFETCH_AHEAD` entries of 16 bytes.
EXACT_PREFETCH_AHEAD = 64


@njit(**_SOLVE_OPTIONS)
def _solve_exact(indptr, indices, blocks, position, rhs, out, work, divisor, divide):
    """``out <- A^-1 rhs`` for the K = len(rhs) matrices of ``blocks`` (ceil(K / 8), nnz(L), 8), block by
    block: the right-hand sides of a block packed into one of the two ``work`` (2, n, 8) slots, in
    elimination order (pixel p at row ``position[p]``), its forward sweep, its backward sweep, then the
    solutions unpacked into ``out``. rhs, out (K, n) in pixel order, float32 or float64; ``divisor``
    divides rhs or out in their dtype as ``divide`` says (see :func:`solve`).

    The forward sweep of block b + 1 and the backward sweep of block b go column by column together: the
    first reads its block's factor from memory (after a classifier's pass), the second finds its own in
    cache (the forward sweep just read it), and the two interleaved keep the core computing while the
    memory delivers. Each block's arithmetic is that of a block alone, so the results are the same to
    the last bit."""
    n, stored, last = work.shape[1], blocks.shape[1], blocks.shape[0] - 1
    if last < 0:  # no matrices
        return
    _pack_block(rhs, divisor, divide, position, work[0], 0)
    ahead = 0
    for j in range(n):  # forward sweep of block 0: L y = b
        ahead = _prefetch_lines(blocks[0], ahead, min(indptr[j + 1] + EXACT_PREFETCH_AHEAD, stored), 1)
        exact_forward(work[0], blocks[0], indices, j, indptr[j], indptr[j + 1])
    for block in range(1, last + 1):
        following, current = work[block & 1], work[(block - 1) & 1]
        values, solved = blocks[block], blocks[block - 1]
        first = EXACT_LANES * block
        _pack_block(rhs, divisor, divide, position, following, first)
        ahead = 0
        for step in range(n):  # forward sweep of this block, backward sweep (L^T x = y) of the one before
            ahead = _prefetch_lines(values, ahead, min(indptr[step + 1] + EXACT_PREFETCH_AHEAD, stored), 1)
            exact_forward(following, values, indices, step, indptr[step], indptr[step + 1])
            j = n - 1 - step
            exact_backward(current, solved, indices, j, indptr[j], indptr[j + 1])
        _unpack_block(current, divisor, divide, position, out, first - EXACT_LANES)
    for j in range(n - 1, -1, -1):  # backward sweep of the last block
        exact_backward(work[last & 1], blocks[last], indices, j, indptr[j], indptr[j + 1])
    _unpack_block(work[last & 1], divisor, divide, position, out, EXACT_LANES * last)


@njit(inline="always")
def _pack_block(rhs, divisor, divide, position, work, first):
    """``work[position[p], t] <- rhs[first + t, p]`` (divided by the divisor's, when ``divide`` is
    :data:`DIVIDE_BEFORE`) for the lanes of a block that ``rhs`` has, zero in the others. Walks the pixels
    in order, so that rhs, out of cache after a classifier's pass, is read in order."""
    used = min(EXACT_LANES, rhs.shape[0] - first)
    for pixel in range(work.shape[0]):
        i = position[pixel]
        for t in range(used):
            if divide == DIVIDE_BEFORE:
                work[i, t] = rhs[first + t, pixel] / divisor[first + t, pixel]
            else:
                work[i, t] = rhs[first + t, pixel]
        for t in range(used, EXACT_LANES):
            work[i, t] = 0.0


@njit(inline="always")
def _unpack_block(work, divisor, divide, position, out, first):
    """``out[first + t, p] <- work[position[p], t]`` for the lanes of a block that ``out`` has, rounded to
    out's dtype and then divided in it by the divisor's when ``divide`` is :data:`DIVIDE_AFTER`."""
    used = min(EXACT_LANES, out.shape[0] - first)
    for pixel in range(work.shape[0]):
        i = position[pixel]
        for t in range(used):
            out[first + t, pixel] = work[i, t]
            if divide == DIVIDE_AFTER:
                out[first + t, pixel] = out[first + t, pixel] / divisor[first + t, pixel]


@njit(cache=True, nogil=True)
def _run_task(table, index):
    """Run task ``index`` of a task table (see :func:`_fill_task` and the kinds above)."""
    row = table[2 + index * team.TASK_WIDTH:2 + (index + 1) * team.TASK_WIDTH]
    kind = row[0]
    if kind == _TASK_FORWARD_PART:
        _run_part(row, False)
    elif kind == _TASK_BACKWARD_PART:
        _run_part(row, True)
    elif kind == _TASK_EXACT_FLOAT32:
        _run_exact(row, carray(team.pointer(row[_EXACT_RHS]), (row[3], row[1]), np.float32),
                   carray(team.pointer(row[_EXACT_OUT]), (row[3], row[1]), np.float32),
                   carray(team.pointer(row[_EXACT_DIVISOR]), (row[3], row[1]), np.float32))
    elif kind == _TASK_EXACT_FLOAT64:
        _run_exact(row, carray(team.pointer(row[_EXACT_RHS]), (row[3], row[1]), np.float64),
                   carray(team.pointer(row[_EXACT_OUT]), (row[3], row[1]), np.float64),
                   carray(team.pointer(row[_EXACT_DIVISOR]), (row[3], row[1]), np.float64))
    elif kind == _TASK_START:  # rows; rhs, previous and last products, residual, squares
        _start_squares(_lanes_at(row[2], row[1]), _lanes_at(row[3], row[1]), _lanes_at(row[4], row[1]),
                       _lanes_at(row[5], row[1]), carray(team.pointer(row[6]), (6,), np.float64))
    elif kind == _TASK_SCALE:  # rows; residual, norms, work
        _scale_residual(_lanes_at(row[2], row[1]), carray(team.pointer(row[3]), (3,), np.float64),
                        carray(team.pointer(row[4]), (row[1], WIDTH), np.float32))
    elif kind == _TASK_RESIDUAL:  # rows; rhs, product, residual, squares
        _residual_squares(_lanes_at(row[2], row[1]), _lanes_at(row[3], row[1]), _lanes_at(row[4], row[1]),
                          carray(team.pointer(row[5]), (6,), np.float64))
    elif kind == _TASK_CORRECT_COMPACT:
        _run_correction(row, carray(team.pointer(row[12]), (row[2], 3), np.float32))
    elif kind == _TASK_CORRECT_FLOAT64:
        _run_correction(row, carray(team.pointer(row[12]), (row[2], 3), np.float64))


@njit(cache=True, nogil=True)
def _lanes_at(address, rows):
    """The (rows, 3) float64 array at ``address``."""
    return carray(team.pointer(address), (rows, 3), np.float64)


@njit(cache=True, nogil=True)
def _run_correction(row, values):
    """:func:`_correct_and_multiply` over the columns of a part: sizes n, nnz(A), diagonal values; then work,
    norms, previous, last, kept, solution, the matrix's indptr, indices, (values, given), diagonal and
    scale (1,), the product; then the first and end columns."""
    n, entries = row[1], row[2]
    _correct_and_multiply(carray(team.pointer(row[4]), (n, WIDTH), np.float32),
                          carray(team.pointer(row[5]), (3,), np.float64), _lanes_at(row[6], n),
                          _lanes_at(row[7], n), carray(team.pointer(row[8]), (3,), np.uint8),
                          _lanes_at(row[9], n), carray(team.pointer(row[10]), (n + 1,), np.int64),
                          carray(team.pointer(row[11]), (entries,), np.int32), values,
                          carray(team.pointer(row[13]), (row[3],), np.float64),
                          carray(team.pointer(row[14]), (1,), np.float64)[0], _lanes_at(row[15], n),
                          row[16], row[17])


@njit(cache=True, nogil=True)
def _run_part(row, backward):
    """A part of a refined sweep: sizes n, stored entries, top; then indptr, indices, values, work and,
    forward, split and spill; then the part's first and end columns."""
    n, stored, top = row[1], row[2], row[3]
    indptr = carray(team.pointer(row[4]), (n + 1,), np.int64)
    indices = carray(team.pointer(row[5]), (stored,), np.int32)
    values = carray(team.pointer(row[6]), (stored, WIDTH), np.float32)
    work = carray(team.pointer(row[7]), (n, WIDTH), np.float32)
    if backward:
        _backward(indptr, indices, values, work, row[8], row[9])
    else:
        split = carray(team.pointer(row[8]), (top,), np.int64)
        spill = carray(team.pointer(row[9]), (n - top, WIDTH), np.float32)
        _forward_part(indptr, indices, values, work, row[10], row[11], split, top, spill)


@njit(cache=True, nogil=True)
def _run_exact(row, rhs, out, divisor):
    """An exact solve of a block of rows: sizes n, nnz(L), rows k, blocks; then rhs, position, work (2, n, 8),
    the factor's indptr, indices and blocks, out, divisor (rhs, out and divisor given, of their dtype); then
    the division mode and the block's byte offset in rhs, out and divisor."""
    n, stored, blocks = row[1], row[2], row[4]
    _solve_exact(carray(team.pointer(row[8]), (n + 1,), np.int64),
                 carray(team.pointer(row[9]), (stored,), np.int64),
                 carray(team.pointer(row[10]), (blocks, stored, EXACT_LANES), np.float64),
                 carray(team.pointer(row[6]), (n,), np.int64), rhs, out,
                 carray(team.pointer(row[7]), (2, n, EXACT_LANES), np.float64), divisor, row[_EXACT_DIVIDE])


@njit(cache=True, nogil=True)
def _place(table, rhs_address, out_address):
    """Write the addresses of each exact task's rows of rhs and out (and of rhs as the unread divisor when
    the task does not divide) from the block's byte offset (see :class:`ExactPlan`)."""
    for index in range(table[0]):
        row = table[2 + index * team.TASK_WIDTH:2 + (index + 1) * team.TASK_WIDTH]
        row[_EXACT_RHS] = rhs_address + row[_EXACT_OFFSET]
        row[_EXACT_OUT] = out_address + row[_EXACT_OFFSET]
        if row[_EXACT_DIVIDE] == DIVIDE_NONE:
            row[_EXACT_DIVISOR] = row[_EXACT_RHS]


@njit(cache=True, nogil=True)
def _run_tasks(table):
    """Run every task of ``table`` on this thread, in order."""
    for index in range(table[0]):
        _run_task(table, index)


def _claim_and_run(data):
    """The body of :func:`~smoothadv.smoothing.team.run`'s parallel region: claim tasks until none is left."""
    count = carray(data, (1,), np.int64)[0]
    table = carray(data, (2 + count * team.TASK_WIDTH,), np.int64)
    index = team.claim(table)
    while index < count:
        _run_task(table, index)
        index = team.claim(table)


def _team_worker() -> int:
    """Address of :func:`_claim_and_run` as a C callback, compiled (or loaded from Numba's cache) on first
    use rather than when the module is imported; the compiled callback is kept for the process."""
    return _compiled_team_worker().address


@functools.lru_cache(maxsize=1)
def _compiled_team_worker():
    return cfunc(types.void(types.voidptr), cache=True)(_claim_and_run)
