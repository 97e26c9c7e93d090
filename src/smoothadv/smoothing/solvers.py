"""Solvers of the regularised Laplacian system ``L_alpha r = z`` (eq. 8).

``L_alpha = (I - alpha * Wn) / (1 - alpha)`` with ``Wn = D^{-1/2} W D^{-1/2}`` is symmetric positive
definite: the eigenvalues of ``Wn`` lie in [-1, 1], so those of ``L_alpha`` lie in
``[1, (1 + alpha) / (1 - alpha)]`` (condition number about 666 at alpha = 0.997). Being symmetric, the
operator is its own adjoint, so each solver serves the forward pass and the backward pass alike.

The solvers share one interface (:class:`LaplacianSolver`) and one registry (:data:`SOLVERS`):

* :class:`DenseSolver`: the inverse, precomputed by a Cholesky factorisation; a solve is a batched
  matrix product. For small images (MNIST: n = 784 pixels, a 4.9 MB matrix in float64).
* :class:`DirectSolver`: a sparse factorisation once per guide image, reused by every later solve;
  exact to rounding; two named methods, :class:`CholeskySolver` (batched, small images) and
  :class:`SuperLUSolver`. CPU only; tensors on another device go through host memory.
* :class:`CGSolver`: batched, matrix-free conjugate gradient on the device of the inputs, with a
  relative-residual tolerance, an iteration cap, and a :class:`~smoothadv.core.errors.ConvergenceWarning` that
  reports the residual reached when the cap stops it.
* :class:`ChebyshevSolver`: batched, matrix-free Chebyshev iteration, the GPU solver for images above 32x32.
  The spectrum of ``L_alpha`` is known exactly, so the iteration needs no inner products and its length
  is fixed in advance by the error bound: it runs without a host synchronisation until one true-residual
  check in float64 (followed, rarely, by a correction solve).
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from smoothadv.core.errors import ConfigError, ConvergenceWarning, ShapeError, warn
from smoothadv.core.validation import check_positive, check_positive_int
from smoothadv.smoothing import cholesky, team
from smoothadv.smoothing.graph import PixelGraph, grid_edges


class LaplacianSolver(ABC):
    """Computes ``L_alpha^{-1} z`` for the graphs of a batch of guide images.

    Args:
        graph: normalised pixel graphs of the B guide images (G graphs each).
        alpha: smoothing strength in [0, 1).
    """

    name: str = ""
    #: ``"dense"``, ``"direct"`` (a factorisation) or ``"iterative"`` (takes ``tol`` and ``maxiter``).
    kind: str = "dense"

    def __init__(self, graph: PixelGraph, alpha: float):
        self.graph = graph
        self.alpha = float(alpha)

    #: Largest relative residual ``||L x - b|| / ||b||`` the last solve left, where the solver measures
    #: it (iterative solvers, the refined Cholesky); None otherwise.
    last_residual: float | None = None

    @abstractmethod
    def solve(self, rhs: torch.Tensor, sequence: str | None = None) -> torch.Tensor:
        """Return ``L_alpha^{-1} rhs``.

        Args:
            rhs: (B, C, H, W), with C equal to the channels of the guide.
            sequence: name of a sequence of related right-hand sides (an attack's signals, or their
                gradients); a solver may start from the previous solution of the same sequence. The
                result meets the solver's accuracy either way.

        Returns:
            (B, C, H, W), same dtype and device as ``rhs``.
        """

    def solve_divided(self, rhs: torch.Tensor, divisor: torch.Tensor, *, before: bool,
                      sequence: str | None = None) -> torch.Tensor:
        """``solve(rhs / divisor)`` when ``before``, else ``solve(rhs) / divisor``: the normalised smoothing
        of eq. (9) and its adjoint divide by the DC gain. A solver may divide inside its solve, with the
        same values.

        Args:
            rhs: (B, C, H, W). divisor: (B, G, H, W), broadcast over the channels of a graph they share;
                the division is done in the dtype of ``rhs``.
            before, sequence: as above, and as for :meth:`solve`.
        """
        divisor = divisor.to(rhs.dtype)
        if before:
            return self.solve(rhs / divisor, sequence)
        return self.solve(rhs, sequence) / divisor

    def matvec(self, values: torch.Tensor) -> torch.Tensor:
        """Product ``L_alpha v = (v - alpha Wn v) / (1 - alpha)`` (matrix-free); v of shape (B, C, H, W).

        Computed in the precision of ``v`` (float32 weights are promoted for a float64 ``v``).
        """
        return (values - self.alpha * self.graph.adjacency_matvec(values)) / (1.0 - self.alpha)


def edge_list(graph: PixelGraph) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upper-triangle entries of ``Wn`` in coordinate form.

    Returns:
        rows, cols: (E,) flat pixel indices ``y * W + x`` of the two ends of each edge.
        values: (B, G, E) entries ``Wn[rows, cols]`` for every graph.
    """
    weights = graph.normalized_weights
    device = weights.device
    rows, cols, source = grid_edges(*weights.shape[-2:], graph.offsets)
    values = weights.flatten(2)[..., torch.from_numpy(source).to(device)]
    return torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device), values


