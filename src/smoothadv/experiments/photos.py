"""A bundled natural photo for demos and benchmarks (no download needed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from skimage import data as skimage_data


def bundled_photo(size: int = 224) -> torch.Tensor:
    """scikit-image's astronaut photo as a (1, 3, size, size) tensor in [0, 1]."""
    photo = torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1).float().div(255.0)
    photo = F.interpolate(photo[None], size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return photo.clamp(0, 1)
