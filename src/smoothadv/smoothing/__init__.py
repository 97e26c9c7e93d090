"""Image-guided Laplacian smoothing (paper section 3): graph -> regularised Laplacian -> solver."""

from smoothadv.smoothing.graph import PixelGraph, build_graph
from smoothadv.smoothing.operator import GuidedSmoother, Smoothing, choose_solver, smooth
from smoothadv.smoothing.solvers import CGSolver, DenseSolver, DirectSolver, LaplacianSolver

__all__ = [
    "CGSolver",
    "DenseSolver",
    "DirectSolver",
    "GuidedSmoother",
    "LaplacianSolver",
    "PixelGraph",
    "Smoothing",
    "build_graph",
    "choose_solver",
    "smooth",
]
