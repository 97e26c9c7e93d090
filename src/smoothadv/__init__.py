"""smoothadv: smooth adversarial examples for PyTorch classifiers.

Implements Zhang, Avrithis, Furon & Amsaleg, "Smooth adversarial examples" (EURASIP J. Information
Security, 2020): an image-guided Laplacian smoothing operator and attacks whose perturbations are smooth
where the image is flat.
"""

__version__ = "0.1.0"

from smoothadv.smoothing import DCTSubspace, GaussianLowPass, GuidedSmoother, Smoothing, smooth  # noqa: E402

__all__ = ["DCTSubspace", "GaussianLowPass", "GuidedSmoother", "Smoothing", "smooth", "__version__"]