def assemble_dense(graph: PixelGraph, alpha: float) -> torch.Tensor:
    """Dense ``L_alpha`` of every graph, shape (B, G, n, n), n = H * W, in the graph's dtype."""
    weights = graph.normalized_weights
    batch, groups = weights.shape[:2]
    n = weights.shape[-2] * weights.shape[-1]
    rows, cols, values = edge_list(graph)
    matrix = torch.zeros(batch, groups, n * n, dtype=weights.dtype, device=weights.device)
    off_diagonal = -alpha / (1.0 - alpha) * values
    matrix[..., rows * n + cols] = off_diagonal
    matrix[..., cols * n + rows] = off_diagonal
    diagonal = torch.arange(n, device=weights.device)
    matrix[..., diagonal * n + diagonal] = 1.0 / (1.0 - alpha)
    return matrix.view(batch, groups, n, n)


def assemble_sparse(graph: PixelGraph, alpha: float) -> list[list[scipy.sparse.csc_matrix]]:
    """Sparse ``L_alpha`` (float64, CSC) of every graph, indexed ``[b][g]``."""
    rows, cols, values = edge_list(graph)
    rows_np, cols_np = rows.cpu().numpy(), cols.cpu().numpy()
    values_np = values.detach().to("cpu", torch.float64).numpy()
    n = graph.normalized_weights.shape[-2] * graph.normalized_weights.shape[-1]
    diagonal = np.arange(n)
    all_rows = np.concatenate([rows_np, cols_np, diagonal])
    all_cols = np.concatenate([cols_np, rows_np, diagonal])
    scale = 1.0 / (1.0 - alpha)
    matrices = []
    for per_image in values_np:
        row = []
        for edge_values in per_image:
            off = -alpha * scale * edge_values
            data = np.concatenate([off, off, np.full(n, scale)])
            row.append(scipy.sparse.csc_matrix((data, (all_rows, all_cols)), shape=(n, n)))
        matrices.append(row)
    return matrices


class DenseSolver(LaplacianSolver):
    """Precomputed inverse (Cholesky, float64), applied as a batched matrix product."""

    name = "dense"

    def __init__(self, graph: PixelGraph, alpha: float):
        super().__init__(graph, alpha)
        matrix = assemble_dense(graph, alpha).to(torch.float64)
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(matrix))
        self.inverse = inverse.to(graph.normalized_weights.dtype)  # (B, G, n, n)

    def solve(self, rhs: torch.Tensor, sequence: str | None = None) -> torch.Tensor:
        batch, channels, height, width = rhs.shape
        inverse = self.inverse.to(rhs.dtype)
        flat = rhs.reshape(batch, channels, height * width)
        if inverse.shape[1] == 1:  # one graph for all channels: (B, n, n) @ (B, n, C)
            out = torch.bmm(inverse[:, 0], flat.transpose(1, 2)).transpose(1, 2)
        else:  # one graph per channel: (B, C, n, n) @ (B, C, n, 1)
            out = torch.matmul(inverse, flat.unsqueeze(-1)).squeeze(-1)
        return out.reshape(rhs.shape)


