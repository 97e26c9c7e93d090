"""Input-filtering defences: a fixed filter in front of a classifier (section 5.5 of the paper).

The defence of Table 3 filters every colour channel on its own with a bilateral filter (11x11 window,
spatial sigma 0.5 pixels, range sigma 0.2 on [0, 1] values) and classifies the result. The filter is
differentiable, so white-box attacks see through it; the paper uses it in a transfer setting.
"""

from __future__ import annotations

import torch
from torch import nn

from smoothadv.core.errors import ConfigError
from smoothadv.ops.bilateral import bilateral_filter

DEFENSE_SPATIAL_SIGMA = 0.5
DEFENSE_RANGE_SIGMA = 0.2
DEFENSE_WINDOW = 11


class BilateralDefense(nn.Module):
    """``model(bilateral_filter(x))`` with the filter applied per channel.

    Args:
        model: the classifier, taking [0, 1] images and returning logits.
        spatial_sigma: spatial Gaussian standard deviation in pixels (paper: 0.5).
        range_sigma: range Gaussian standard deviation on [0, 1] values (paper: 0.2).
        window: odd side of the square window (paper: 11, i.e. radius 5).

    Shape:
        (B, C, H, W) in [0, 1] -> the model's (B, K) logits.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        spatial_sigma: float = DEFENSE_SPATIAL_SIGMA,
        range_sigma: float = DEFENSE_RANGE_SIGMA,
        window: int = DEFENSE_WINDOW,
    ) -> None:
        super().__init__()
        if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
            raise ConfigError(f"window must be an odd positive integer (e.g. 11), got {window!r}.")
        self.model = model
        self.spatial_sigma = float(spatial_sigma)
        self.range_sigma = float(range_sigma)
        self.window = window
        if hasattr(model, "input_size"):
            self.input_size = model.input_size

    def filter(self, x: torch.Tensor) -> torch.Tensor:
        """The filtered (B, C, H, W) images the classifier sees."""
        return bilateral_filter(
            x,
            spatial_sigma=self.spatial_sigma,
            range_sigma=self.range_sigma,
            radius=self.window // 2,
            joint_range=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.filter(x))

    def extra_repr(self) -> str:
        return f"spatial_sigma={self.spatial_sigma}, range_sigma={self.range_sigma}, window={self.window}"
