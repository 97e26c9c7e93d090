"""The batched grid Cholesky behind the direct solver (smoothadv.smoothing.cholesky)."""

from __future__ import annotations

import os
import time

import numba
import numpy as np
import pytest
import torch
from numba import njit

from smoothadv.core.errors import SmoothAdvError
from smoothadv.smoothing import Smoothing, build_graph, cholesky, solvers, team
from smoothadv.smoothing._vectors import (
    EXACT_WIDTH,
    WIDTH,
    exact_backward,
    exact_forward,
    gather_column,
    scatter_column,
)
from smoothadv.smoothing.graph import NEIGHBOUR_OFFSETS
from smoothadv.smoothing.solvers import _batched_matrix_values, assemble_dense, make_solver

NO_TEAM = "torch's OpenMP runtime not found, or SMOOTHADV_TORCH_TEAM=0"

SHAPES = [(1, 1), (1, 7), (6, 1), (5, 8), (13, 9), (28, 28)]


def _random_values(pattern, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``count`` random symmetric diagonally dominant matrices with the pattern; and the dense
    matrices in pixel order, (count, n, n)."""
    rng = np.random.default_rng(seed)
    source = pattern.matrix_source
    edges = int(source.max(initial=-1)) + 1
    weights = rng.uniform(0.0, 1.0, size=(count, max(edges, 1)))
    values = np.where(source[:, None] >= 0, -weights[:, np.maximum(source, 0)].T, 0.0)
    n = pattern.size
    dense = np.zeros((count, n, n))
    position_of = np.empty(n, np.int64)
    position_of[pattern.order] = np.arange(n)
    for column in range(n):  # the upper triangle, in elimination positions, back to pixel order
        for entry in range(pattern.matrix_indptr[column], pattern.matrix_indptr[column + 1]):
            row = pattern.matrix_indices[entry]
            i, j = pattern.order[row], pattern.order[column]
            dense[:, i, j] = dense[:, j, i] = values[entry]
    diagonal = np.abs(dense).sum(axis=2) + rng.uniform(0.1, 1.0, size=(count, n))
    dense[:, np.arange(n), np.arange(n)] = diagonal
    values[source < 0] = diagonal[:, pattern.order].T
    return values, dense


class TestPattern:
    @pytest.mark.parametrize("neighbourhood", (4, 8))
    @pytest.mark.parametrize("shape", SHAPES)
    def test_order_is_a_permutation_and_columns_start_at_the_diagonal(self, shape, neighbourhood):
        pattern = cholesky.grid_pattern(*shape, NEIGHBOUR_OFFSETS[neighbourhood])
        n = shape[0] * shape[1]
        assert sorted(pattern.order.tolist()) == list(range(n))
        # every column starts with its diagonal, rows ascending
        for j in range(n):
            rows = pattern.factor_indices[pattern.factor_indptr[j]:pattern.factor_indptr[j + 1]]
            assert rows[0] == j and np.all(np.diff(rows) > 0)

    def test_nested_dissection_is_a_permutation(self):
        order = cholesky.nested_dissection_order(17, 23)
        assert sorted(order.tolist()) == list(range(17 * 23))

    def test_fill_reducing_order_beats_the_natural_order(self):
        # the natural (row by row) order of a 28x28 grid fills the band: about 28 entries per column
        pattern = cholesky.grid_pattern(28, 28, NEIGHBOUR_OFFSETS[4])
        assert pattern.factor_nonzeros < 0.5 * 28 * 28 * 29

    @pytest.mark.parametrize("parts", (2, 3, 5))
    def test_parts_are_independent_subtrees_with_the_same_fill(self, parts):
        single = cholesky.grid_pattern(40, 36, NEIGHBOUR_OFFSETS[8])
        split = cholesky.grid_pattern(40, 36, NEIGHBOUR_OFFSETS[8], parts)
        assert split.parts == parts and single.parts == 1 and single.top == single.size
        assert sorted(split.order.tolist()) == list(range(single.size))
        assert split.factor_nonzeros == single.factor_nonzeros  # a reordering of the same tree
        bounds = split.part_bounds
        sizes = [split.factor_indptr[bounds[q + 1]] - split.factor_indptr[bounds[q]] for q in range(parts)]
        top = split.factor_nonzeros - split.factor_indptr[split.top]
        assert max(sizes) + top < 0.75 * split.factor_nonzeros  # a sweep on `parts` threads is faster
        columns = np.repeat(np.arange(split.size), np.diff(split.factor_indptr))
        for q in range(parts):  # a part's columns reach its own rows and the top only
            entries = slice(split.factor_indptr[bounds[q]], split.factor_indptr[bounds[q + 1]])
            rows = split.factor_indices[entries]
            assert np.all((rows >= split.top) | ((rows >= bounds[q]) & (rows < bounds[q + 1])))
            assert np.all(columns[entries] < bounds[q + 1])

    def test_cached_per_shape(self):
        first = cholesky.grid_pattern(9, 11, NEIGHBOUR_OFFSETS[4])
        assert cholesky.grid_pattern(9, 11, NEIGHBOUR_OFFSETS[4]) is first


class TestFactorAndSolve:
    @pytest.mark.parametrize("neighbourhood", (4, 8))
    @pytest.mark.parametrize("shape", SHAPES)
    def test_solve_matches_dense_solve(self, shape, neighbourhood):
        pattern = cholesky.grid_pattern(*shape, NEIGHBOUR_OFFSETS[neighbourhood])
        values, dense = _random_values(pattern, count=5, seed=sum(shape))
        factor = cholesky.ExactFactor(pattern, cholesky.factorize(pattern, values))
        rhs = np.random.default_rng(1).normal(size=(5, pattern.size))
        solved = cholesky.solve(factor, rhs)
        expected = np.linalg.solve(dense, rhs[..., None])[..., 0]
        np.testing.assert_allclose(solved, expected, rtol=1e-10, atol=1e-12)

    def test_factor_reproduces_the_permuted_matrix(self):
        pattern = cholesky.grid_pattern(6, 5, NEIGHBOUR_OFFSETS[8])
        values, dense = _random_values(pattern, count=2)
        factor = cholesky.factorize(pattern, values)
        n = pattern.size
        for k in range(2):
            lower = np.zeros((n, n))
            for j in range(n):
                span = slice(pattern.factor_indptr[j], pattern.factor_indptr[j + 1])
                lower[pattern.factor_indices[span], j] = factor[span, k]
                lower[j, j] = 1.0 / factor[span.start, k]  # factorize stores 1 / L_jj
            permuted = dense[k][np.ix_(pattern.order, pattern.order)]
            np.testing.assert_allclose(lower @ lower.T, permuted, rtol=1e-12, atol=1e-12)

    def test_graphs_are_independent(self):
        # solving a batch equals solving each matrix on its own
        pattern = cholesky.grid_pattern(7, 7, NEIGHBOUR_OFFSETS[4])
        values, _ = _random_values(pattern, count=4)
        rhs = np.random.default_rng(2).normal(size=(4, pattern.size))
        batched = cholesky.solve(_exact(pattern, values), rhs)
        for k in range(4):
            alone = cholesky.solve(_exact(pattern, values[:, k:k + 1]), rhs[k:k + 1])
            np.testing.assert_array_equal(alone[0], batched[k])

    @pytest.mark.parametrize("count", (1, 7, 8, 9, 17))
    def test_blocks_hold_the_factor_and_the_identity_past_it(self, count):
        # every count of matrices, whole blocks of lanes or not: the solutions are those of one matrix at
        # a time, the lanes past the last matrix hold the identity, and the values come back as they were
        pattern = cholesky.grid_pattern(6, 7, NEIGHBOUR_OFFSETS[4])
        values, dense = _random_values(pattern, count=count, seed=count)
        raw = cholesky.factorize(pattern, values)
        factor = cholesky.ExactFactor(pattern, raw)
        lanes = cholesky.EXACT_LANES
        assert factor.blocks.shape == (-(-count // lanes), pattern.factor_nonzeros, lanes)
        assert factor.blocks.ctypes.data % 64 == 0 and factor.work.ctypes.data % 64 == 0
        np.testing.assert_array_equal(factor.values(), raw)
        padding = factor.blocks.transpose(1, 0, 2).reshape(pattern.factor_nonzeros, -1)[:, count:]
        diagonal = np.zeros(pattern.factor_nonzeros, bool)
        diagonal[pattern.factor_indptr[:-1]] = True
        assert np.all(padding[diagonal] == 1.0) and np.all(padding[~diagonal] == 0.0)
        rhs = np.random.default_rng(count).normal(size=(count, pattern.size))
        solved = cholesky.solve(factor, rhs)
        np.testing.assert_allclose(solved, np.linalg.solve(dense, rhs[..., None])[..., 0], rtol=1e-10,
                                   atol=1e-12)
        alone = cholesky.solve(_exact(pattern, values[:, -1:]), rhs[-1:])
        np.testing.assert_array_equal(solved[-1], alone[0])

    def test_solve_rejects_a_divisor_of_another_shape_or_dtype(self):
        pattern = cholesky.grid_pattern(4, 4, NEIGHBOUR_OFFSETS[4])
        factor = _exact(pattern, _random_values(pattern, count=2)[0])
        rhs, out = np.ones((2, 16), np.float32), np.empty((2, 16), np.float32)
        for divisor, divide in ((np.ones((2, 15), np.float32), cholesky.DIVIDE_AFTER),
                                (np.ones((2, 16)), cholesky.DIVIDE_BEFORE), (None, cholesky.DIVIDE_AFTER),
                                (np.ones((2, 16), np.float32), 7)):
            with pytest.raises(ValueError, match="divisor"):
                cholesky.solve(factor, rhs, out, divisor=divisor, divide=divide)

    def test_repeated_factors_equal_factors_of_repeated_matrices(self):
        pattern = cholesky.grid_pattern(5, 6, NEIGHBOUR_OFFSETS[8])
        values, _ = _random_values(pattern, count=3, seed=4)
        repeated = _exact(pattern, values).repeated(3)
        assert repeated.count == 9
        np.testing.assert_array_equal(repeated.values(), cholesky.factorize(pattern, np.repeat(values, 3, 1)))

    def test_solve_rejects_wrong_shapes(self):
        pattern = cholesky.grid_pattern(4, 4, NEIGHBOUR_OFFSETS[4])
        factor = _exact(pattern, _random_values(pattern, count=2)[0])
        for rhs, out in ((np.zeros((3, 16)), None), (np.zeros((2, 15)), None), (np.zeros((2, 16)),
                                                                              np.zeros((2, 15)))):
            with pytest.raises(ValueError, match="shape"):
                cholesky.solve(factor, rhs, out)

    def test_solve_writes_into_out_in_its_dtype(self):
        pattern = cholesky.grid_pattern(8, 9, NEIGHBOUR_OFFSETS[8])
        values, _ = _random_values(pattern, count=3)
        factor = _exact(pattern, values)
        rhs = np.random.default_rng(3).normal(size=(3, pattern.size)).astype(np.float32)
        out = np.full(rhs.shape, np.nan, np.float32)
        returned = cholesky.solve(factor, rhs, out=out)
        assert returned is out
        np.testing.assert_array_equal(out, cholesky.solve(factor, rhs).astype(np.float32))

    def test_a_part_s_matrix_columns_touch_only_its_rows(self):
        # what lets the correction's product run in parts: in the upper triangle a column's rows are its
        # descendants in the elimination tree
        pattern = cholesky.grid_pattern(30, 34, NEIGHBOUR_OFFSETS[8], 3)
        bounds = pattern.part_bounds
        for q in range(pattern.parts):
            span = slice(pattern.matrix_indptr[bounds[q]], pattern.matrix_indptr[bounds[q + 1]])
            rows = pattern.matrix_indices[span]
            assert rows.min() >= bounds[q] and rows.max() < bounds[q + 1]

    @pytest.mark.parametrize("divide", (cholesky.DIVIDE_NONE, cholesky.DIVIDE_BEFORE, cholesky.DIVIDE_AFTER))
    @pytest.mark.parametrize("dtype", (np.float32, np.float64))
    def test_a_plan_solves_as_solve_does_run_after_run(self, dtype, divide):
        # consecutive blocks of rows, one factor each (the last of four blocks of lanes, so that the
        # interleaved sweeps reuse their two scratch slots), on torch's team where it is available, else
        # on this thread: the same values as solve, for new arrays at each run (the plan keeps only the
        # addresses' offsets)
        pattern = cholesky.grid_pattern(6, 7, NEIGHBOUR_OFFSETS[8])
        values, _ = _random_values(pattern, count=35, seed=5)
        spans = (slice(0, 8), slice(8, 9), slice(9, 35))
        factors = [_exact(pattern, values[:, span]) for span in spans]
        assert len(factors[-1].blocks) == 4
        rng = np.random.default_rng(6)
        divisor = (0.5 + rng.random((35, pattern.size))).astype(dtype)
        divisor = None if divide == cholesky.DIVIDE_NONE else divisor
        plan = cholesky.ExactPlan(factors, dtype, divisor, divide)
        whole = _exact(pattern, values)
        for _ in range(2):
            rhs = rng.normal(size=(35, pattern.size)).astype(dtype)
            out = np.full_like(rhs, np.nan)
            plan.run(rhs.ctypes.data, out.ctypes.data)
            expected = np.empty_like(rhs)
            cholesky.solve(whole, rhs, expected, divisor=divisor, divide=divide)
            np.testing.assert_array_equal(out, expected)

    def test_no_matrices_solve_to_nothing(self):
        # an empty batch (a joint graph given no channels) writes nothing, on its own or in a plan
        pattern = cholesky.grid_pattern(4, 5, NEIGHBOUR_OFFSETS[4])
        empty = _exact(pattern, _random_values(pattern, count=2)[0]).repeated(0)
        assert empty.count == 0 and empty.blocks.shape[0] == 0
        assert cholesky.solve(empty, np.zeros((0, 20))).shape == (0, 20)
        rhs, out = np.zeros((0, 20)), np.zeros((0, 20))
        cholesky.ExactPlan([empty], np.float64).run(rhs.ctypes.data, out.ctypes.data)

    def test_a_plan_rejects_other_dtypes_patterns_and_divisors(self):
        pattern = cholesky.grid_pattern(4, 4, NEIGHBOUR_OFFSETS[4])
        factors = [_exact(pattern, _random_values(pattern, count=2)[0])]
        with pytest.raises(TypeError, match="float32 or float64"):
            cholesky.ExactPlan(factors, np.float16)
        other = cholesky.grid_pattern(4, 4, NEIGHBOUR_OFFSETS[8])
        with pytest.raises(ValueError, match="one pattern"):
            cholesky.ExactPlan([*factors, _exact(other, _random_values(other, count=1)[0])], np.float64)
        for divisor, divide in ((None, cholesky.DIVIDE_AFTER), (np.ones((2, 16)), cholesky.DIVIDE_NONE),
                                (np.ones((2, 15)), cholesky.DIVIDE_BEFORE),
                                (np.ones((2, 16), np.float32), cholesky.DIVIDE_BEFORE),
                                (np.ones((16, 2)).T, cholesky.DIVIDE_BEFORE), (np.ones((2, 16)), 7)):
            with pytest.raises(ValueError, match="divisor"):
                cholesky.ExactPlan(factors, np.float64, divisor, divide)

    def test_not_positive_definite_raises(self):
        pattern = cholesky.grid_pattern(3, 3, NEIGHBOUR_OFFSETS[4])
        values, _ = _random_values(pattern, count=2)
        values[pattern.matrix_source < 0, 1] = -1.0  # negative diagonal in the second matrix
        with pytest.raises(SmoothAdvError, match="not positive definite"):
            cholesky.factorize(pattern, values)


def _exact(pattern, values: np.ndarray) -> cholesky.ExactFactor:
    """The exact factors of matrices with these (nnz(A), K) values."""
    return cholesky.ExactFactor(pattern, cholesky.factorize(pattern, values))


def _relative_residuals(dense: np.ndarray, solution: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """(K,) ``||A x - b|| / ||b||`` per system, from dense (K, n, n) matrices."""
    residual = np.einsum("kij,kj->ki", dense, solution) - rhs
    return np.linalg.norm(residual, axis=1) / np.linalg.norm(rhs, axis=1)


class TestRefinedSolve:
    """The float32 factor refined in float64 (LaneFactor): the residual it reports is the true one and
    meets tol, from zero and from a previous solution."""

    def _factor(self, count=5, shape=(13, 9), seed=0):
        pattern = cholesky.grid_pattern(*shape, NEIGHBOUR_OFFSETS[4])
        values, dense = _random_values(pattern, count=count, seed=seed)
        return cholesky.LaneFactor(pattern, values), dense

    def _solve(self, factor, rhs, start=None, tol=1e-6):
        packed = factor.pack(rhs)
        solution, product = np.empty_like(packed), np.empty_like(packed)
        results = [factor.solve_group(g, packed[g], solution[g], product[g], tol=tol, max_passes=8,
                                      start=None if start is None else (start[0][g], start[0][g], start[1][g],
                                                                        start[1][g]))
                   for g in range(factor.groups)]
        reported = np.concatenate([relative for _, relative in results])[:factor.count]
        return factor.unpack(solution), reported, [passes for passes, _ in results], (solution, product)

    @pytest.mark.parametrize("tol", (1e-6, 1e-12))
    def test_reported_residual_is_true_and_meets_tol(self, tol):
        factor, dense = self._factor()
        rhs = np.random.default_rng(3).normal(size=(5, factor.pattern.size))
        solution, reported, _, _ = self._solve(factor, rhs, tol=tol)
        true = _relative_residuals(dense, solution, rhs)
        np.testing.assert_allclose(reported, true, rtol=1e-3, atol=1e-15)
        assert true.max() <= tol

    def test_adversarial_right_hand_side_of_an_ill_conditioned_laplacian(self):
        # alpha 0.997 (condition number about 666) and the first step of an Adam attack: a sign pattern,
        # all frequencies at once, with one pixel a thousand times larger; a graph above EXACT_MAX_PIXELS
        guide = torch.rand(1, 3, 72, 72, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        graph = build_graph(guide, kernel="gaussian", sigma=(1 / 600) ** 0.5)
        solver = make_solver("direct", graph, 0.997, tol=1e-6)
        assert solver.refined
        signs = torch.sign(torch.randn(guide.shape, generator=torch.Generator().manual_seed(2)))
        signs = signs.to(torch.float64) * 0.01
        signs[0, 1, 5, 7] = 10.0
        step = 0.001 * torch.roll(signs, 1, dims=-1)
        # cold; warm from the last solution; extrapolated from the last two; a start worse than zero
        for rhs in (signs, signs + step, signs + 2 * step, -signs):
            solution = solver.solve(rhs, sequence="forward")
            residual = (solver.matvec(solution) - rhs).flatten(2)  # matrix-free product, float64
            true = float((residual.norm(dim=2) / rhs.flatten(2).norm(dim=2)).max())
            assert true <= 1e-6
            assert solver.last_residual == pytest.approx(true, rel=1e-3)

    def test_warm_start_needs_fewer_corrections_and_keeps_tol(self):
        factor, dense = self._factor()
        rng = np.random.default_rng(4)
        rhs = rng.normal(size=(5, factor.pattern.size))
        _, _, cold_passes, state = self._solve(factor, rhs, tol=1e-9)
        assert max(cold_passes) >= 2  # a float32 factor alone does not reach 1e-9 from zero
        close = rhs + 1e-3 * rng.normal(size=rhs.shape)
        solution, reported, warm_passes, _ = self._solve(factor, close, start=state, tol=1e-9)
        assert max(warm_passes) == 1
        assert _relative_residuals(dense, solution, close).max() <= 1e-9
        np.testing.assert_allclose(reported, _relative_residuals(dense, solution, close), rtol=1e-3)

    def test_a_start_that_meets_tol_is_the_solution(self):
        # right-hand sides on a line: the extrapolation of the last two solutions solves the third (to
        # rounding), so no correction is made and the start itself, with its product, is returned
        factor, dense = self._factor()
        rng = np.random.default_rng(7)
        first = rng.normal(size=(5, factor.pattern.size))
        step = 1e-3 * rng.normal(size=first.shape)
        _, _, _, (x0, p0) = self._solve(factor, first, tol=1e-12)
        _, _, _, (x1, p1) = self._solve(factor, first + step, start=(x0, p0), tol=1e-12)
        packed = factor.pack(first + 2 * step)
        solution, product = np.full_like(packed, np.nan), np.full_like(packed, np.nan)
        start = (x0[0], x1[0], p0[0], p1[0])
        passes, relative = factor.solve_group(0, packed[0], solution[0], product[0], start=start, tol=1e-6,
                                              max_passes=8)
        assert passes == 0
        np.testing.assert_array_equal(solution[0], 2 * x1[0] - x0[0])
        np.testing.assert_array_equal(product[0], 2 * p1[0] - p0[0])
        unpacked = factor.unpack(solution)[:3]
        true = _relative_residuals(dense[:3], unpacked, first[:3] + 2 * step[:3])
        np.testing.assert_allclose(relative, true, rtol=1e-3, atol=1e-15)

    def test_a_start_worse_than_zero_is_dropped(self):
        factor, dense = self._factor()
        rng = np.random.default_rng(5)
        rhs = rng.normal(size=(5, factor.pattern.size))
        _, _, _, state = self._solve(factor, rhs)
        solution, _, _, _ = self._solve(factor, -rhs, start=state)  # the old solution is far off
        assert _relative_residuals(dense, solution, -rhs).max() <= 1e-6

    def test_zero_right_hand_side_gives_zero(self):
        factor, _ = self._factor(count=2)
        solution, reported, _, _ = self._solve(factor, np.zeros((2, factor.pattern.size)))
        assert not solution.any() and not reported.any()

    @pytest.mark.parametrize(("dtype", "compact"), [(torch.float32, True), (torch.float64, False)])
    def test_matrices_are_kept_as_float32_weights_only_where_exact(self, dtype, compact):
        # a float32 guide has float32 weights: A = c w off the diagonal, exactly; a float64 guide does not
        guide = torch.rand(1, 3, 24, 26, generator=torch.Generator().manual_seed(17), dtype=dtype)
        graph = build_graph(guide, kernel="gaussian", sigma=0.05)
        pattern = cholesky.grid_pattern(24, 26, tuple(graph.offsets))
        values = _batched_matrix_values(graph, pattern, 0.997)
        plain = cholesky.LaneFactor(pattern, values)
        given = cholesky.LaneFactor(pattern, values, off_diagonal_scale=solvers._off_diagonal_scale(0.997))
        assert plain.matrix_values.dtype == np.float64
        assert (given.matrix_values.dtype == np.float32) == compact
        rhs = np.random.default_rng(18).normal(size=(3, pattern.size))
        # the same products to the last bit, so the same refinement
        np.testing.assert_array_equal(self._solve(given, rhs, tol=1e-12)[0],
                                      self._solve(plain, rhs, tol=1e-12)[0])

    def test_random_matrices_stay_float64_whatever_the_scale(self):
        pattern = cholesky.grid_pattern(13, 9, NEIGHBOUR_OFFSETS[4])
        values, _ = _random_values(pattern, count=3)
        again = cholesky.LaneFactor(pattern, values, off_diagonal_scale=-2.0)
        assert again.matrix_values.dtype == np.float64 and again.matrix_diagonals.shape == (1, 0)

    def test_only_entries_below_float32_resolution_are_dropped(self):
        # the ImageNet preset's graph at 48x48 (a noise guide: much of the fill is far below L_jj)
        guide = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        graph = build_graph(guide, kernel="gaussian", sigma=(1 / 600) ** 0.5)
        pattern = cholesky.grid_pattern(48, 48, tuple(graph.offsets))
        values = _batched_matrix_values(graph, pattern, 0.997)
        factor = cholesky.LaneFactor(pattern, values)
        exact = cholesky.factorize(pattern, values)  # (nnz(L), 3) float64, 1 / L_jj on the diagonal
        columns = np.repeat(np.arange(pattern.size), np.diff(pattern.factor_indptr))
        ratio = (np.abs(exact) * exact[pattern.factor_indptr[:-1]][columns]).max(axis=1)
        stored = np.zeros(pattern.factor_nonzeros, bool)
        for j in range(pattern.size):  # map each stored entry back to its place in the full pattern
            full = pattern.factor_indices[pattern.factor_indptr[j]:pattern.factor_indptr[j + 1]]
            kept = factor.factor_indices[0][factor.factor_indptr[0][j]:factor.factor_indptr[0][j + 1]]
            assert kept[0] == j  # the diagonal stays first
            stored[pattern.factor_indptr[j] + np.searchsorted(full, kept)] = True
        np.testing.assert_array_equal(stored, ratio >= cholesky.DROP_BELOW)
        assert pattern.size < factor.stored_nonzeros < pattern.factor_nonzeros
        rhs = torch.randn(guide.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
        packed = factor.pack(rhs.reshape(3, -1).numpy())
        solution, product = np.empty_like(packed), np.empty_like(packed)
        passes, relative = factor.solve_group(0, packed[0], solution[0], product[0], start=None, tol=1e-12,
                                              max_passes=8)
        assert relative.max() <= 1e-12 and passes <= 3  # still about six digits a correction

    @pytest.mark.parametrize("parts", (2, 3))
    def test_sweeps_in_parts_agree_with_one_sweep(self, parts):
        one = cholesky.grid_pattern(30, 34, NEIGHBOUR_OFFSETS[4])
        split = cholesky.grid_pattern(30, 34, NEIGHBOUR_OFFSETS[4], parts)
        rhs = np.random.default_rng(9).normal(size=(3, one.size))
        solutions = []
        for pattern in (one, split):
            values, dense = _random_values(pattern, count=3, seed=10)
            factor = cholesky.LaneFactor(pattern, values)
            solution, reported, _, _ = self._solve(factor, rhs, tol=1e-12)
            np.testing.assert_allclose(reported, _relative_residuals(dense, solution, rhs), rtol=1e-3)
            assert reported.max() <= 1e-12
            solutions.append(solution)
        np.testing.assert_allclose(solutions[1], solutions[0], rtol=1e-9, atol=1e-12)

    def test_unused_lanes_do_not_change_the_solution(self):
        factor, _ = self._factor(count=4)  # two groups, the second with one system and two idle lanes
        rhs = np.random.default_rng(6).normal(size=(4, factor.pattern.size))
        together, _, _, _ = self._solve(factor, rhs)
        single = cholesky.LaneFactor(factor.pattern, factor.matrix_values[1][:, :1])
        alone, _, _, _ = self._solve(single, rhs[3:4])
        np.testing.assert_allclose(alone[0], together[3], rtol=1e-5, atol=1e-9)


class TestDirectSolverPaths:
    @pytest.mark.parametrize("channels", ("per_channel", "joint"))
    def test_batched_and_superlu_paths_agree(self, channels):
        guide = torch.rand(3, 3, 9, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        z = torch.randn(guide.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        config = Smoothing(alpha=0.97, channels=channels, solver="direct", cg_tol=1e-13)
        batched = config.prepare(guide)
        assert batched.solver.batched and batched.solver.name == "cholesky"
        superlu = config.with_options(solver="superlu").prepare(guide)
        assert not superlu.solver.batched
        torch.testing.assert_close(batched(z), superlu(z), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(batched.adjoint(z), superlu.adjoint(z), rtol=1e-12, atol=1e-12)

    def test_batched_solve_inverts_the_assembled_laplacian(self):
        guide = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        graph = build_graph(guide, neighbourhood=8, kernel="gaussian", sigma=0.05)
        solver = make_solver("direct", graph, 0.997)
        assert solver.name == "cholesky"
        rhs = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
        matrix = assemble_dense(graph, 0.997)[:, 0]  # (B, n, n)
        residual = (matrix @ solver.solve(rhs).reshape(2, -1, 1) - rhs.reshape(2, -1, 1)).squeeze(-1)
        assert float((residual.norm(dim=1) / rhs.reshape(2, -1).norm(dim=1)).max()) <= 1e-6

    @pytest.mark.parametrize(("variable", "value", "yields"), [
        (None, None, False), ("OMP_WAIT_POLICY", "PASSIVE", True), ("OMP_WAIT_POLICY", "active", False),
        ("GOMP_SPINCOUNT", "10000", True), ("GOMP_SPINCOUNT", "300000", False),
        ("GOMP_SPINCOUNT", "x", False),
        ("KMP_BLOCKTIME", "0", True), ("KMP_BLOCKTIME", "200", False),
    ])
    def test_without_torchs_team_parts_only_when_openmp_workers_yield(self, monkeypatch, variable, value,
                                                                      yields):
        monkeypatch.setattr(team, "available", lambda: False)
        self._check_parts(monkeypatch, variable, value, 2 if yields else 1)

    @pytest.mark.skipif(not team.available(), reason=NO_TEAM)
    @pytest.mark.parametrize(("variable", "value"), [(None, None), ("GOMP_SPINCOUNT", "300000")])
    def test_on_torchs_team_sweeps_always_run_in_parts(self, monkeypatch, variable, value):
        self._check_parts(monkeypatch, variable, value, 2)

    @pytest.mark.skipif(not team.available(), reason=NO_TEAM)
    def test_on_torchs_team_groups_go_one_after_another_each_in_parts(self, monkeypatch):
        # two groups of three graphs at four threads: four parts each, the groups on this thread (a thread of
        # a pool would open a team of new threads)
        guide = torch.rand(2, 3, 72, 72, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
        z = torch.randn(guide.shape, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
        pooled = []
        thread_map = solvers._thread_map
        monkeypatch.setattr(solvers, "_thread_map", lambda function, items: pooled.append(len(items)) or
                            thread_map(function, items))
        previous = torch.get_num_threads()
        try:
            torch.set_num_threads(4)
            smoother = Smoothing(alpha=0.997, solver="direct").prepare(guide)
            smoothed = smoother.smooth(z, normalize=False)
        finally:
            torch.set_num_threads(previous)
        assert smoother.solver.factors(1).pattern.parts == 4 and smoother.solver.factors(1).groups == 2
        assert pooled == []
        residual = (smoother.matvec(smoothed) - z).flatten(2).norm(dim=2)
        assert float((residual / z.flatten(2).norm(dim=2)).max()) <= 1e-6

    @staticmethod
    def _check_parts(monkeypatch, variable, value, parts):
        for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
            monkeypatch.delenv(name, raising=False)
        if variable is not None:
            monkeypatch.setenv(variable, value)
        guide = torch.rand(1, 3, 72, 72, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        z = torch.randn(guide.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
        previous = torch.get_num_threads()
        try:
            torch.set_num_threads(2)
            smoother = Smoothing(alpha=0.997, solver="direct").prepare(guide)  # one group of three graphs
            out = smoother(z)
        finally:
            torch.set_num_threads(previous)
        assert smoother.solver.refined
        assert smoother.solver.factors(1).pattern.parts == parts
        residual = (smoother.matvec(smoother.smooth(z, normalize=False)) - z).flatten(2).norm(dim=2)
        assert float((residual / z.flatten(2).norm(dim=2)).max()) <= 1e-6
        assert torch.isfinite(out).all()


@pytest.mark.skipif(not team.available(), reason=NO_TEAM)
class TestTorchTeam:
    """Kernels run on torch's OpenMP threads give the results of the same kernels run one after another."""

    def test_the_runtime_found_is_the_one_torch_runs_on(self):
        # torch.set_num_threads sets this thread's team size in torch's runtime; another one would not see it
        previous = torch.get_num_threads()
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                assert team._runtime().omp_get_max_threads() == threads
        finally:
            torch.set_num_threads(previous)

    def test_environment_switch_turns_it_off(self, monkeypatch):
        monkeypatch.setenv("SMOOTHADV_TORCH_TEAM", "0")
        team._runtime.cache_clear()
        try:
            assert not team.available()
        finally:
            monkeypatch.delenv("SMOOTHADV_TORCH_TEAM")
            team._runtime.cache_clear()
        assert team.available()

    @pytest.mark.parametrize("dtype", (np.float32, np.float64))
    def test_exact_blocks_equal_the_serial_solve(self, dtype):
        pattern = cholesky.grid_pattern(11, 13, NEIGHBOUR_OFFSETS[8])
        values, _ = _random_values(pattern, count=17, seed=9)
        blocks = [_exact(pattern, values[:, span]) for span in (slice(0, 3), slice(3, 4), slice(4, 17))]
        rhs = np.random.default_rng(10).normal(size=(17, pattern.size)).astype(dtype)
        out = np.full_like(rhs, np.nan)
        previous = torch.get_num_threads()
        try:
            torch.set_num_threads(2)
            cholesky.solve_blocks(blocks, rhs, out)
        finally:
            torch.set_num_threads(previous)
        expected = cholesky.solve(_exact(pattern, values), rhs).astype(dtype)
        np.testing.assert_array_equal(out, expected)

    def test_exact_blocks_reject_mixed_dtypes_and_wrong_shapes(self):
        pattern = cholesky.grid_pattern(4, 4, NEIGHBOUR_OFFSETS[4])
        values, _ = _random_values(pattern, count=2)
        factors = [_exact(pattern, values)]
        with pytest.raises(TypeError, match="one dtype"):
            cholesky.solve_blocks(factors, np.zeros((2, 16), np.float32), np.zeros((2, 16)))
        for rhs, out in ((np.zeros((3, 16)), np.zeros((3, 16))), (np.zeros((2, 16)), np.zeros((1, 16))),
                         (np.zeros((2, 15)), np.zeros((2, 15)))):
            with pytest.raises(ValueError, match="shape"):
                cholesky.solve_blocks(factors, rhs, out)
        other = cholesky.grid_pattern(4, 4, NEIGHBOUR_OFFSETS[8])
        with pytest.raises(ValueError, match="one pattern"):
            cholesky.solve_blocks([*factors, _exact(other, _random_values(other, count=1)[0])],
                                  np.zeros((3, 16)), np.zeros((3, 16)))

    @pytest.mark.parametrize("parts", (2, 3))
    def test_sweeps_in_parts_equal_the_sweeps_on_this_thread(self, monkeypatch, parts):
        pattern = cholesky.grid_pattern(24, 26, NEIGHBOUR_OFFSETS[8], parts)
        values, _ = _random_values(pattern, count=3, seed=11)
        factor = cholesky.LaneFactor(pattern, values)
        work = np.zeros((pattern.size, cholesky.WIDTH), np.float32)
        work[:, :3] = np.random.default_rng(12).normal(size=(pattern.size, 3))
        arguments = (factor.factor_indptr[0], factor.factor_indices[0], factor.factor_values[0],
                     factor.splits[0])
        on_team = work.copy()
        factor._sweeps(*arguments, on_team)
        monkeypatch.setattr(team, "available", lambda: False)
        here = work.copy()
        factor._sweeps(*arguments, here)
        np.testing.assert_array_equal(on_team, here)

    @pytest.mark.parametrize("compact", (True, False))
    def test_refinement_in_parts_on_the_team_agrees_with_one_thread(self, monkeypatch, compact):
        # start, scaling, correction and residual in parts (sums of squares added over the parts): the same
        # corrections and the same solutions to far below tol (the norms differ in their last bits)
        guide = torch.rand(1, 3, 30, 34, generator=torch.Generator().manual_seed(19),
                           dtype=torch.float32 if compact else torch.float64)
        graph = build_graph(guide, kernel="gaussian", sigma=0.05)
        pattern = cholesky.grid_pattern(30, 34, tuple(graph.offsets), 2)
        values = _batched_matrix_values(graph, pattern, 0.997)
        factor = cholesky.LaneFactor(pattern, values, off_diagonal_scale=solvers._off_diagonal_scale(0.997))
        assert (factor.matrix_values.dtype == np.float32) == compact
        rng = np.random.default_rng(20)
        first = factor.pack(rng.normal(size=(3, pattern.size)))
        step = factor.pack(1e-2 * rng.normal(size=(3, pattern.size)))

        flipped = first[0] + 4 * step[0]
        flipped[:, 0] *= -1.0  # channel 0's start is then worse than zero: dropped
        right_sides = [first[0] + k * step[0] for k in range(4)] + [flipped, flipped]
        tols = [1e-10] * 5 + [1.0]  # the last start meets tol: no correction

        def sequence():
            solutions, passes = [], []
            history = []
            for rhs, tol in zip(right_sides, tols, strict=True):  # cold, warm from the last, extrapolated
                solution, product = np.empty_like(first), np.empty_like(first)
                start = None if not history else (history[0][0][0], history[-1][0][0], history[0][1][0],
                                                  history[-1][1][0])
                used, relative = factor.solve_group(0, rhs, solution[0], product[0], start=start, tol=tol,
                                                    max_passes=8)
                history = [*history[-1:], (solution, product)]
                solutions.append(solution.copy())
                passes.append(used)
                assert relative.max() <= tol
            return solutions, passes

        previous = torch.get_num_threads()
        try:
            torch.set_num_threads(2)
            on_team = sequence()
            monkeypatch.setattr(team, "available", lambda: False)
            alone = sequence()
        finally:
            torch.set_num_threads(previous)
        assert on_team[1] == alone[1] and on_team[1][-1] == 0
        for a, b in zip(on_team[0], alone[0], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
    def test_a_forked_child_solves_without_the_team(self):
        # a child forked after the parent's team ran (multiprocessing's default start on Linux) must not hang:
        # GNU libgomp's pool is gone there, so the child solves on its own thread, to the same results
        guide = torch.rand(1, 3, 72, 72, generator=torch.Generator().manual_seed(13))
        z = torch.randn(guide.shape, generator=torch.Generator().manual_seed(14))
        other = torch.randn(guide.shape, generator=torch.Generator().manual_seed(15))
        previous = torch.get_num_threads()
        try:
            torch.set_num_threads(2)
            smoother = Smoothing(alpha=0.997, solver="direct").prepare(guide)
            expected = smoother(z)
            cold = smoother.solver.solve(other)  # no sequence: a cold solve, corrections on the team
            assert smoother.solver.factors(1).pattern.parts == 2 and smoother.solver.last_passes >= 1
            status = _exit_status_of_forked_child(lambda: (
                not team.available()
                and torch.allclose(smoother.solver.solve(other), cold, rtol=1e-6, atol=1e-7)
                and torch.allclose(smoother(z), expected, rtol=1e-6, atol=1e-7)))
        finally:
            torch.set_num_threads(previous)
        assert status == 0

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
    def test_a_forked_child_solves_exactly_without_the_team(self, monkeypatch):
        # the exact solves the parent ran on the team (a plan of two blocks of rows) run in the child
        # without it (through NumPy, on threads of its own), to the same values; a plan run directly there
        # runs its blocks one after the other
        from smoothadv.smoothing import solvers

        if not team.available():
            pytest.skip("torch's OpenMP runtime not found, or SMOOTHADV_TORCH_TEAM=0")
        monkeypatch.setattr(solvers, "MIN_VALUES_PER_TEAM_THREAD", 1)
        guide = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(16))
        z = torch.randn(guide.shape, generator=torch.Generator().manual_seed(17))
        previous = torch.get_num_threads()
        try:
            torch.set_num_threads(2)
            smoother = Smoothing(solver="direct").prepare(guide)
            assert len(smoother.solver.spans) == 2
            expected = smoother(z)
            # the plan of the DC gain's solve (no division), float32 like the guide
            plan = next(plan for (_, _, divide), (_, plan) in smoother.solver._plans.items()
                        if divide == cholesky.DIVIDE_NONE)
            rhs = np.random.default_rng(18).normal(size=(16, 144)).astype(np.float32)
            out, alone = np.zeros_like(rhs), np.zeros_like(rhs)
            values = np.concatenate([factor.values() for factor in plan.factors], axis=1)
            cholesky.solve(cholesky.ExactFactor(plan.factors[0].pattern, values), rhs, alone)
            status = _exit_status_of_forked_child(lambda: (
                not team.available() and torch.equal(smoother(z), expected)
                and (plan.run(rhs.ctypes.data, out.ctypes.data) or np.array_equal(out, alone))))
        finally:
            torch.set_num_threads(previous)
        assert status == 0


def _exit_status_of_forked_child(check) -> int:
    """Fork; the child exits 0 when ``check()`` is true, 1 otherwise; the parent waits up to 60 s (then
    kills it and fails the test) and returns the child's exit code."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if check() else 1)
        finally:
            os._exit(2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung")


@njit
def _scatter(target, offset, values, indices, start, end, x):
    scatter_column(target, offset, values, indices, start, end, x[0], x[1], x[2], x[3])


@njit
def _gather(work, values, indices, start, end):
    return gather_column(work, values, indices, start, end)


@njit
def _exact_columns(work, values, indices, column, start, end, backward):
    if backward:
        exact_backward(work, values, indices, column, start, end)
    else:
        exact_forward(work, values, indices, column, start, end)


class TestVectorColumns:
    """The column kernels of the sweeps against NumPy, for every length (odd, even, empty)."""

    @pytest.mark.parametrize("index_dtype", (np.int32, np.int64))
    @pytest.mark.parametrize("count", (0, 1, 2, 5, 8))
    def test_exact_columns_agree_with_numpy(self, count, index_dtype):
        rng = np.random.default_rng(count)
        work = rng.normal(size=(12, EXACT_WIDTH))
        values = rng.normal(size=(count + 3, EXACT_WIDTH))
        indices = rng.integers(4, 12, size=count + 3).astype(index_dtype)
        column, start, end = 2, 1, 2 + count  # the diagonal entry at start, the column's rows after it
        if count:  # a forward column reaches distinct rows (the sum of repeated ones is not tested here)
            indices[start + 1:end] = rng.permutation(np.arange(4, 12))[:count]
        expected = work.copy()
        expected[column] *= values[start]
        for p in range(start + 1, end):
            expected[indices[p]] -= values[p] * expected[column]
        forward = work.copy()
        _exact_columns(forward, values, indices, column, start, end, False)
        np.testing.assert_allclose(forward, expected, rtol=1e-14, atol=1e-14)
        total = (values[start + 1:end] * work[indices[start + 1:end]]).sum(axis=0)
        expected = work.copy()
        expected[column] = (work[column] - total) * values[start]
        backward = work.copy()
        _exact_columns(backward, values, indices, column, start, end, True)
        np.testing.assert_allclose(backward, expected, rtol=1e-13, atol=1e-14)

    def test_exact_columns_refuse_float32(self):
        with pytest.raises(numba.TypingError):
            _exact_columns(np.zeros((3, EXACT_WIDTH), np.float32), np.zeros((3, EXACT_WIDTH)),
                           np.zeros(3, np.int64), 0, 0, 1, False)

    @pytest.mark.parametrize("count", (0, 1, 2, 5, 8))
    def test_scatter_and_gather_agree_with_numpy(self, count):
        rng = np.random.default_rng(count)
        work = rng.normal(size=(12, WIDTH)).astype(np.float32)
        values = rng.normal(size=(count + 3, WIDTH)).astype(np.float32)
        indices = rng.integers(4, 12, size=count + 3).astype(np.int32)
        x = rng.normal(size=WIDTH).astype(np.float32)
        start, end = 2, 2 + count
        expected = work.copy()
        for p in range(start, end):
            expected[indices[p] - 4] -= values[p] * x
        scattered = work.copy()
        _scatter(scattered, 4, values, indices, start, end, x)
        np.testing.assert_allclose(scattered, expected, rtol=1e-6, atol=1e-6)
        total = (values[start:end] * work[indices[start:end]]).sum(axis=0)
        np.testing.assert_allclose(_gather(work, values, indices, start, end), total, rtol=1e-5, atol=1e-6)

    def test_other_dtypes_are_refused_at_compile_time(self):
        work = np.zeros((3, WIDTH))  # float64
        with pytest.raises(numba.TypingError):
            _gather(work, np.zeros((3, WIDTH), np.float32), np.zeros(3, np.int32), 0, 3)
