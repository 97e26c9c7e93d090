"""Wall time of the perceptual tools: bilateral filter, adversarial magnification, MAD.

Sizes follow the paper: 299x299x3 ImageNet images (InceptionV3 input); the magnification of Fig. 1
(spatial sigma 5 -> 25x25 window); the bilateral-filter defence of section 5.5 (11x11 window, per
channel) forward and forward+backward, since it sits in front of an attacked classifier; MAD on the
256x256 reference pair and on 299x299 grey images.

Reports the median and the minimum of ``--repeats`` runs for each torch thread count in ``--threads``
(the minimum is the better estimate of the cost on a machine shared with other work).

Usage: python benchmarks/perceptual.py [--repeats 5] [--threads 1 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from smoothadv.ops.bilateral import bilateral_filter
from smoothadv.perceptual import mad, magnify

REFERENCE_DIR = Path("/work/shared/reference/mad")


def _time(function, repeats: int) -> tuple[float, float]:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def cases() -> dict:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 299, 299, generator=gen)
    batch = torch.rand(8, 3, 224, 224, generator=gen)

    def defence_backward():
        x = batch.clone().requires_grad_()
        bilateral_filter(x, spatial_sigma=0.5, range_sigma=0.2, radius=5, joint_range=False).sum().backward()

    grey = np.random.default_rng(0).integers(0, 256, (299, 299)).astype(np.uint8)
    noisy = np.clip(grey + np.random.default_rng(1).normal(0, 3, grey.shape), 0, 255).astype(np.uint8)
    table = {
        "bilateral 299x299x3, radius 12 (sigma 5), joint": lambda: bilateral_filter(
            image, spatial_sigma=5.0, range_sigma=0.2
        ),
        "magnify 299x299x3, sigma 5 (Fig. 1)": lambda: magnify(image[0]),
        "magnify 299x299x3, sigma 3": lambda: magnify(image[0], spatial_sigma=3.0),
        "defence 8x3x224x224, 11x11 per channel, forward": lambda: bilateral_filter(
            batch, spatial_sigma=0.5, range_sigma=0.2, radius=5, joint_range=False
        ),
        "defence 8x3x224x224, 11x11 per channel, forward+backward": defence_backward,
        "MAD 299x299 grey": lambda: mad(grey, noisy),
    }
    if (REFERENCE_DIR / "ref_gray_256.png").is_file():
        ref, dst = REFERENCE_DIR / "ref_gray_256.png", REFERENCE_DIR / "dst_gray_256_noise5.png"
        table["MAD 256x256 reference pair (files)"] = lambda: mad(ref, dst)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    table = cases()
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, function in table.items():
            median, best = _time(function, args.repeats)
            results.append({"case": name, "threads": threads, "median_s": median, "min_s": best})
            if not args.json:
                print(f"threads={threads}  {name:58s} median {median:7.3f} s   min {best:7.3f} s", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
