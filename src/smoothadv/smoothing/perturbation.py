"""Linear perturbation operators ``P``: an attack optimises a latent ``z`` and perturbs by ``r = P(z)``.

Every operator is a frozen configuration with ``prepare(guide)`` that returns a
:class:`PreparedOperator` bound to a batch of images: ``op(z)`` (differentiable, linear in ``z``) and
``op.adjoint(g)``. An attack given any of them optimises ``z`` through ``x = clip(x_o + P(z))``
(eqs. 13, 17-18), so one mechanism makes every attack smooth.

* ``"guided"``: the paper's ``s_hat_alpha`` (eq. 9), guided by the image itself:
  :class:`~smoothadv.smoothing.operator.Smoothing`.
* ``"lowpass"``: :class:`GaussianLowPass`, an image-*agnostic* Gaussian blur of the perturbation
  (SmoothFool; Zhou et al.), normalised like eq. (9) so that a constant is left unchanged.
* ``"dct"``: :class:`DCTSubspace`, the orthogonal projection onto the lowest DCT frequencies
  (Guo et al., "Low frequency adversarial perturbation", the paper's ref. [7]).

The two image-agnostic operators are the baselines the paper argues against: they smooth across the
image's edges as much as across its flat regions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F

from smoothadv.core.errors import ConfigError
from smoothadv.core.validation import check_image_batch, check_keywords
from smoothadv.smoothing.operator import Smoothing, check_signal


class PreparedOperator(Protocol):
    """A linear operator bound to a batch of B guide images of shape (B, C, H, W)."""

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """``P(z)``, differentiable in ``z``; z and the result of shape (B, C, H, W)."""

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """``P^T g``, of shape (B, C, H, W)."""


class PerturbationOperator(Protocol):
    """Configuration of a perturbation operator (frozen dataclass)."""

    kind: ClassVar[str]

    def prepare(self, guide: torch.Tensor) -> PreparedOperator:
        """Bind the operator to guide images (B, C, H, W) in [0, 1]."""

    def describe(self) -> dict[str, Any]:
        """The parameters results record."""


class _ImageAgnosticOperator:
    """Shared checks of the operators that look at the guide's shape, not at its pixels."""

    def __init__(self, guide: torch.Tensor):
        check_image_batch(guide, "guide")
        self.shape = tuple(guide.shape)

    def _check(self, z: torch.Tensor) -> None:
        check_signal(z, self.shape)


@dataclass(frozen=True)
class GaussianLowPass:
    """Gaussian low-pass of the perturbation, the same everywhere in the image (image-agnostic).

    ``P(z) = (G * z) / (G * 1)``: a separable Gaussian blur with zero padding, divided by the blur of a
    constant so that, as in eq. (9), a constant signal passes unchanged (the division only matters near
    the borders). Its adjoint is ``g -> G * (g / (G * 1))`` (``G`` is symmetric).

    Attributes:
        sigma: standard deviation of the Gaussian in pixels (> 0). The window has radius ``ceil(3 sigma)``.
    """

    kind: ClassVar[str] = "lowpass"
    sigma: float = 2.0

    def __post_init__(self):
        if not isinstance(self.sigma, (int, float)) or not math.isfinite(self.sigma) or not self.sigma > 0:
            raise ConfigError(f"lowpass sigma must be a finite number of pixels > 0; got {self.sigma!r}.")

    def prepare(self, guide: torch.Tensor) -> _PreparedLowPass:
        return _PreparedLowPass(guide, float(self.sigma))

    def describe(self) -> dict[str, Any]:
        return {"operator": self.kind, "sigma": float(self.sigma)}

    def with_options(self, **changes) -> GaussianLowPass:
        return replace(self, **changes)


class _PreparedLowPass(_ImageAgnosticOperator):
    def __init__(self, guide: torch.Tensor, sigma: float):
        super().__init__(guide)
        radius = max(1, math.ceil(3.0 * sigma))
        offsets = torch.arange(-radius, radius + 1, dtype=guide.dtype, device=guide.device)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        self.kernel = kernel / kernel.sum()
        self.radius = radius
        self.gain = self._blur(torch.ones_like(guide))

    def _blur(self, values: torch.Tensor) -> torch.Tensor:
        """Separable zero-padded Gaussian blur of each channel; (B, C, H, W) -> (B, C, H, W)."""
        batch, channels, height, width = values.shape
        flat = values.reshape(batch * channels, 1, height, width)
        kernel = self.kernel.to(values.dtype)
        flat = F.conv2d(flat, kernel.view(1, 1, 1, -1), padding=(0, self.radius))
        flat = F.conv2d(flat, kernel.view(1, 1, -1, 1), padding=(self.radius, 0))
        return flat.reshape(batch, channels, height, width)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self._check(z)
        return self._blur(z) / self.gain.to(z.dtype)

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        self._check(g)
        return self._blur(g.detach() / self.gain.to(g.dtype))


