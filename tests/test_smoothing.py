"""Tests of the guided Laplacian smoothing (paper section 3, eqs. 5-9) and of its backward pass (eq. 19).

The reference used throughout is built here from the paper's definitions only, independently of
``smoothadv.smoothing``: the weights of eq. (5) by brute force over all pixel pairs, the regularised
Laplacian of section 3.3 as a dense matrix, and the objective ``phi_alpha`` of eq. (6) summed term by term.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from devices import DEVICES
from smoothadv.core.errors import (
    ConfigError,
    ConvergenceWarning,
    InputError,
    NonFiniteError,
    RangeError,
    ShapeError,
    SmoothAdvError,
)
from smoothadv.smoothing import GuidedSmoother, Smoothing, build_graph, choose_solver, smooth
from smoothadv.smoothing.solvers import (
    assemble_dense,
    assemble_sparse,
    chebyshev_bound,
    chebyshev_iterations,
)

SOLVERS = ("dense", "direct", "cholesky", "superlu", "cg", "chebyshev")
ITERATIVE = ("cg", "chebyshev")
#: The solvers refined to ``cg_tol`` (a float32 factor): exact to rounding only with a tight tol.
REFINED = ("direct", "cholesky")
#: CG settings under which it must match the exact solvers to 1e-6 in float64.
TIGHT_CG = {"cg_tol": 1e-12, "cg_maxiter": 2000}
#: Refinement settings under which the Cholesky is exact to rounding in float64.
TIGHT_REFINEMENT = {"cg_tol": 1e-13}


def _options(solver: str, **extra) -> dict:
    options = {"solver": solver, **extra}
    if solver in ITERATIVE:
        options = {**TIGHT_CG, **options}
    elif solver in REFINED:
        options = {**TIGHT_REFINEMENT, **options}
    return options


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _random_guide(shape, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _random_signal(shape, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------------------------------------------
# Reference implementation of the paper's definitions (brute force, dense, tiny images only)
# ---------------------------------------------------------------------------------------------------------


def reference_weights(guide, *, neighbourhood=4, kernel="laplacian", sigma=0.1, channels="per_channel"):
    """Adjacency W of eq. (5) over all pixel pairs: (B, G, n, n), G = C (per channel) or 1 (joint)."""
    batch, num_channels, height, width = guide.shape
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = (ys[:, None] - ys[None, :]).abs()
    dx = (xs[:, None] - xs[None, :]).abs()
    # k_s = 1 on the neighbourhood, 0 elsewhere and on the diagonal (eq. 5: w_ii = 0)
    spatial = (dy + dx) == 1 if neighbourhood == 4 else torch.maximum(dy, dx) == 1
    features = guide.reshape(batch, num_channels, height * width).to(torch.float64)
    diff = features[:, :, :, None] - features[:, :, None, :]  # (B, C, n, n)
    distance = diff.pow(2).sum(dim=1, keepdim=True).sqrt() if channels == "joint" else diff.abs()
    if kernel == "gaussian":
        k_f = torch.exp(-distance.pow(2) / (2 * sigma**2))
    else:
        k_f = torch.exp(-distance / sigma)
    return k_f * spatial.to(torch.float64)


def reference_laplacian(weights: torch.Tensor, alpha: float) -> torch.Tensor:
    """L_alpha = (I - alpha D^{-1/2} W D^{-1/2}) / (1 - alpha) (section 3.3): (B, G, n, n)."""
    inv_sqrt = weights.sum(-1).rsqrt()
    normalized = inv_sqrt[..., :, None] * weights * inv_sqrt[..., None, :]
    eye = torch.eye(weights.shape[-1], dtype=weights.dtype)
    return (eye - alpha * normalized) / (1 - alpha)


def reference_smooth(guide, z, alpha, *, normalize=True, **graph_options):
    """s_alpha(z) = L_alpha^{-1} z (eq. 8), or s_hat_alpha (eq. 9), by a dense solve of the reference."""
    laplacian = reference_laplacian(reference_weights(guide, **graph_options), alpha)
    batch, num_channels, height, width = z.shape
    n = height * width
    flat = z.reshape(batch, num_channels, n).to(torch.float64)

    def solve(rhs):  # rhs (B, C, n)
        if laplacian.shape[1] == 1:  # one graph: channels are the d columns of the signal
            return torch.linalg.solve(laplacian[:, 0], rhs.transpose(1, 2)).transpose(1, 2)
        return torch.linalg.solve(laplacian, rhs.unsqueeze(-1)).squeeze(-1)

    out = solve(flat)
    if normalize:
        out = out / solve(torch.ones_like(flat))
    return out.reshape(z.shape)


def phi(r, z, weights, alpha):
    """phi_alpha(r, z) of eq. (6), summed over the batch, written term by term.

    ``alpha / 2 * sum_ij w_ij ||rhat_i - rhat_j||^2 + (1 - alpha) ||r - z||_F^2`` with ``rhat = D^{-1/2} r``;
    ``weights`` (B, G, n, n) broadcasts over the channels (G = 1: one graph, the norm runs over channels).
    """
    batch, num_channels = r.shape[:2]
    r_flat = r.reshape(batch, num_channels, -1)
    rhat = r_flat / weights.sum(-1).sqrt()
    pair_diff = rhat[..., :, None] - rhat[..., None, :]  # (B, C, n, n)
    smoothness = alpha / 2 * (weights * pair_diff.pow(2)).sum()
    fitness = (1 - alpha) * (r - z).pow(2).sum()
    return smoothness + fitness


# ---------------------------------------------------------------------------------------------------------
# Smoke and module
# ---------------------------------------------------------------------------------------------------------


class TestSmoke:
    @pytest.mark.parametrize("solver", ("auto", *SOLVERS))
    def test_shapes_dtype_and_solver(self, solver):
        guide = _random_guide((2, 3, 5, 6))
        smoother = Smoothing(**_options(solver)).prepare(guide)
        z = _random_signal(guide.shape)
        out = smoother(z)
        assert isinstance(smoother, GuidedSmoother)
        assert out.shape == z.shape and out.dtype == z.dtype
        assert torch.isfinite(out).all()
        assert (smoother.solver.kind if solver in ("auto", "direct") else smoother.solver.name) == (
            "direct" if solver == "auto" else solver)  # auto on CPU: direct
        assert smoother.dc_gain.shape == (2, 3, 5, 6)

    def test_functional_equals_module(self):
        guide, z = _random_guide((1, 3, 6, 5)), _random_signal((1, 3, 6, 5))
        for normalize in (True, False):
            expected = Smoothing(alpha=0.9, kernel="gaussian", sigma=0.2).prepare(guide).smooth(
                z, normalize=normalize
            )
            got = smooth(z, guide, 0.9, kernel="gaussian", sigma=0.2, normalize=normalize)
            torch.testing.assert_close(got, expected)

    def test_joint_graph_is_shared(self):
        smoother = Smoothing(channels="joint").prepare(_random_guide((2, 3, 4, 4)))
        assert smoother.dc_gain.shape == (2, 1, 4, 4)

    def test_with_options_revalidates(self):
        config = Smoothing().with_options(alpha=0.5, kernel="gaussian")
        assert (config.alpha, config.kernel) == (0.5, "gaussian")
        with pytest.raises(RangeError):
            config.with_options(alpha=1.0)

    def test_guide_receives_no_gradient(self):
        guide = _random_guide((1, 1, 4, 4)).requires_grad_()
        z = _random_signal((1, 1, 4, 4)).requires_grad_()
        Smoothing().prepare(guide)(z).sum().backward()
        assert guide.grad is None and z.grad is not None


# ---------------------------------------------------------------------------------------------------------
# Graph (eq. 5, section 3.3)
# ---------------------------------------------------------------------------------------------------------


def _unnormalized(graph) -> torch.Tensor:
    """Recover w_ij from the stored D^{-1/2} W D^{-1/2} maps: (B, G, K, H, W)."""
    sqrt_degree = graph.degree.sqrt()
    maps = []
    for k, (dy, dx) in enumerate(graph.offsets):
        neighbour = torch.zeros_like(sqrt_degree)
        h, w = sqrt_degree.shape[-2:]
        ys = slice(max(-dy, 0), h - max(dy, 0))
        xs = slice(max(-dx, 0), w - max(dx, 0))
        neighbour[..., ys, xs] = sqrt_degree[..., max(dy, 0) : h - max(-dy, 0), max(dx, 0) : w - max(-dx, 0)]
        maps.append(graph.normalized_weights[:, :, k] * sqrt_degree * neighbour)
    return torch.stack(maps, dim=2)


class TestGraph:
    # 2x2 guide, one channel:  a b  =  0.1 0.5
    #                          c d     0.3 0.9
    GUIDE = torch.tensor([[[[0.1, 0.5], [0.3, 0.9]]]], dtype=torch.float64)
    # photometric distances: |a-b| = 0.4, |c-d| = 0.6, |a-c| = 0.2, |b-d| = 0.4, |a-d| = 0.8, |b-c| = 0.2

    @pytest.mark.parametrize(
        ("kernel", "sigma", "k_f"),
        [
            ("laplacian", 0.1, lambda d: math.exp(-d / 0.1)),
            ("gaussian", 0.2, lambda d: math.exp(-(d**2) / (2 * 0.2**2))),
        ],
    )
    def test_hand_computed_2x2(self, kernel, sigma, k_f):
        w_ab, w_cd, w_ac, w_bd = k_f(0.4), k_f(0.6), k_f(0.2), k_f(0.4)
        w_ad, w_bc = k_f(0.8), k_f(0.2)

        graph4 = build_graph(self.GUIDE, neighbourhood=4, kernel=kernel, sigma=sigma)
        degree4 = torch.tensor([[w_ab + w_ac, w_ab + w_bd], [w_ac + w_cd, w_bd + w_cd]], dtype=torch.float64)
        torch.testing.assert_close(graph4.degree[0, 0], degree4, rtol=1e-12, atol=0)
        weights = _unnormalized(graph4)[0, 0]  # (K, 2, 2): offsets (0, 1) and (1, 0)
        expected = torch.tensor([[[w_ab, 0.0], [w_cd, 0.0]], [[w_ac, w_bd], [0.0, 0.0]]], dtype=torch.float64)
        torch.testing.assert_close(weights, expected, rtol=1e-12, atol=1e-15)
        # entry (a, b) of the normalised adjacency D^{-1/2} W D^{-1/2}
        normalized_ab = w_ab / math.sqrt((w_ab + w_ac) * (w_ab + w_bd))
        assert graph4.normalized_weights[0, 0, 0, 0, 0].item() == pytest.approx(normalized_ab, rel=1e-12)

        graph8 = build_graph(self.GUIDE, neighbourhood=8, kernel=kernel, sigma=sigma)
        degree8 = degree4 + torch.tensor([[w_ad, w_bc], [w_bc, w_ad]], dtype=torch.float64)
        torch.testing.assert_close(graph8.degree[0, 0], degree8, rtol=1e-12, atol=0)
        diagonal = _unnormalized(graph8)[0, 0, 2:]  # offsets (1, 1) and (1, -1)
        assert diagonal[0, 0, 0].item() == pytest.approx(w_ad, rel=1e-12)
        assert diagonal[1, 0, 1].item() == pytest.approx(w_bc, rel=1e-12)
        assert int((diagonal != 0).sum()) == 2

    def test_hand_computed_joint_distance(self):
        # two channels; joint distance is Euclidean over channels: |(0.1, 0.2) - (0.5, 0.5)| = 0.5
        guide = torch.tensor([[[[0.1, 0.5]], [[0.2, 0.5]]]], dtype=torch.float64)  # (1, 2, 1, 2)
        joint = build_graph(guide, kernel="laplacian", sigma=0.1, channels="joint")
        assert joint.num_graphs == 1
        assert joint.degree[0, 0, 0, 0].item() == pytest.approx(math.exp(-5.0), rel=1e-12)
        per_channel = build_graph(guide, kernel="laplacian", sigma=0.1, channels="per_channel")
        assert per_channel.num_graphs == 2
        assert per_channel.degree[0, 0, 0, 0].item() == pytest.approx(math.exp(-4.0), rel=1e-12)
        assert per_channel.degree[0, 1, 0, 0].item() == pytest.approx(math.exp(-3.0), rel=1e-12)
        # a graph with one edge: the normalised weight is w / sqrt(w * w) = 1
        torch.testing.assert_close(joint.normalized_weights[0, 0, 0, 0, 0].item(), 1.0)

    @pytest.mark.parametrize("neighbourhood", (4, 8))
    def test_constant_guide_gives_uniform_weights(self, neighbourhood):
        guide = torch.full((1, 3, 5, 6), 0.4, dtype=torch.float64)
        graph = build_graph(guide, neighbourhood=neighbourhood, kernel="gaussian", sigma=0.05)
        weights = _unnormalized(graph)
        inside = graph.normalized_weights != 0
        torch.testing.assert_close(weights[inside], torch.ones_like(weights[inside]))
        # degree = number of neighbours inside the image (4 or 8 in the interior, fewer on the border)
        assert graph.degree[0, 0, 2, 2].item() == pytest.approx(neighbourhood)
        assert graph.degree[0, 0, 0, 0].item() == pytest.approx(2 if neighbourhood == 4 else 3)
        assert graph.degree[0, 0, 0, 2].item() == pytest.approx(3 if neighbourhood == 4 else 5)

    @pytest.mark.parametrize("channels", ("per_channel", "joint"))
    @pytest.mark.parametrize("kernel", ("laplacian", "gaussian"))
    @pytest.mark.parametrize("neighbourhood", (4, 8))
    def test_laplacian_matches_paper_definition(self, channels, kernel, neighbourhood):
        guide = _random_guide((2, 3, 4, 5), seed=3)
        options = {"neighbourhood": neighbourhood, "kernel": kernel, "sigma": 0.15, "channels": channels}
        graph = build_graph(guide, **options)
        expected = reference_laplacian(reference_weights(guide, **options), 0.9)
        torch.testing.assert_close(assemble_dense(graph, 0.9), expected, rtol=1e-12, atol=1e-12)
        sparse = assemble_sparse(graph, 0.9)
        for b in range(2):
            for g in range(expected.shape[1]):
                dense_from_sparse = torch.from_numpy(sparse[b][g].toarray())
                torch.testing.assert_close(dense_from_sparse, expected[b, g], rtol=1e-12, atol=1e-12)


class TestLaplacian:
    @pytest.mark.parametrize("alpha", (0.5, 0.95, 0.997))
    @pytest.mark.parametrize("channels", ("per_channel", "joint"))
    def test_symmetric_positive_definite_with_paper_bounds(self, alpha, channels):
        graph = build_graph(_random_guide((2, 3, 5, 4)), channels=channels, neighbourhood=8)
        matrix = assemble_dense(graph, alpha)
        torch.testing.assert_close(matrix, matrix.transpose(-1, -2), rtol=0, atol=0)
        eigenvalues = torch.linalg.eigvalsh(matrix)
        upper = (1 + alpha) / (1 - alpha)
        assert float(eigenvalues.min()) >= 1 - 1e-9
        assert float(eigenvalues.max()) <= upper * (1 + 1e-9)
        # the bounds are attained: the constant-on-D^{1/2} vector gives the smallest eigenvalue, 1
        assert float(eigenvalues.min()) == pytest.approx(1.0, abs=1e-9)

    @pytest.mark.parametrize("solver", SOLVERS)
    def test_matvec_equals_dense_matrix(self, solver):
        guide = _random_guide((2, 2, 4, 3))
        smoother = Smoothing(alpha=0.9, **_options(solver)).prepare(guide)
        v = _random_signal(guide.shape)
        matrix = assemble_dense(smoother.solver.graph, 0.9)  # (B, C, n, n)
        expected = (matrix @ v.reshape(2, 2, 12, 1)).reshape(v.shape)
        torch.testing.assert_close(smoother.matvec(v), expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Solvers agree with each other and with the paper's definition
# ---------------------------------------------------------------------------------------------------------


class TestSolversAgree:
    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("channels", ("per_channel", "joint"))
    @pytest.mark.parametrize("kernel", ("laplacian", "gaussian"))
    @pytest.mark.parametrize("neighbourhood", (4, 8))
    def test_every_solver_and_reference(self, channels, kernel, neighbourhood, device):
        guide = _random_guide((2, 3, 7, 9), seed=5)  # batch > 1, non-square
        z = _random_signal(guide.shape, seed=6)
        graph_options = {"neighbourhood": neighbourhood, "kernel": kernel, "sigma": 0.1, "channels": channels}
        for normalize in (True, False):
            expected = reference_smooth(guide, z, 0.97, normalize=normalize, **graph_options)
            results = {}
            for solver in SOLVERS:
                config = Smoothing(alpha=0.97, **graph_options, **_options(solver))
                smoother = config.prepare(guide.to(device))
                results[solver] = smoother.smooth(z.to(device), normalize=normalize).cpu()
                assert _relative(results[solver], expected) <= 1e-6, solver
            assert _relative(results["direct"], results["dense"]) <= 1e-6
            for iterative in ITERATIVE:
                assert _relative(results[iterative], results["dense"]) <= 1e-6
                assert _relative(results[iterative], results["direct"]) <= 1e-6

    @pytest.mark.parametrize("channels", ("per_channel", "joint"))
    def test_large_graphs_factorised_one_per_graph(self, channels):
        # SuperLU gives each graph its own factor; a joint graph must still solve every channel
        # (regression: only the first channel was solved, the others left uninitialised)
        side = 66
        guide = _random_guide((2, 3, side, side), seed=8)
        z = _random_signal(guide.shape, seed=9)
        config = Smoothing(alpha=0.9, channels=channels, solver="superlu")
        smoother = config.prepare(guide)
        assert not smoother.solver.batched
        assert len(smoother.solver.factors) == (2 if channels == "joint" else 6)
        x = smoother.smooth(z, normalize=False)
        residual = (smoother.matvec(x) - z).flatten(2).norm(dim=2) / z.flatten(2).norm(dim=2)
        assert float(residual.max()) <= 1e-10  # every image and channel
        cg = Smoothing(alpha=0.9, channels=channels, solver="cg", cg_tol=1e-10).prepare(guide)
        assert _relative(x, cg.smooth(z, normalize=False)) <= 1e-6

    @pytest.mark.parametrize("on_team", (False, True))
    @pytest.mark.parametrize("channels", ("per_channel", "joint"))
    def test_direct_solver_threads_give_same_result(self, channels, on_team, monkeypatch):
        # DirectSolver spreads its systems over torch.get_num_threads() threads, when each gets enough work:
        # torch's own OpenMP threads where it finds them, else threads of its own
        from smoothadv.smoothing import solvers, team

        if on_team and not team.available():
            pytest.skip("torch's OpenMP runtime not found, or SMOOTHADV_TORCH_TEAM=0")
        if not on_team:
            monkeypatch.setattr(team, "available", lambda: False)

        # 32 images: enough blocks of EXACT_LANES graphs for four threads, one graph per image or channel
        guide, z = _random_guide((32, 3, 6, 7)), _random_signal((32, 3, 6, 7))
        config = Smoothing(channels=channels, solver="direct")
        previous = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            sequential = config.prepare(guide)(z)
            torch.set_num_threads(4)
            assert len(config.prepare(guide).solver.spans) == 1  # too little work to split
            threshold = "MIN_VALUES_PER_TEAM_THREAD" if on_team else "MIN_VALUES_PER_THREAD"
            monkeypatch.setattr(solvers, threshold, 1)
            smoother = config.prepare(guide)
            spans = smoother.solver.spans
            assert len(spans) == 4
            assert all(span.start % solvers.cholesky.EXACT_LANES == 0 for span in spans)
            blocks_on_team = []
            run = team.run
            monkeypatch.setattr(team, "run", lambda worker, table, threads: (
                blocks_on_team.append(int(table[0])) or run(worker, table, threads)))
            threaded = smoother(z)
        finally:
            torch.set_num_threads(previous)
        torch.testing.assert_close(threaded, sequential, rtol=0, atol=0)
        assert blocks_on_team == ([len(smoother.solver.spans)] if on_team else [])

    @pytest.mark.parametrize("threads, on_team", ((1, False), (2, False), (2, True)))
    @pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
    @pytest.mark.parametrize("channels", ("per_channel", "joint"))
    def test_divided_solves_equal_the_division_and_the_solve(self, channels, dtype, threads, on_team,
                                                               monkeypatch):
        # the exact Cholesky divides as it packs or unpacks (eq. 9 and its adjoint): the same values, to
        # the last bit, as the division of the tensors, on this thread, on threads of its own or on torch's
        # team, a divisor shared by the channels of a joint graph broadcast over them
        from smoothadv.smoothing import solvers, team

        if on_team and not team.available():
            pytest.skip("torch's OpenMP runtime not found, or SMOOTHADV_TORCH_TEAM=0")
        if not on_team:
            monkeypatch.setattr(team, "available", lambda: False)
        monkeypatch.setattr(solvers, "MIN_VALUES_PER_TEAM_THREAD", 1)
        monkeypatch.setattr(solvers, "MIN_VALUES_PER_THREAD", 1)
        guide = _random_guide((17, 3, 5, 6), dtype=dtype)
        z = _random_signal((17, 3, 5, 6), dtype=dtype)
        previous = torch.get_num_threads()
        try:
            torch.set_num_threads(threads)
            solver = Smoothing(channels=channels, solver="direct").prepare(guide).solver
            assert len(solver.spans) == threads
            for seed in (2, 3):  # a second divisor is not mistaken for the first
                divisor = 0.5 + _random_signal((17, solver.groups, 5, 6), seed=seed, dtype=dtype).abs()
                after = solver.solve_divided(z, divisor, before=False)
                torch.testing.assert_close(after, solver.solve(z) / divisor, rtol=0, atol=0)
                before = solver.solve_divided(z, divisor, before=True)
                torch.testing.assert_close(before, solver.solve(z / divisor), rtol=0, atol=0)
                assert after.dtype == before.dtype == dtype
        finally:
            torch.set_num_threads(previous)

    @pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
    @pytest.mark.parametrize("channels", ("per_channel", "joint"))
    def test_exact_solves_from_tensors_equal_those_through_numpy(self, channels, dtype, monkeypatch):
        # a C-contiguous CPU right-hand side is solved straight from its tensor through a plan kept per
        # layout; a strided one goes through NumPy: the same values to the last bit, run after run
        from smoothadv.smoothing import cholesky

        guide = _random_guide((9, 3, 5, 6), dtype=dtype)
        solver = Smoothing(channels=channels, solver="direct").prepare(guide).solver
        runs = []
        run = cholesky.ExactPlan.run
        monkeypatch.setattr(cholesky.ExactPlan, "run", lambda plan, *addresses: (
            runs.append(plan) or run(plan, *addresses)))
        divisor = 0.5 + _random_signal((9, solver.groups, 5, 6), seed=5, dtype=dtype).abs()
        for seed in (6, 7):
            z = _random_signal((9, 3, 5, 6), seed=seed, dtype=dtype)
            strided = z.transpose(2, 3).contiguous().transpose(2, 3)
            assert not strided.is_contiguous() and torch.equal(strided, z)
            for solve in (solver.solve, lambda rhs: solver.solve_divided(rhs, divisor, before=True),
                          lambda rhs: solver.solve_divided(rhs, divisor, before=False)):
                torch.testing.assert_close(solve(z), solve(strided), rtol=0, atol=0)
        # one plan per way of dividing, kept across right-hand sides, and run for each contiguous one
        plans = [plan for key, (_, plan) in solver._plans.items() if key[0] == z.shape]
        assert len(plans) == 3 and all(plan is not None for plan in plans)
        assert len(runs) == 6 and set(runs) == set(plans)

    def test_a_joint_graph_given_no_channels_solves_to_nothing(self):
        solver = Smoothing(channels="joint", solver="direct").prepare(_random_guide((2, 3, 5, 6))).solver
        empty = torch.zeros(2, 0, 5, 6)
        assert solver.solve(empty).shape == (2, 0, 5, 6)
        gain = solver.solve(torch.ones(2, 1, 5, 6))
        assert solver.solve_divided(empty, gain, before=True).shape == empty.shape

    @pytest.mark.parametrize("solver", ("direct", "superlu"))
    def test_direct_solvers_refuse_right_hand_sides_the_graphs_do_not_fit(self, solver):
        # another batch, a transposed image of as many pixels, more channels than per-channel graphs: an
        # error that says the shape, not a solve of some rows (or of the wrong grid)
        chosen = Smoothing(solver=solver).prepare(_random_guide((4, 2, 6, 7))).solver
        for shape in ((5, 2, 6, 7), (4, 2, 7, 6), (4, 3, 6, 7), (4, 2, 42)):
            for rhs in (_random_signal(shape), _random_signal(shape).transpose(-1, -2).contiguous().mT):
                with pytest.raises(ShapeError, match=r"\(4, 2, 6, 7\)"):
                    chosen.solve(rhs)

    @pytest.mark.parametrize("solver", ("direct", "superlu", "dense", "cg"))
    def test_every_solver_divides(self, solver):
        # the refined Cholesky (72 x 72) and the other solvers divide with the tensors (the base method)
        size = 72 if solver == "direct" else 8
        guide, z = _random_guide((1, 3, size, size)), _random_signal((1, 3, size, size))
        chosen = Smoothing(solver=solver, cg_tol=1e-10).prepare(guide).solver
        divisor = 0.5 + _random_signal((1, 3, size, size), seed=4).abs()
        expected = chosen.solve(z / divisor)
        torch.testing.assert_close(chosen.solve_divided(z, divisor, before=True), expected, rtol=1e-6,
                                   atol=1e-9)

    @pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
    @pytest.mark.parametrize("size", (8, 72))  # the exact walk, and the refined float32 factors
    def test_direct_solver_takes_half_precision(self, dtype, size):
        guide, z = _random_guide((1, 3, size, size)), _random_signal((1, 3, size, size))
        smoother = Smoothing(alpha=0.97, solver="direct").prepare(guide.float())
        out = smoother(z.to(dtype))
        assert out.dtype == dtype
        # the float32 solve of the same signal (the refined one warm-started: equal to about 1e-7)
        torch.testing.assert_close(out.float(), smoother(z.to(dtype).float()), rtol=1e-2, atol=1e-2)

    def test_batch_items_are_independent(self):
        guide, z = _random_guide((3, 2, 5, 6)), _random_signal((3, 2, 5, 6))
        for solver in SOLVERS:
            config = Smoothing(**_options(solver))
            batched = config.prepare(guide)(z)
            single = config.prepare(guide[1:2])(z[1:2])
            assert _relative(batched[1:2], single) <= 1e-10, solver


# ---------------------------------------------------------------------------------------------------------
# Operator properties (eqs. 6-9, 19)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
class TestOperatorProperties:
    def test_alpha_zero_is_identity(self, solver):
        guide, z = _random_guide((2, 3, 5, 4)), _random_signal((2, 3, 5, 4))
        smoother = Smoothing(alpha=0.0, **_options(solver)).prepare(guide)
        torch.testing.assert_close(smoother(z), z, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(smoother.smooth(z, normalize=False), z, rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize("channels", ("per_channel", "joint"))
    def test_normalized_dc_gain_is_one(self, solver, channels):
        guide = _random_guide((2, 3, 6, 5))
        smoother = Smoothing(alpha=0.99, channels=channels, **_options(solver)).prepare(guide)
        ones = torch.ones_like(guide)
        torch.testing.assert_close(smoother(ones), ones, rtol=1e-9, atol=1e-9)
        # ... while the unnormalised operator does not preserve a constant
        assert float((smoother.smooth(ones, normalize=False) - 1).abs().max()) > 1e-3

    def test_linearity(self, solver):
        guide = _random_guide((2, 3, 5, 6))
        z1, z2 = _random_signal(guide.shape, seed=2), _random_signal(guide.shape, seed=3)
        smoother = Smoothing(alpha=0.95, **_options(solver)).prepare(guide)
        for normalize in (True, False):
            combined = smoother.smooth(2.5 * z1 - 0.7 * z2, normalize=normalize)
            separate = 2.5 * smoother.smooth(z1, normalize=normalize) - 0.7 * smoother.smooth(
                z2, normalize=normalize
            )
            assert _relative(combined, separate) <= 1e-9

    @pytest.mark.parametrize("channels", ("per_channel", "joint"))
    def test_adjoint_identity(self, solver, channels):
        guide = _random_guide((2, 3, 5, 6))
        z, g = _random_signal(guide.shape, seed=2), _random_signal(guide.shape, seed=3)
        smoother = Smoothing(alpha=0.95, channels=channels, **_options(solver)).prepare(guide)
        for normalize in (True, False):
            left = (smoother.smooth(z, normalize=normalize) * g).sum()
            right = (z * smoother.adjoint(g, normalize=normalize)).sum()
            assert float(left) == pytest.approx(float(right), rel=1e-9)
        # the normalised operator is not self-adjoint: the adjoint must differ from the forward map
        assert _relative(smoother.adjoint(g), smoother(g)) > 1e-3

    def test_adjoint_matches_transposed_jacobian(self, solver):
        # J = diag(s(1))^{-1} L^{-1} (section 4.2.3), built from the reference; its transpose applied to g
        guide, g = _random_guide((1, 2, 4, 3)), _random_signal((1, 2, 4, 3))
        smoother = Smoothing(alpha=0.95, **_options(solver)).prepare(guide)
        inverse = torch.linalg.inv(reference_laplacian(reference_weights(guide), 0.95))[0]  # (C, n, n)
        jacobian = inverse / inverse.sum(-1, keepdim=True)
        expected = (jacobian.transpose(-1, -2) @ g.reshape(2, 12, 1)).reshape(g.shape)
        assert _relative(smoother.adjoint(g), expected) <= 1e-9

    def test_backward_equals_adjoint(self, solver):
        guide = _random_guide((2, 3, 5, 6))
        g = _random_signal(guide.shape, seed=3)
        smoother = Smoothing(alpha=0.95, **_options(solver)).prepare(guide)
        for normalize in (True, False):
            z = _random_signal(guide.shape, seed=2).requires_grad_()
            smoother.smooth(z, normalize=normalize).backward(g)
            expected = smoother.adjoint(g, normalize=normalize)
            torch.testing.assert_close(z.grad, expected, rtol=1e-12, atol=1e-12)

    def test_matvec_inverts_unnormalized_smoothing(self, solver):
        guide, z = _random_guide((2, 3, 6, 5)), _random_signal((2, 3, 6, 5))
        smoother = Smoothing(alpha=0.997, **_options(solver)).prepare(guide)
        assert _relative(smoother.matvec(smoother.smooth(z, normalize=False)), z) <= 1e-9
        assert _relative(smoother.smooth(smoother.matvec(z), normalize=False), z) <= 1e-9

    @pytest.mark.parametrize("channels", ("per_channel", "joint"))
    def test_solution_minimises_phi(self, solver, channels):
        # s_alpha(z) = argmin_r phi_alpha(r, z) (eq. 6), phi written from the paper, not from our matrices
        guide, z = _random_guide((2, 3, 5, 4), seed=7), _random_signal((2, 3, 5, 4), seed=8)
        alpha = 0.95
        weights = reference_weights(guide, channels=channels)
        smoother = Smoothing(alpha=alpha, channels=channels, **_options(solver)).prepare(guide)
        solution = smoother.smooth(z, normalize=False).detach().requires_grad_()
        value = phi(solution, z, weights, alpha)
        (gradient,) = torch.autograd.grad(value, solution)
        start = z.clone().requires_grad_()
        (gradient_at_z,) = torch.autograd.grad(phi(start, z, weights, alpha), start)
        assert float(gradient.norm()) <= 1e-9 * float(gradient_at_z.norm())
        perturbations = _random_signal((5, *z.shape), seed=9)
        for delta in perturbations:
            assert float(phi(solution.detach() + 1e-3 * delta, z, weights, alpha)) > float(value.detach())
        # eq. (7): phi = (1 - alpha) tr(r^T L r - 2 z^T r + z^T z) with our assembled L_alpha
        r = smoother.smooth(z, normalize=False)
        lr = smoother.matvec(r)
        quadratic = (1 - alpha) * ((r * lr).sum() - 2 * (z * r).sum() + (z * z).sum())
        assert float(quadratic) == pytest.approx(float(phi(r, z, weights, alpha)), rel=1e-9)

    @pytest.mark.parametrize("kernel", ("laplacian", "gaussian"))
    def test_smooths_along_flat_regions_not_across_edges(self, solver, kernel):
        # guide: dark left half, bright right half (a strong vertical edge between columns 7 and 8)
        guide = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
        guide[..., 8:] = 0.9
        impulse = torch.zeros_like(guide)
        impulse[0, 0, 8, 7] = 1.0  # just left of the edge
        sigma = 0.1 if kernel == "laplacian" else (1 / 600) ** 0.5
        smoother = Smoothing(alpha=0.997, kernel=kernel, sigma=sigma, **_options(solver)).prepare(guide)
        response = smoother(impulse)[0, 0]
        across = response[8, 8]  # one step across the edge
        along = response[8, 3]  # four steps along the flat side
        assert float(across) < 1e-2 * float(along)
        # the mass that leaks into the whole right half is tiny compared with the left half
        assert float(response[:, 8:].abs().sum()) < 1e-2 * float(response[:, :8].sum())
        # without an edge the same impulse spreads evenly to both sides
        flat = Smoothing(alpha=0.997, kernel=kernel, sigma=sigma, **_options(solver)).prepare(
            torch.full_like(guide, 0.5)
        )(impulse)[0, 0]
        assert float(flat[8, 8]) > float(flat[8, 3])


# ---------------------------------------------------------------------------------------------------------
# gradcheck (float64, tiny images)
# ---------------------------------------------------------------------------------------------------------


class TestGradcheck:
    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("normalize", (True, False))
    @pytest.mark.parametrize("solver", SOLVERS)
    def test_gradcheck(self, solver, normalize, device):
        guide = _random_guide((2, 2, 3, 4)).to(device)
        smoother = Smoothing(alpha=0.9, channels="joint" if normalize else "per_channel",
                             **_options(solver)).prepare(guide)
        z = _random_signal(guide.shape).to(device).requires_grad_()
        assert torch.autograd.gradcheck(lambda t: smoother.smooth(t, normalize=normalize), (z,))


# ---------------------------------------------------------------------------------------------------------
# Exceptions
# ---------------------------------------------------------------------------------------------------------


class TestExceptions:
    @pytest.mark.parametrize("alpha", (-0.1, 1.0, 1.5, float("nan"), "0.5"))
    def test_alpha_outside_unit_interval(self, alpha):
        with pytest.raises(RangeError, match="alpha"):
            Smoothing(alpha=alpha)

    @pytest.mark.parametrize(
        "options",
        [
            {"solver": "lu"},
            {"kernel": "box"},
            {"channels": "rgb"},
            {"neighbourhood": 6},
            {"neighbourhood": "4"},
            {"sigma": 0.0},
            {"sigma": -1.0},
            {"sigma": float("nan")},
        ],
    )
    def test_bad_options(self, options):
        with pytest.raises(ConfigError):
            Smoothing(**options)

    @pytest.mark.parametrize("options", [{"sigma": 0.0}, {"kernel": "box"}, {"neighbourhood": 3}])
    def test_bad_graph_options(self, options):
        with pytest.raises(ConfigError):
            build_graph(_random_guide((1, 1, 3, 3)), **options)

    @pytest.mark.parametrize("options", [{"cg_tol": 0.0}, {"cg_maxiter": 0}])
    def test_bad_cg_options(self, options):
        with pytest.raises(ConfigError):
            Smoothing(solver="cg", **options).prepare(_random_guide((1, 1, 3, 3)))

    @pytest.mark.parametrize("shape", [(4, 4), (1, 4, 4), (1, 1, 1, 4, 4)])
    def test_guide_not_4d(self, shape):
        with pytest.raises(ShapeError, match="B, C, H, W"):
            Smoothing().prepare(torch.rand(shape))

    @pytest.mark.parametrize("shape", [(0, 1, 4, 4), (1, 0, 4, 4), (1, 1, 0, 4), (1, 1, 4, 0)])
    def test_empty_guide(self, shape):
        with pytest.raises(ShapeError, match="empty"):
            Smoothing().prepare(torch.rand(shape))

    def test_integer_guide(self):
        with pytest.raises(InputError, match="floating-point"):
            Smoothing().prepare(torch.ones(1, 1, 4, 4, dtype=torch.uint8))

    def test_non_tensor_guide(self):
        with pytest.raises(InputError):
            Smoothing().prepare([[0.5]])

    @pytest.mark.parametrize("value", (-0.1, 1.1, 255.0))
    def test_guide_outside_unit_range(self, value):
        guide = torch.full((1, 1, 3, 3), 0.5)
        guide[0, 0, 1, 1] = value
        with pytest.raises(RangeError, match=r"\[0, 1\]"):
            Smoothing().prepare(guide)

    @pytest.mark.parametrize("value", (float("nan"), float("inf"), -float("inf")))
    def test_non_finite_guide(self, value):
        guide = torch.full((1, 1, 3, 3), 0.5)
        guide[0, 0, 1, 1] = value
        with pytest.raises(NonFiniteError):
            Smoothing().prepare(guide)

    @pytest.mark.parametrize("value", (float("nan"), float("inf")))
    def test_non_finite_signal(self, value):
        smoother = Smoothing().prepare(torch.full((1, 1, 3, 3), 0.5))
        z = torch.zeros(1, 1, 3, 3)
        z[0, 0, 2, 2] = value
        for call in (smoother, smoother.adjoint, smoother.matvec):
            with pytest.raises(NonFiniteError):
                call(z)

    def test_huge_finite_signal_is_accepted(self):
        # the sum of these float32 values overflows to inf although every value is finite
        smoother = Smoothing().prepare(torch.full((1, 1, 3, 3), 0.5))
        z = torch.full((1, 1, 3, 3), 1e38)
        assert not torch.isfinite(z.sum())
        torch.testing.assert_close(smoother(z), z)  # s_hat keeps a constant (eq. 9)

    @pytest.mark.parametrize("shape", [(1, 1, 3, 4), (2, 1, 3, 3), (1, 3, 3, 3), (3, 3)])
    def test_signal_shape_mismatch(self, shape):
        smoother = Smoothing().prepare(torch.full((1, 1, 3, 3), 0.5))
        for call in (smoother, smoother.adjoint, smoother.matvec):
            with pytest.raises(ShapeError, match="must match"):
                call(torch.zeros(shape))
        with pytest.raises(ShapeError):
            smooth(torch.zeros(shape), torch.full((1, 1, 3, 3), 0.5))

    @pytest.mark.parametrize("solver", SOLVERS)
    def test_integer_or_non_tensor_signal(self, solver):
        smoother = Smoothing(solver=solver).prepare(torch.full((1, 1, 3, 3), 0.5))
        with pytest.raises(InputError, match="floating-point"):
            smoother(torch.ones(1, 1, 3, 3, dtype=torch.int64))
        with pytest.raises(InputError):
            smoother([[1.0]])

    def test_errors_are_library_errors(self):
        for error in (RangeError, ShapeError, NonFiniteError, InputError, ConfigError):
            assert issubclass(error, SmoothAdvError) and issubclass(error, ValueError)


# ---------------------------------------------------------------------------------------------------------
# Conjugate gradient and solver choice
# ---------------------------------------------------------------------------------------------------------


class TestConjugateGradient:
    def test_non_convergence_warns_with_residual(self):
        guide = _random_guide((2, 3, 16, 16))
        with pytest.warns(ConvergenceWarning, match="relative residual") as record:
            smoother = Smoothing(alpha=0.997, solver="cg", cg_maxiter=3).prepare(guide)
        solver = smoother.solver
        assert solver.last_iterations == 3
        assert solver.last_residual > 1e-6
        match = re.search(r"relative residual ([0-9.]+e[-+][0-9]+)", str(record[-1].message))
        reported = float(match.group(1))
        assert reported == pytest.approx(solver.last_residual, rel=1e-2)
        # the residual reported is the real one, ||L x - b|| / ||b|| (per system, largest over systems)
        z = _random_signal(guide.shape)
        with pytest.warns(ConvergenceWarning):
            x = smoother.smooth(z, normalize=False)
        true = ((smoother.matvec(x) - z).norm(dim=(-2, -1)) / z.norm(dim=(-2, -1))).max()
        assert float(true) == pytest.approx(solver.last_residual, rel=1e-6)

    def test_convergence_is_reported(self):
        guide, z = _random_guide((2, 3, 16, 16)), _random_signal((2, 3, 16, 16))
        smoother = Smoothing(alpha=0.997, solver="cg", cg_tol=1e-8).prepare(guide)
        x = smoother.smooth(z, normalize=False)
        solver = smoother.solver
        assert 0 < solver.last_iterations < solver.maxiter
        assert solver.last_residual <= 1e-8
        assert _relative(smoother.matvec(x), z) <= 1e-7

    def test_zero_signal(self):
        smoother = Smoothing(solver="cg").prepare(_random_guide((1, 2, 5, 5)))
        zero = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
        assert torch.equal(smoother(zero), zero)

    @pytest.mark.parametrize(
        ("shape", "channels"),
        [((1, 1, 28, 28), "per_channel"), ((4, 3, 28, 28), "per_channel"), ((1, 1, 64, 64), "per_channel"),
         ((1, 3, 64, 64), "joint")],
    )
    def test_auto_choice_on_cpu(self, shape, channels):
        # on CPU the sparse factorisation is used at every size (commit e0760bc: faster than dense inverses)
        guide = torch.rand(shape)
        config = Smoothing(channels=channels)
        assert choose_solver(config, guide) == "direct"
        if shape[0] == 1:
            assert config.prepare(guide).solver.kind == "direct"

    @pytest.mark.parametrize(
        ("shape", "expected"),
        [((1, 1, 28, 28), "dense"), ((8, 3, 32, 32), "dense"), ((1, 1, 33, 32), "chebyshev"),
         ((1, 3, 64, 64), "chebyshev"), ((1000, 3, 32, 32), "chebyshev")],  # the last: dense over 2 GiB
    )
    def test_auto_choice_off_cpu(self, shape, expected):
        # any non-CPU device takes the GPU branch; a "meta" tensor has a device but no data
        guide = torch.empty(shape, device="meta")
        assert choose_solver(Smoothing(), guide) == expected


class TestChebyshev:
    def test_step_count_is_the_bound_for_the_spectrum(self):
        upper = (1 + 0.997) / (1 - 0.997)
        steps = chebyshev_iterations(1.0, upper, 1e-6)
        assert steps == 188  # kappa = 665.7, rho = 0.92538: ln(2e6) / ln(1 / rho) = 187.1
        assert chebyshev_bound(1.0, upper, steps) <= 1e-6 < chebyshev_bound(1.0, upper, steps - 1)
        assert chebyshev_iterations(1.0, 1.0, 1e-6) == 1

    @pytest.mark.parametrize("neighbourhood", (4, 8))
    def test_spectrum_lies_in_the_interval_and_4_neighbours_reach_both_ends(self, neighbourhood):
        alpha = 0.9
        guide = _random_guide((1, 1, 6, 8), seed=3)
        smoother = Smoothing(alpha=alpha, neighbourhood=neighbourhood, solver="dense").prepare(guide)
        eigenvalues = torch.linalg.eigvalsh(assemble_dense(smoother.solver.graph, alpha)[0, 0])
        lower, upper = 1.0, (1 + alpha) / (1 - alpha)
        assert float(eigenvalues.min()) >= lower - 1e-9 and float(eigenvalues.max()) <= upper + 1e-9
        assert float(eigenvalues.min()) == pytest.approx(lower, abs=1e-9)  # the constant direction of Wn
        if neighbourhood == 4:  # a 4-neighbour grid is bipartite: Wn also has eigenvalue -1
            assert float(eigenvalues.max()) == pytest.approx(upper, rel=1e-9)

    def test_one_pass_meets_its_bound_and_the_check_meets_tol(self):
        guide, z = _random_guide((2, 3, 16, 16)), _random_signal((2, 3, 16, 16))
        for tol in (1e-3, 1e-6, 1e-10):
            smoother = Smoothing(alpha=0.997, solver="chebyshev", cg_tol=tol).prepare(guide)
            solver = smoother.solver
            x = solver._iterate(z, solver.iterations)
            one_pass = float(((solver.matvec(x) - z).norm(dim=(-2, -1)) / z.norm(dim=(-2, -1))).max())
            assert one_pass <= chebyshev_bound(solver.lower, solver.upper, solver.iterations) * (1 + 1e-6)
            smoother.smooth(z, normalize=False)
            assert solver.last_residual <= tol

    def test_float32_agrees_with_the_direct_solver(self):
        guide = _random_guide((2, 3, 24, 20), dtype=torch.float32)
        z = _random_signal(guide.shape, dtype=torch.float32)
        sigma = (1 / 600) ** 0.5  # the ImageNet kernel
        options = {"alpha": 0.997, "kernel": "gaussian", "sigma": sigma}
        chebyshev = Smoothing(**options, solver="chebyshev").prepare(guide)
        out = chebyshev.smooth(z, normalize=False)
        assert out.dtype == torch.float32 and chebyshev.solver.last_residual <= 1e-6
        direct = Smoothing(**options, solver="direct").prepare(guide.double())
        exact = direct.smooth(z.double(), normalize=False)
        assert _relative(out.double(), exact) <= 1e-5

    def test_cap_warns_with_the_residual(self):
        guide, z = _random_guide((1, 3, 16, 16)), _random_signal((1, 3, 16, 16))
        with pytest.warns(ConvergenceWarning, match="Chebyshev iteration left relative residual"):
            smoother = Smoothing(alpha=0.997, solver="chebyshev", cg_maxiter=5).prepare(guide)
            smoother.smooth(z, normalize=False)
        assert smoother.solver.last_residual > 1e-6


# ---------------------------------------------------------------------------------------------------------
# Device and dtype
# ---------------------------------------------------------------------------------------------------------


class TestDeviceDtype:
    @pytest.mark.parametrize("solver", SOLVERS)
    def test_float32(self, solver):
        guide = _random_guide((2, 3, 12, 10), dtype=torch.float32)
        z = _random_signal(guide.shape, dtype=torch.float32)
        sigma = (1 / 600) ** 0.5  # the ImageNet kernel exp(-300 d^2)
        smoother = Smoothing(alpha=0.997, kernel="gaussian", sigma=sigma, solver=solver).prepare(guide)
        out = smoother(z)
        assert out.dtype == torch.float32
        expected = reference_smooth(guide.double(), z.double(), 0.997, kernel="gaussian", sigma=sigma)
        assert _relative(out.double(), expected) <= 1e-4
        z.requires_grad_()
        smoother(z).sum().backward()
        assert z.grad.dtype == torch.float32

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("solver", ("auto", *SOLVERS))
    def test_device_follows_input(self, device, solver):
        guide = _random_guide((1, 3, 6, 6)).to(device)
        z = _random_signal(guide.shape).to(device).requires_grad_()
        smoother = Smoothing(**_options(solver)).prepare(guide)
        out = smoother(z)
        assert out.device == guide.device
        out.backward(torch.ones_like(out))
        assert z.grad.device == guide.device
        expected = reference_smooth(guide.cpu(), z.detach().cpu(), 0.95)
        assert _relative(out.detach().cpu(), expected) <= 1e-6