class DirectSolver(LaplacianSolver):
    """Solves from a sparse factorisation computed once per guide; two named methods.

    * :class:`CholeskySolver` (``"cholesky"``, what ``solver="direct"`` picks): all graphs of a batch
      share one sparsity pattern and are factorised together by :mod:`smoothadv.smoothing.cholesky`, their
      values side by side; exact float64 solves for small images, float32 factors refined in float64 to a
      guaranteed residual and warm-started along a sequence of signals for large ones.
    * :class:`SuperLUSolver` (``"superlu"``): one SciPy SuperLU factor per graph, float64, exact to
      rounding; the reference the Cholesky is measured against.

    Either way the work is spread over up to ``torch.get_num_threads()`` threads (both release the GIL).
    CPU only; tensors on another device go through host memory.
    """

    kind = "direct"
    batched = False

    def __init__(self, graph: PixelGraph, alpha: float):
        super().__init__(graph, alpha)
        self.batch, self.groups = graph.normalized_weights.shape[:2]

    def solve(self, rhs: torch.Tensor, sequence: str | None = None) -> torch.Tensor:
        host, repeat = self._host_systems(rhs)
        return _as_tensor(self._solve_systems(host, repeat, sequence), rhs)  # one row per system, graph-major

    def _systems_per_graph(self, shape: tuple[int, ...]) -> int:
        """Right-hand sides per graph in one of ``shape`` (B, C, H, W): 1, or C for a graph the channels
        share.

        Raises:
            ShapeError: another batch or image size than the graphs', or channels they do not fit.
        """
        height, width = self.graph.normalized_weights.shape[-2:]
        if len(shape) != 4 or shape[0] != self.batch or tuple(shape[2:]) != (height, width) or not (
                shape[1] == self.groups or self.groups == 1):
            channels = "C" if self.groups == 1 else self.groups
            raise ShapeError(f"this solver's graphs take right-hand sides of shape ({self.batch}, "
                             f"{channels}, {height}, {width}), one per guide image; got {tuple(shape)}.")
        return 1 if self.groups == shape[1] else shape[1]

    def _host_systems(self, rhs: torch.Tensor) -> tuple[np.ndarray, int]:
        """(B * C, n) NumPy view (or copy) of ``rhs`` (B, C, H, W), and the systems per graph."""
        repeat = self._systems_per_graph(tuple(rhs.shape))
        batch, channels, height, width = rhs.shape
        # dtype conversions in NumPy (one thread): as torch ops they are parallel regions whose start-up
        # dominates on a busy CPU, for a few hundred thousand values
        # the compiled kernels take float32 and float64 (NumPy has no bfloat16): other dtypes go as float32
        # few torch calls: after a classifier's pass (or a solve) each one runs from memory
        work = rhs.detach() if rhs.device.type == "cpu" else rhs.detach().cpu()
        if work.dtype not in (torch.float32, torch.float64):
            work = work.float()
        host = work.numpy().reshape(batch * channels, height * width)
        return host, repeat

    @abstractmethod
    def _solve_systems(self, systems: np.ndarray, repeat: int, sequence: str | None) -> np.ndarray:
        """Solutions of every row of ``systems`` (``repeat`` consecutive rows per graph), in its dtype."""