@dataclass(frozen=True)
class DCTSubspace:
    """Orthogonal projection onto the low-frequency DCT subspace (image-agnostic).

    ``P(z) = D_H^T (M * (D_H z D_W^T)) D_W`` with ``D`` the orthonormal DCT-II matrices and ``M`` keeping
    the ``ceil(ratio H) x ceil(ratio W)`` lowest frequencies of each channel. ``P`` is symmetric and
    idempotent, so it is its own adjoint. Guo et al. optimise the kept coefficients directly; optimising
    ``z`` through the projection spans the same perturbations.

    Attributes:
        ratio: fraction of the frequencies kept along each side, in (0, 1].
    """

    kind: ClassVar[str] = "dct"
    ratio: float = 0.25

    def __post_init__(self):
        if not isinstance(self.ratio, (int, float)) or not 0.0 < float(self.ratio) <= 1.0:
            raise ConfigError(
                f"dct ratio must lie in (0, 1] (the fraction of frequencies kept); got {self.ratio!r}.")

    def prepare(self, guide: torch.Tensor) -> _PreparedDCT:
        return _PreparedDCT(guide, float(self.ratio))

    def describe(self) -> dict[str, Any]:
        return {"operator": self.kind, "ratio": float(self.ratio)}

    def with_options(self, **changes) -> DCTSubspace:
        return replace(self, **changes)


@lru_cache(maxsize=16)
def _low_dct_basis(size: int, kept: int) -> torch.Tensor:
    """(kept, size) float64: the first ``kept`` rows of the orthonormal DCT-II matrix of order ``size``."""
    n = torch.arange(size, dtype=torch.float64)
    k = torch.arange(kept, dtype=torch.float64)[:, None]
    basis = torch.cos(math.pi * (n + 0.5) * k / size) * math.sqrt(2.0 / size)
    basis[0] /= math.sqrt(2.0)
    return basis


class _PreparedDCT(_ImageAgnosticOperator):
    def __init__(self, guide: torch.Tensor, ratio: float):
        super().__init__(guide)
        height, width = guide.shape[-2:]
        # built in float64 on the CPU, then held in the guide's dtype on its device
        self.rows = _low_dct_basis(height, math.ceil(ratio * height)).to(guide.dtype).to(guide.device)
        self.cols = _low_dct_basis(width, math.ceil(ratio * width)).to(guide.dtype).to(guide.device)

    def _project(self, values: torch.Tensor) -> torch.Tensor:
        rows, cols = self.rows.to(values.dtype), self.cols.to(values.dtype)  # no copy in the guide's dtype
        coefficients = rows @ values @ cols.T  # (B, C, kh, kw): only the kept frequencies
        return rows.T @ coefficients @ cols

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self._check(z)
        return self._project(z)

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        self._check(g)
        return self._project(g.detach())


GaussianLowPass.__init__ = check_keywords(GaussianLowPass.__init__)
DCTSubspace.__init__ = check_keywords(DCTSubspace.__init__)

#: The operator kinds by name (``--smoothing guided|lowpass|dct``).
OPERATOR_KINDS: dict[str, type] = {"guided": Smoothing, "lowpass": GaussianLowPass, "dct": DCTSubspace}


def check_operator(operator: Any, name: str = "smoothing") -> None:
    """Raise :class:`ConfigError` unless ``operator`` is None or a perturbation-operator configuration:
    one of :data:`OPERATOR_KINDS`, or your own object with a ``kind`` name, ``prepare(guide)`` returning a
    linear :class:`PreparedOperator` and ``describe()`` (see :class:`PerturbationOperator`)."""
    if operator is None or isinstance(operator, tuple(OPERATOR_KINDS.values())):
        return
    if not (isinstance(getattr(operator, "kind", None), str) and callable(getattr(operator, "prepare", None))
            and callable(getattr(operator, "describe", None))):
        raise ConfigError(
            f"{name} must be None or a perturbation operator: smoothadv.Smoothing (guided), "
            f"GaussianLowPass, DCTSubspace, or an object with kind, prepare(guide) and describe(); "
            f"got {type(operator).__name__}."
        )


def describe_operator(operator: Any) -> dict[str, Any]:
    """Parameters to record: the guided smoothing's fields as before, the others with their kind."""
    check_operator(operator)
    return operator.describe()
