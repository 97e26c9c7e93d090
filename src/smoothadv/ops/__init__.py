"""Small differentiable image operations shared by models and perceptual tools (the bilateral filter)."""

from smoothadv.ops.bilateral import bilateral_filter

__all__ = ["bilateral_filter"]