def _as_tensor(out: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """The (B * C, n) solutions as a tensor of the shape, dtype and device of ``like``. Few torch calls: a
    solve leaves the caches full of its factor, and each call then runs from memory."""
    result = torch.from_numpy(out.reshape(like.shape))
    return result if like.device.type == "cpu" and like.dtype == result.dtype else result.to(like.device,
                                                                                               like.dtype)


#: Largest graph (in pixels) the Cholesky solves exactly in float64, in blocks of eight graphs whose
#: backward sweep finds the block's factor in cache (an MNIST batch). Larger graphs get float32 factors
#: refined to ``tol`` (memory traffic bounds their solves). Measured in ``docs/smoothing.md``.
EXACT_MAX_PIXELS = 4096

#: Fewest factor values (graphs x nnz(L)) an exact solve gives each thread of its own: below this (an MNIST
#: batch of a few hundred), starting the threads, and torch's OpenMP workers still spinning on the other
#: cores after the classifier, cost more than the split saves. Measured in ``docs/smoothing.md``.
MIN_VALUES_PER_THREAD = 2**21

#: The same on torch's own OpenMP threads (:mod:`~smoothadv.smoothing.team`), which take work at once
#: (16 MNIST guides, two blocks of eight); measured with the walk of all graphs at once that preceded the
#: blocks, where fewer graphs read too few values per index.
MIN_VALUES_PER_TEAM_THREAD = 2**17


class CholeskySolver(DirectSolver):
    """The batched grid Cholesky of :mod:`smoothadv.smoothing.cholesky` (see :class:`DirectSolver`).

    Up to :data:`EXACT_MAX_PIXELS` pixels the factors are float64 and every solve is exact to rounding.
    Above, they are float32 (three graphs side by side) and every solve is refined in float64 until
    ``||L_alpha x - b|| / ||b|| <= tol`` for each image and channel, measured before ``x`` is rounded to
    the dtype of ``b`` (the rounding of a float32 output adds its own error, as for every solver).
    Refined solves given the same ``sequence`` name (the smoother's forward signals, or its adjoint's
    gradients) start from the linear extrapolation of the last two solutions of that sequence, so the
    same signal smoothed twice can differ by up to the tolerance (about 1e-7 relative at ``tol`` 1e-6).

    Args:
        graph, alpha: as for :class:`LaplacianSolver`.
        tol: relative residual the refined solves guarantee.
        max_passes: most refinement corrections per solve; reaching it above ``tol`` warns.

    Attributes:
        refined: whether solves are refined (float32 factors).
        last_residual: the largest relative residual the last refined solve left (None when exact);
            last_passes: its corrections (the most over the groups of three graphs).
    """

    name = "cholesky"
    batched = True

    def __init__(self, graph: PixelGraph, alpha: float, *, tol: float = 1e-6, max_passes: int = 8):
        super().__init__(graph, alpha)
        check_positive(tol, "cholesky tol")
        check_positive_int(max_passes, "cholesky max_passes")
        self.tol, self.max_passes = float(tol), max_passes
        height, width = graph.normalized_weights.shape[-2:]
        self.pattern = cholesky.grid_pattern(height, width, tuple(graph.offsets))
        self.refined = self.pattern.size > EXACT_MAX_PIXELS
        self._factors: dict[int, object] = {}  # per repeat of each graph (a joint graph: every channel)
        if self.refined:
            self._make = self._lane_factor
        else:
            values = _batched_matrix_values(graph, self.pattern, alpha)  # (nnz(A), B * G)
            graphs = self.batch * self.groups
            least = MIN_VALUES_PER_TEAM_THREAD if team.available() else MIN_VALUES_PER_THREAD
            threads = max(1, min(torch.get_num_threads(), graphs * self.pattern.factor_nonzeros // least))
            self.spans = _block_spans(graphs, threads, cholesky.EXACT_LANES)
            exact = _thread_map(lambda span: cholesky.ExactFactor(
                self.pattern, cholesky.factorize(self.pattern, values[:, span])), self.spans)
            self._make = lambda repeat: [part.repeated(repeat) for part in exact]
            self._factors[1] = exact
        #: per (sequence, repeat): the last two (solution, product) pairs, oldest first
        self._history: dict[tuple[str, int], list[tuple[np.ndarray, np.ndarray]]] = {}
        self._divisors: dict[tuple, tuple[torch.Tensor, np.ndarray]] = {}  # see _host_divisor
        #: per (shape, dtype, division): the divisor and the plan of exact solves (see _exact_plan)
        self._plans: dict[tuple, tuple[torch.Tensor | None, cholesky.ExactPlan | None]] = {}
        self.last_passes = 0

    def _lane_factor(self, repeat: int) -> cholesky.LaneFactor:
        """The float32 factors, three graphs side by side, each sweep cut into :func:`sweep_parts` parts
        (fixed here, when the factors are built)."""
        height, width = self.graph.normalized_weights.shape[-2:]
        groups = -(-self.batch * self.groups * repeat // cholesky.LANES)
        pattern = cholesky.grid_pattern(height, width, tuple(self.graph.offsets), sweep_parts(groups))
        values = _batched_matrix_values(self.graph, pattern, self.alpha)
        return cholesky.LaneFactor(pattern, np.repeat(values, repeat, axis=1),
                                   off_diagonal_scale=_off_diagonal_scale(self.alpha))

    def factors(self, repeat: int):
        """The factors with each graph repeated for ``repeat`` channels, built on first use: a
        :class:`~smoothadv.smoothing.cholesky.LaneFactor` when refined, else one (nnz(L), k) array per
        thread's span of graphs."""
        if repeat not in self._factors:
            self._factors[repeat] = self._make(repeat)
        return self._factors[repeat]

    @property
    def factor_nonzeros(self) -> int:
        """Stored factor values: L per graph."""
        return self.pattern.factor_nonzeros * self.batch * self.groups

    def solve(self, rhs: torch.Tensor, sequence: str | None = None) -> torch.Tensor:
        solved = None if self.refined else self._solve_exact_tensor(rhs, None, cholesky.DIVIDE_NONE)
        return super().solve(rhs, sequence) if solved is None else solved

    def solve_divided(self, rhs: torch.Tensor, divisor: torch.Tensor, *, before: bool,
                      sequence: str | None = None) -> torch.Tensor:
        """:meth:`LaplacianSolver.solve_divided`; exact solves divide as they pack or unpack the systems
        (no pass of their own over memory), in the dtype of ``rhs``, with the same values."""
        if self.refined or rhs.dtype not in (torch.float32, torch.float64):
            return super().solve_divided(rhs, divisor, before=before, sequence=sequence)
        divide = cholesky.DIVIDE_BEFORE if before else cholesky.DIVIDE_AFTER
        solved = self._solve_exact_tensor(rhs, divisor, divide)
        if solved is not None:
            return solved
        host, repeat = self._host_systems(rhs)
        return _as_tensor(self._solve_exact(host, repeat, self._host_divisor(divisor, rhs), divide), rhs)

    def _solve_exact_tensor(self, rhs: torch.Tensor, divisor: torch.Tensor | None,
                            divide: int) -> torch.Tensor | None:
        """The exact solve of a C-contiguous float32 or float64 CPU tensor straight from and into tensors,
        through a plan kept per layout (:meth:`_exact_plan`). A few torch calls only: after a classifier's
        pass each one runs from memory, and the copies, views and checks of the way through NumPy cost a
        good share of an MNIST solve (docs/smoothing.md).

        Args:
            rhs: (B, C, H, W) right-hand sides.
            divisor: (B, G, H, W) as for :meth:`solve_divided`, or None with ``divide`` DIVIDE_NONE.
            divide: a ``cholesky.DIVIDE_*`` mode.

        Returns:
            (B, C, H, W) solutions of the dtype of ``rhs``; None for a right-hand side that takes the way
            through NumPy (another device, dtype or layout, no values, or blocks for several threads
            while torch's team is not available: threads of our own then run them).
        """
        if not (rhs.is_cpu and rhs.is_contiguous()):
            return None
        key = (rhs.shape, rhs.dtype, divide)
        kept = self._plans.get(key)
        if kept is None or kept[0] is not divisor:
            kept = self._plans[key] = (divisor, self._exact_plan(rhs, divisor, divide))
        plan = kept[1]
        if plan is None or (len(plan.factors) > 1 and not team.available()):
            return None
        out = torch.empty_like(rhs)
        plan.run(rhs.data_ptr(), out.data_ptr())
        return out

    def _exact_plan(self, rhs: torch.Tensor, divisor: torch.Tensor | None,
                    divide: int) -> cholesky.ExactPlan | None:
        """The plan of exact solves of right-hand sides shaped like ``rhs``, or None for those of another
        dtype or without values (arguments as for :meth:`_solve_exact_tensor`).

        Raises:
            ShapeError: see :meth:`_systems_per_graph`.
        """
        repeat = self._systems_per_graph(tuple(rhs.shape))
        if rhs.dtype not in (torch.float32, torch.float64) or rhs.numel() == 0:
            return None
        host_divisor = None if divisor is None else self._host_divisor(divisor, rhs)
        dtype = np.float32 if rhs.dtype == torch.float32 else np.float64
        return cholesky.ExactPlan(self.factors(repeat), dtype, host_divisor, divide)

    def _host_divisor(self, divisor: torch.Tensor, rhs: torch.Tensor) -> np.ndarray:
        """(B * C, n) C-contiguous NumPy array of ``divisor`` broadcast to ``rhs``, in its dtype (a view of
        it when it needs no copy); kept for the next call with the same divisor (the smoother's DC gain,
        on every solve of an attack), which must not change in place meanwhile."""
        key = (rhs.dtype, tuple(rhs.shape))
        cached = self._divisors.get(key)
        if cached is None or cached[0] is not divisor:
            systems = rhs.shape[0] * rhs.shape[1]
            pixels = rhs.shape[2] * rhs.shape[3]
            host = divisor.detach().to("cpu", rhs.dtype).expand(rhs.shape).reshape(systems, pixels)
            cached = self._divisors[key] = (divisor, np.ascontiguousarray(host.numpy()))
        return cached[1]

    def _solve_exact(self, systems: np.ndarray, repeat: int, divisor: np.ndarray | None = None,
                     divide: int = cholesky.DIVIDE_NONE) -> np.ndarray:
        parts = self.factors(repeat)
        if len(parts) > 1 and team.available():
            systems = np.ascontiguousarray(systems)
            out = np.empty_like(systems)
            cholesky.solve_blocks(parts, systems, out, divisor=divisor, divide=divide)
            return out
        out = np.empty(systems.shape, systems.dtype)

        def run_exact(index):
            rows = slice(self.spans[index].start * repeat, self.spans[index].stop * repeat)
            cholesky.solve(parts[index], systems[rows], out=out[rows],
                           divisor=None if divisor is None else divisor[rows], divide=divide)

        _thread_map(run_exact, list(range(len(self.spans))))
        return out

    def _solve_systems(self, systems: np.ndarray, repeat: int, sequence: str | None) -> np.ndarray:
        if not self.refined:
            return self._solve_exact(systems, repeat)
        factor = self.factors(repeat)
        rhs = factor.pack(systems)
        history = self._history.setdefault((sequence, repeat), []) if sequence is not None else []
        solution, product = np.empty_like(rhs), np.empty_like(rhs)

        def run(group):
            # the warm start: the extrapolation of the last two solutions of the sequence (an attack's
            # signals move by similar steps, so it is closer than the last one), or the last one alone
            start = None if not history else tuple(
                pair[item][group] for item in (0, 1) for pair in (history[0], history[-1]))
            return factor.solve_group(group, rhs[group], solution[group], product[group], start=start,
                                      tol=self.tol, max_passes=self.max_passes)

        # parts run on torch's threads only when started from this thread (a thread of a pool would start
        # a team of its own): the groups then go one after another, each on all the threads
        on_team = factor.pattern.parts > 1 and team.available()
        results = [run(group) for group in range(factor.groups)] if on_team else _thread_map(
            run, list(range(factor.groups)))
        if sequence is not None:
            history[:] = [*history[-1:], (solution, product)]
        self.last_passes = max(passes for passes, _ in results)
        self.last_residual = float(max(relative.max() for _, relative in results))
        if self.last_residual > self.tol:
            warn(f"the Cholesky refinement left relative residual {self.last_residual:.2e} > tol "
                 f"{self.tol:.0e} after {self.last_passes} corrections; lower alpha or use solver='superlu'.",
                 ConvergenceWarning)
        return factor.unpack(solution, systems.dtype)


class SuperLUSolver(DirectSolver):
    """One SciPy SuperLU factor per graph, float64 (see :class:`DirectSolver`)."""

    name = "superlu"

    def __init__(self, graph: PixelGraph, alpha: float):
        super().__init__(graph, alpha)
        matrices = [m for row in assemble_sparse(graph, alpha) for m in row]  # graph order (b, g)
        self.factors = _thread_map(_factorize, matrices)

    @property
    def factor_nonzeros(self) -> int:
        """Stored factor values: L + U per graph."""
        return sum(factor.L.nnz + factor.U.nnz for factor in self.factors)

    def _solve_systems(self, systems: np.ndarray, repeat: int, sequence: str | None) -> np.ndarray:
        flat = systems.astype(np.float64, copy=False)
        out = np.empty_like(flat)

        def run_one(index):
            rows = slice(index * repeat, (index + 1) * repeat)
            # the transpose of a C-ordered (channels, n) block is the Fortran-ordered array SuperLU
            # works on, so no extra copy is made
            out[rows] = self.factors[index].solve(flat[rows].T).T

        _thread_map(run_one, list(range(len(self.factors))))
        return out.astype(systems.dtype, copy=False)


def _batched_matrix_values(graph: PixelGraph, pattern, alpha: float) -> np.ndarray:
    """Entries of every ``L_alpha`` in the batched pattern's order: (nnz(A), B * G) float64."""
    weights = graph.normalized_weights
    batch, groups = weights.shape[:2]
    flat = weights.detach().to("cpu", torch.float64).reshape(batch * groups, -1).numpy()
    source = pattern.matrix_source
    values = np.full((len(source), batch * groups), 1.0 / (1.0 - alpha))
    off_diagonal = source >= 0
    values[off_diagonal] = _off_diagonal_scale(alpha) * flat[:, source[off_diagonal]].T
    return values


def _off_diagonal_scale(alpha: float) -> float:
    """``-alpha / (1 - alpha)``, the factor of the weights in the off-diagonal entries of ``L_alpha``, rounded
    as :func:`_batched_matrix_values` computes it."""
    return -alpha * (1.0 / (1.0 - alpha))


#: Environment settings under which the OpenMP runtime behind torch lets its idle workers sleep soon after a
#: parallel region (GNU: at most this many spins; LLVM/Intel: a block time of 0) instead of spinning on the
#: cores for milliseconds.
YIELDING_SPIN_COUNT = 100_000


def openmp_workers_yield() -> bool:
    """Whether the environment asks torch's OpenMP workers to yield their cores soon after each parallel
    region: ``OMP_WAIT_POLICY=passive``, ``GOMP_SPINCOUNT`` at most :data:`YIELDING_SPIN_COUNT`, or
    ``KMP_BLOCKTIME=0``. The runtime reads them once, when torch loads it, so they must be set before
    Python starts; this reads ``os.environ`` now, and a variable set later makes it answer yes while the
    workers still spin."""
    if os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive":
        return True
    if os.environ.get("KMP_BLOCKTIME", "").strip() == "0":
        return True
    spins = os.environ.get("GOMP_SPINCOUNT", "").strip()
    return spins.isdigit() and int(spins) <= YIELDING_SPIN_COUNT


def sweep_parts(groups: int) -> int:
    """Parts of each refined sweep that run at once, for ``groups`` groups of three graphs.

    Where :func:`~smoothadv.smoothing.team.available`, fewer groups than ``torch.get_num_threads()`` get
    that many parts each, run on torch's own OpenMP threads, the groups one after another. Otherwise the
    groups share the threads, and parts run on threads of our own only when :func:`openmp_workers_yield`:
    torch's workers, spinning after the classifier's last parallel region, would hold the cores those
    threads need, and parts measured slower than one sweep (``docs/smoothing.md``, "Two threads")."""
    threads = torch.get_num_threads()
    if team.available():
        return threads if groups < threads else 1
    if not openmp_workers_yield():
        return 1
    return max(1, threads // groups)


def _spans(count: int, parts: int) -> list[slice]:
    """``count`` items cut into at most ``parts`` contiguous, nearly equal slices."""
    bounds = np.linspace(0, count, min(parts, count) + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _block_spans(count: int, parts: int, block: int) -> list[slice]:
    """:func:`_spans` of ``count`` items whose bounds fall on multiples of ``block`` (but the last), so
    that cutting a batch for threads adds no partly filled block of lanes."""
    blocks = -(-count // block)
    return [slice(span.start * block, min(span.stop * block, count)) for span in _spans(blocks, parts)]


def _factorize(matrix: scipy.sparse.csc_matrix):
    """SuperLU factorisation of a symmetric positive definite matrix (no pivoting needed)."""
    return scipy.sparse.linalg.splu(
        matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True}
    )


def _thread_map(function, items: list) -> list:
    """``[function(item) for item in items]`` on up to ``torch.get_num_threads()`` threads."""
    workers = min(len(items), torch.get_num_threads())
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items))


class IterativeSolver(LaplacianSolver):
    """Matrix-free solvers that guarantee a relative residual ``||L x - b|| / ||b|| <= tol``.

    A subclass implements one pass (:meth:`_pass`) in the dtype of the right-hand side. :meth:`solve`
    then measures the true residual of every system with a product in float64 (float32 on MPS, which has
    no float64) and, where rounding or the recursion left it above ``tol``, solves the residual equation
    again and adds the correction in that precision, up to :attr:`max_refinements` times and ``maxiter``
    steps in all. A float32 solve thus meets 1e-6 although its own recursions drift (CG's recursive
    residual can claim 1e-6 while the true one is 8e-6).

    Attributes:
        tol, maxiter: as given (checked). last_iterations: steps spent by the last :meth:`solve` (all
        passes). last_residual: the largest true relative residual it left.
    """

    kind = "iterative"
    label = "iterative solver"
    max_refinements = 3

    def __init__(self, graph: PixelGraph, alpha: float, *, tol: float = 1e-6, maxiter: int = 1000):
        super().__init__(graph, alpha)
        check_positive(tol, f"{self.name} tol")
        check_positive_int(maxiter, f"{self.name} maxiter")
        self.tol, self.maxiter = tol, maxiter
        self.last_iterations = 0
        self.last_residual = float("nan")

    def solve(self, rhs: torch.Tensor, sequence: str | None = None) -> torch.Tensor:
        exact = torch.float32 if rhs.device.type == "mps" else torch.float64
        target = rhs.to(exact)
        norms = target.pow(2).sum((-2, -1)).sqrt()
        solution, residual = torch.zeros_like(target), target
        reduction, steps, passes = self.tol, 0, 0
        while True:
            correction, used = self._pass(residual.to(rhs.dtype), reduction, self.maxiter - steps)
            solution = solution + correction.to(exact)
            steps, passes = steps + used, passes + 1
            residual = target - self.matvec(solution)
            per_system = residual.pow(2).sum((-2, -1)).sqrt() / norms.clamp_min(torch.finfo(exact).tiny)
            relative = float(torch.where(norms > 0, per_system, 0.0).amax())
            if relative <= self.tol or passes > self.max_refinements or steps >= self.maxiter:
                break
            reduction = min(0.5, 0.5 * self.tol / relative)  # what the correction must achieve, margin 2
        self.last_iterations, self.last_residual = steps, relative
        if relative > self.tol:
            warn(f"{self.label} left relative residual {relative:.2e} > tol {self.tol:.0e} after {steps} "
                 f"steps in {passes} pass(es); raise maxiter, lower alpha, or use solver='direct' for an "
                 "exact solve.", ConvergenceWarning)
        return solution.to(rhs.dtype)

    def _pass(self, rhs: torch.Tensor, reduction: float, budget: int) -> tuple[torch.Tensor, int]:
        """Approximate ``L^-1 rhs`` aiming at ``||L x - rhs|| <= reduction ||rhs||`` in at most ``budget``
        steps; returns (x, steps used)."""
        raise NotImplementedError


class CGSolver(IterativeSolver):
    """Batched, matrix-free conjugate gradient: one independent system per image and channel.

    Args:
        graph, alpha: as for :class:`LaplacianSolver`.
        tol: guaranteed ``||L x - b|| <= tol * ||b||`` (see :class:`IterativeSolver`).
        maxiter: step cap over all passes; reaching it with a residual above ``tol`` warns with the
            residual reached.
    """

    name = "cg"
    label = "conjugate gradient"
    #: Convergence is tested every this many iterations (each test synchronises a GPU).
    check_every = 10

    def _pass(self, rhs: torch.Tensor, reduction: float, budget: int) -> tuple[torch.Tensor, int]:
        dims = (-2, -1)
        solution = torch.zeros_like(rhs)
        residual = rhs.clone()
        direction = residual.clone()
        rr = residual.pow(2).sum(dims, keepdim=True)
        threshold = reduction**2 * rr
        iteration = 0
        while iteration < budget:
            iteration += 1
            product = self.matvec(direction)
            curvature = (direction * product).sum(dims, keepdim=True)
            active = rr > threshold
            step = torch.where(active, rr / torch.where(active, curvature, 1.0), 0.0)
            solution = solution + step * direction
            residual = residual - step * product
            rr_new = residual.pow(2).sum(dims, keepdim=True)
            direction = residual + torch.where(active, rr_new / torch.where(active, rr, 1.0), 0.0) * direction
            rr = rr_new
            if iteration % self.check_every == 0 and not bool((rr > threshold).any()):
                break
        return solution, iteration


def chebyshev_bound(lower: float, upper: float, iterations: int) -> float:
    """Largest relative residual ``||b - L x_k|| / ||b||`` that ``iterations`` Chebyshev steps from
    ``x_0 = 0`` can leave for a symmetric matrix with spectrum in ``[lower, upper]``, in exact arithmetic:
    ``2 rho^k / (1 + rho^(2k))``, ``rho = (sqrt(kappa) - 1) / (sqrt(kappa) + 1)``, ``kappa = upper / lower``.
    """
    root = math.sqrt(upper / lower)
    rho = (root - 1.0) / (root + 1.0)
    power = rho**iterations
    return 2.0 * power / (1.0 + power * power)


def chebyshev_iterations(lower: float, upper: float, tol: float) -> int:
    """The fewest Chebyshev steps whose residual bound (:func:`chebyshev_bound`) is at most ``tol``
    (188 for ``L_alpha`` at alpha 0.997 and tol 1e-6)."""
    root = math.sqrt(upper / lower)
    if root - 1.0 < 1e-12:  # the identity: one step is exact
        return 1
    rho = (root - 1.0) / (root + 1.0)
    iterations = max(1, math.ceil(math.log(2.0 / tol) / -math.log(rho)))
    while iterations > 1 and chebyshev_bound(lower, upper, iterations - 1) <= tol:
        iterations -= 1
    return iterations


class ChebyshevSolver(IterativeSolver):
    """Batched, matrix-free Chebyshev iteration on the spectrum ``[1, (1 + alpha) / (1 - alpha)]`` of
    ``L_alpha`` (exact for 4-neighbour grids, which are bipartite; an enclosure for 8 neighbours).

    Each step is one stencil product and three vector updates with coefficients computed on the host in
    advance: no inner product, so no host synchronisation inside a pass (on a GPU the whole pass is
    queued at once). The number of steps comes from the residual bound :func:`chebyshev_bound`; a
    correction pass (see :class:`IterativeSolver`) takes only the steps its reduction needs.

    Args:
        graph, alpha: as for :class:`LaplacianSolver`.
        tol: relative residual ``||L x - b|| / ||b||`` to guarantee.
        maxiter: step cap over all passes (below the bound's count, a warning reports the residual).

    Attributes:
        iterations: steps of the first pass (from the bound, at most ``maxiter``).
    """

    name = "chebyshev"
    label = "Chebyshev iteration"

    def __init__(self, graph: PixelGraph, alpha: float, *, tol: float = 1e-6, maxiter: int = 1000):
        super().__init__(graph, alpha, tol=tol, maxiter=maxiter)
        self.lower, self.upper = 1.0, (1.0 + self.alpha) / (1.0 - self.alpha)
        self.iterations = min(chebyshev_iterations(self.lower, self.upper, tol), maxiter)

    def _pass(self, rhs: torch.Tensor, reduction: float, budget: int) -> tuple[torch.Tensor, int]:
        steps = min(chebyshev_iterations(self.lower, self.upper, reduction), budget)
        return self._iterate(rhs, steps), steps

    def _iterate(self, rhs: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` Chebyshev steps from ``x_0 = 0`` (Saad, Iterative Methods, Alg. 12.1)."""
        centre, half_width = (self.upper + self.lower) / 2.0, (self.upper - self.lower) / 2.0
        solution = rhs / centre
        if half_width == 0.0:
            return solution
        residual = rhs - self.matvec(solution)
        sigma = centre / half_width
        rho = 1.0 / sigma
        direction = solution
        for _ in range(steps - 1):
            rho_next = 1.0 / (2.0 * sigma - rho)
            direction = (rho_next * rho) * direction + (2.0 * rho_next / half_width) * residual
            solution = solution + direction
            residual = residual - self.matvec(direction)
            rho = rho_next
        return solution


#: The solver registry: ``Smoothing(solver=NAME)`` and :func:`make_solver` take these names
#: (``"direct"`` is ``"cholesky"``).
SOLVERS: dict[str, type[LaplacianSolver]] = {
    "dense": DenseSolver,
    "cholesky": CholeskySolver,
    "superlu": SuperLUSolver,
    "cg": CGSolver,
    "chebyshev": ChebyshevSolver,
}


def make_solver(name: str, graph: PixelGraph, alpha: float, *, tol: float = 1e-6,
                maxiter: int = 1000) -> LaplacianSolver:
    """Set up solver ``name`` (a :data:`SOLVERS` key or ``"direct"``, the Cholesky) for ``graph``; ``tol``
    is the residual the iterative solvers (CG, Chebyshev) and the refined Cholesky guarantee, ``maxiter``
    caps the iterative solvers.

    Raises:
        ConfigError: unknown name.
    """
    if name == "direct":
        name = "cholesky"
    if name not in SOLVERS:
        raise ConfigError(f"unknown solver {name!r}; choose one of direct, {', '.join(SOLVERS)}.")
    if SOLVERS[name].kind == "iterative":
        return SOLVERS[name](graph, alpha, tol=tol, maxiter=maxiter)
    if name == "cholesky":
        return CholeskySolver(graph, alpha, tol=tol)
    return SOLVERS[name](graph, alpha)
