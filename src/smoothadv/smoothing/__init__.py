"""Image-guided Laplacian smoothing (paper section 3): graph -> regularised Laplacian -> solver; and the
linear perturbation operators attacks optimise through (guided, Gaussian low-pass, DCT subspace)."""

from smoothadv.smoothing.graph import PixelGraph, build_graph
from smoothadv.smoothing.operator import GuidedSmoother, Smoothing, choose_solver, smooth
from smoothadv.smoothing.perturbation import (
    OPERATOR_KINDS,
    DCTSubspace,
    GaussianLowPass,
    PerturbationOperator,
    PreparedOperator,
    check_operator,
    describe_operator,
)
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
    "OPERATOR_KINDS",
    "DCTSubspace",
    "GaussianLowPass",
    "PerturbationOperator",
    "PreparedOperator",
    "check_operator",
    "describe_operator",
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
