"""The smoothing operator ``s_alpha`` (eq. 8) and its normalised form ``s_hat_alpha`` (eq. 9).

``s_alpha(z) = L_alpha^{-1} z`` returns the signal closest to ``z`` that is smooth like the guide image
``x_o`` (the minimiser of eq. 6). ``s_hat_alpha(z) = diag(s_alpha(1))^{-1} s_alpha(z)`` divides each pixel
by the operator's DC gain so that a constant signal is left unchanged (dynamic range preserved).

Both are linear in ``z``, so their backward pass is another smoothing (eq. 19): the adjoint of
``s_alpha`` is ``s_alpha`` itself (``L_alpha`` is symmetric) and the adjoint of ``s_hat_alpha`` is
``g -> s_alpha(g / s_alpha(1))``. Gradients never flow through solver iterations, and never into the
guide: the graph is a constant of the attack.

Usage::

    smoother = Smoothing(alpha=0.95).prepare(guide)   # graph + factorisation, once per guide
    r = smoother(z)                                    # s_hat_alpha(z), differentiable in z
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch.autograd.function import once_differentiable

from smoothadv.core.errors import ConfigError, InputError, RangeError
from smoothadv.core.validation import (
    check_choice,
    check_finite,
    check_image_batch,
    check_keywords,
    check_same_shape,
)
from smoothadv.smoothing.graph import CHANNEL_MODES, KERNELS, NEIGHBOUR_OFFSETS, build_graph
from smoothadv.smoothing.solvers import SOLVERS, make_solver

SOLVER_NAMES = ("auto", "direct", *SOLVERS)
#: Largest image (in pixels) for which ``solver="auto"`` precomputes dense inverses on a GPU (32 x 32).
DENSE_MAX_PIXELS = 1024
#: Memory budget of the dense inverses of one batch under ``solver="auto"``.
DENSE_MAX_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Smoothing:
    """Configuration of the guided Laplacian smoothing; :meth:`prepare` binds it to guide images.

    Defaults follow the paper's MNIST setting (section 5.2.4: Laplacian feature kernel, alpha 0.95)
    with the authors' graph (4 neighbours, one graph per channel); see :mod:`smoothadv.attacks.presets`
    for the ImageNet values.

    Attributes:
        alpha: smoothing strength in [0, 1): 0 is the identity, values near 1 smooth over long ranges.
        neighbourhood: 4 or 8 grid neighbours. 4 is the authors' choice and the cheapest.
        kernel: ``"laplacian"`` ``exp(-d / sigma)`` (the paper's choice) or ``"gaussian"``
            ``exp(-d^2 / (2 sigma^2))``.
        sigma: feature-kernel width in [0, 1] intensity units; 0.1 is the authors' MNIST value
            (``exp(-10 |d|)``).
        channels: ``"per_channel"`` (each channel guides its own graph, the authors' experiments; the
            default because it reproduces their results and keeps each channel's edges) or ``"joint"``
            (one graph, Euclidean distance over channels, eq. 5 as written).
        solver: ``"auto"`` (direct on CPU; on GPU dense for images up to 32x32 pixels, else
            chebyshev), ``"direct"`` (the batched ``"cholesky"``: exact in float64 up to 4096 pixels,
            float32 factors refined to ``cg_tol`` above), or any name of the registry
            :data:`~smoothadv.smoothing.solvers.SOLVERS`: ``"dense"``, ``"cholesky"``, ``"superlu"``
            (float64, exact to rounding), ``"cg"``, ``"chebyshev"``.
        cg_tol: relative residual ``||L_alpha x - z|| / ||z||`` the iterative solvers (CG, Chebyshev) and
            the refined Cholesky guarantee for every image and channel.
        cg_maxiter: iteration cap of the iterative solvers (a warning reports the residual when it binds).
    """

    kind: ClassVar[str] = "guided"
    alpha: float = 0.95
    neighbourhood: int = 4
    kernel: str = "laplacian"
    sigma: float = 0.1
    channels: str = "per_channel"
    solver: str = "auto"
    cg_tol: float = 1e-6
    cg_maxiter: int = 1000

    def __post_init__(self):
        if not isinstance(self.alpha, (int, float)) or not 0.0 <= float(self.alpha) < 1.0:
            raise RangeError(
                "alpha must lie in [0, 1) (0 = no smoothing, 0.95 = paper's MNIST value); "
                f"got {self.alpha!r}."
            )
        check_choice(self.neighbourhood, tuple(NEIGHBOUR_OFFSETS), "neighbourhood")
        check_choice(self.kernel, KERNELS, "kernel")
        check_choice(self.channels, CHANNEL_MODES, "channels")
        check_choice(self.solver, SOLVER_NAMES, "solver")
        if not isinstance(self.sigma, (int, float)) or not float(self.sigma) > 0:
            raise ConfigError(f"sigma must be > 0; got {self.sigma!r}.")

    def with_options(self, **changes) -> Smoothing:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """The parameters results record (the fields, as sC&W and qPGD2 have always recorded them)."""
        return vars(self).copy()

    def prepare(self, guide: torch.Tensor) -> GuidedSmoother:
        """Build the graphs of ``guide`` (B, C, H, W) in [0, 1] and set up the solver, once per guide."""
        return GuidedSmoother(guide, self)


Smoothing.__init__ = check_keywords(Smoothing.__init__)  # a misspelled option names the close ones


def choose_solver(config: Smoothing, guide: torch.Tensor) -> str:
    """Solver used for ``guide`` under ``config`` (resolves ``"auto"``).

    On CPU the sparse factorisation wins at every size we measured (a dense product reads n^2 entries
    per image and is memory-bound; measurements in ``docs/smoothing.md``). On a GPU, dense inverses of
    small images are one batched product; larger images use the Chebyshev iteration, chosen over CG from
    first principles (no inner products, so no host synchronisation per step; a fixed step count) and not
    yet measured on a GPU: ``benchmarks/gpu_check.sh`` measures both.
    """
    if config.solver != "auto":
        return config.solver
    if guide.device.type == "cpu":
        return "direct"
    batch, channels, height, width = guide.shape
    groups = channels if config.channels == "per_channel" else 1
    pixels = height * width
    dense_bytes = batch * groups * pixels * pixels * guide.element_size()
    if pixels <= DENSE_MAX_PIXELS and dense_bytes <= DENSE_MAX_BYTES:
        return "dense"
    return "chebyshev"


class GuidedSmoother:
    """``s_alpha`` and ``s_hat_alpha`` guided by a batch of images, with the solver set up once.

    Args:
        guide: (B, C, H, W) guide images ``x_o`` in [0, 1]; detached (no gradient flows to it).
        config: smoothing configuration.

    Attributes:
        solver: the :class:`~smoothadv.smoothing.solvers.LaplacianSolver` in use (``solver.name``).
        dc_gain: (B, G, H, W) ``s_alpha(1)``, the denominator of eq. (9); G = 1 or C.
    """

    def __init__(self, guide: torch.Tensor, config: Smoothing | None = None):
        config = config or Smoothing()
        check_image_batch(guide, "guide")
        self.config = config
        self.guide_shape = tuple(guide.shape)
        guide = guide.detach()
        graph = build_graph(
            guide,
            neighbourhood=config.neighbourhood,
            kernel=config.kernel,
            sigma=config.sigma,
            channels=config.channels,
        )
        self.solver = make_solver(choose_solver(config, guide), graph, config.alpha, tol=config.cg_tol,
                                  maxiter=config.cg_maxiter)
        ones = torch.ones(guide.shape[0], graph.num_graphs, *guide.shape[2:], dtype=guide.dtype,
                          device=guide.device)
        self.dc_gain = self.solver.solve(ones)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """``s_hat_alpha(z)`` (eq. 9), differentiable in ``z``; z of shape (B, C, H, W)."""
        return self.smooth(z, normalize=True)

    def smooth(self, z: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """``s_hat_alpha(z)`` (eq. 9) when ``normalize``, else ``s_alpha(z)`` (eq. 8); differentiable.

        Args:
            z: (B, C, H, W) signal, same shape as the guide; any finite values.

        Returns:
            (B, C, H, W) smoothed signal, same dtype and device as ``z``.
        """
        self._check_signal(z)
        return _SmoothFunction.apply(z, self, normalize)

    def adjoint(self, g: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Adjoint ``s_hat_alpha^T g = s_alpha(g / s_alpha(1))`` (or ``s_alpha^T = s_alpha``); not tracked."""
        self._check_signal(g)
        return self._adjoint(g.detach(), normalize)

    def matvec(self, values: torch.Tensor) -> torch.Tensor:
        """``L_alpha v`` (the inverse of ``s_alpha``), matrix-free; v of shape (B, C, H, W)."""
        self._check_signal(values)
        return self.solver.matvec(values)

    @property
    def last_residual(self) -> float | None:
        """Largest relative residual ``||L_alpha x - b|| / ||b||`` of the last solve (forward or adjoint),
        measured in float64 by the solver; None for the solvers exact to rounding, which do not measure it
        (dense, SuperLU, the float64 Cholesky of images up to 4096 pixels)."""
        return self.solver.last_residual

    def _forward(self, z: torch.Tensor, normalize: bool) -> torch.Tensor:
        if normalize:
            return self.solver.solve_divided(z, self.dc_gain, before=False, sequence="forward")
        return self.solver.solve(z, sequence="forward")

    def _adjoint(self, g: torch.Tensor, normalize: bool) -> torch.Tensor:
        if normalize:
            return self.solver.solve_divided(g, self.dc_gain, before=True, sequence="adjoint")
        return self.solver.solve(g, sequence="adjoint")

    def _check_signal(self, z: torch.Tensor) -> None:
        check_signal(z, self.guide_shape)


def check_signal(z: torch.Tensor, guide_shape: tuple[int, ...]) -> None:
    """Check a signal (or gradient) given to an operator bound to guides of ``guide_shape`` (B, C, H, W).

    Raises:
        InputError: not a floating-point tensor. ShapeError: not the guides' shape.
        NonFiniteError: NaN or inf values.
    """
    if not isinstance(z, torch.Tensor):
        raise InputError(f"the signal to smooth must be a torch.Tensor, got {type(z).__name__}.")
    if not z.is_floating_point():
        raise InputError(
            f"the signal to smooth must be a floating-point tensor, got dtype {z.dtype}; "
            "convert it with z.float() (or z.double())."
        )
    check_same_shape(z, guide_shape, "signal", "guide")
    # A finite sum proves every value finite, in one reduction (read as a Python float: a torch call fewer,
    # each of which runs from memory after a classifier's pass, docs/smoothing.md); the element-wise check
    # (several passes) runs only otherwise, and also tells a real NaN/inf from a sum that merely overflowed.
    if not math.isfinite(z.detach().sum().item()):
        check_finite(z, "signal")


class _SmoothFunction(torch.autograd.Function):
    """Linear map whose backward pass is the adjoint solve, not autodiff through solver iterations."""

    @staticmethod
    def forward(ctx, z, smoother: GuidedSmoother, normalize: bool):
        ctx.smoother, ctx.normalize = smoother, normalize
        return smoother._forward(z.detach(), normalize)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        return ctx.smoother._adjoint(grad_output, ctx.normalize), None, None


def smooth(z: torch.Tensor, guide: torch.Tensor, alpha: float = 0.95, *, normalize: bool = True,
           **options) -> torch.Tensor:
    """One-shot guided smoothing: ``s_hat_alpha(z)`` (eq. 9) or, with ``normalize=False``, ``s_alpha(z)``.

    Prefer ``Smoothing(...).prepare(guide)`` when smoothing several signals with the same guide: the
    graph and the factorisation are then built once.

    Args:
        z: (B, C, H, W) signal.
        guide: (B, C, H, W) guide images in [0, 1].
        alpha: smoothing strength in [0, 1).
        normalize: divide by ``s_alpha(1)`` (eq. 9).
        **options: other :class:`Smoothing` fields (``kernel``, ``sigma``, ``solver``, ...).
    """
    return Smoothing(alpha=alpha, **options).prepare(guide).smooth(z, normalize=normalize)
