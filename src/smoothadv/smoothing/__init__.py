"""Image-guided Laplacian smoothing (paper section 3): graph -> regularised Laplacian -> solver."""

from smoothadv.smoothing.graph import PixelGraph, build_graph
from smoothadv.smoothing.operator import GuidedSmoother, Smoothing, choose_solver, smooth
from smoothadv.smoothing.solvers import (
    SOLVERS,
    CGSolver,
    CholeskySolver,
    DenseSolver,
    DirectSolver,
    LaplacianSolver,
    SuperLUSolver,
    make_solver,
)

__all__ = [
    "SOLVERS",
    "CGSolver",
    "CholeskySolver",
    "DenseSolver",
    "DirectSolver",
    "GuidedSmoother",
    "LaplacianSolver",
    "PixelGraph",
    "Smoothing",
    "SuperLUSolver",
    "build_graph",
    "choose_solver",
    "make_solver",
    "smooth",
]
