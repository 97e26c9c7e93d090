"""The main job on embedded defaults: smooth noise guided by a bundled natural photo and save the result."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from skimage import data as skimage_data

from smoothadv.imageio import save_image
from smoothadv.smoothing import Smoothing


def bundled_photo(size: int = 224) -> torch.Tensor:
    """scikit-image's astronaut photo as a (1, 3, size, size) tensor in [0, 1]."""
    photo = torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1).float().div(255.0)
    photo = F.interpolate(photo[None], size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return photo.clamp(0, 1)


def run_smoothing_demo(out_dir: str | Path, *, size: int = 224, seed: int = 0) -> dict:
    """Smooth white noise guided by the bundled photo (ImageNet smoothing preset) and write PNGs.

    Returns:
        A summary: output paths, solver, and the noise energy kept on flat vs textured pixels.
    """
    out_dir = Path(out_dir)
    guide = bundled_photo(size)
    noise = torch.randn(guide.shape, generator=torch.Generator().manual_seed(seed))
    smoother = Smoothing(alpha=0.997, kernel="gaussian", sigma=300 ** -0.5 / 2 ** 0.5).prepare(guide)
    smoothed = smoother(noise)
    scale = 0.5 / smoothed.abs().amax()
    paths = {
        "guide": save_image(guide[0], out_dir / "guide.png"),
        "noise": save_image((0.5 + 0.1 * noise[0]).clamp(0, 1), out_dir / "noise.png"),
        "smoothed": save_image(0.5 + scale * smoothed[0], out_dir / "smoothed_noise.png"),
    }
    return {"out_dir": str(out_dir), "solver": smoother.solver.name,
            "files": {name: str(path) for name, path in paths.items()}}
