"""Match the image-agnostic perturbation operators to the guided smoothing, per preset.

Strength is measured as the share of white-noise energy an operator keeps, ``E||P(n)||^2 / E||n||^2``
(its effective degrees of freedom per pixel: 1 for the identity, the kept fraction for a projection).
The guided smoothing's share depends on the image; this averages it over test images and finds the
Gaussian low-pass sigma and the DCT ratio with the same share, by bisection.

    python benchmarks/operators.py            # MNIST (20 test images) and ImageNet (4 photos at 224)
    python benchmarks/operators.py --json
"""

from __future__ import annotations

import argparse
import json

import torch

from smoothadv.attacks.presets import OPERATORS, SMOOTHING
from smoothadv.data import load_imagenet_samples, load_mnist
from smoothadv.smoothing import DCTSubspace, GaussianLowPass


def kept_energy(operator, images: torch.Tensor, probes: int = 8, seed: int = 0) -> float:
    """Mean over images and probes of ``||P(n)||^2 / ||n||^2`` for Gaussian white noise n."""
    prepared = operator.prepare(images)
    generator = torch.Generator().manual_seed(seed)
    shares = []
    for _ in range(probes):
        noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
        shares.append((prepared(noise).flatten(1).pow(2).sum(1) / noise.flatten(1).pow(2).sum(1)).mean())
    return float(torch.stack(shares).mean())


def bisect(make, images, target: float, low: float, high: float, decreasing: bool, rounds: int = 30) -> float:
    """The parameter in [low, high] at which ``kept_energy(make(p))`` equals ``target``."""
    for _ in range(rounds):
        middle = (low + high) / 2
        share = kept_energy(make(middle), images)
        if (share > target) == decreasing:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def match(preset: str, images: torch.Tensor) -> dict:
    guided = kept_energy(SMOOTHING[preset], images)
    sigma = bisect(lambda s: GaussianLowPass(sigma=s), images, guided, 0.05, 20.0, decreasing=True)
    ratio = bisect(lambda r: DCTSubspace(ratio=r), images, guided, 1e-3, 1.0, decreasing=False)
    current = OPERATORS[preset]
    return {
        "preset": preset, "images": len(images), "guided_share": guided,
        "lowpass_sigma": sigma, "lowpass_share": kept_energy(GaussianLowPass(sigma=sigma), images),
        "dct_ratio": ratio, "dct_share": kept_energy(DCTSubspace(ratio=ratio), images),
        "preset_lowpass_share": kept_energy(current["lowpass"], images),
        "preset_dct_share": kept_energy(current["dct"], images),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [match("mnist", load_mnist("test", limit=20).images),
            match("imagenet", load_imagenet_samples(224).images[:4])]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(f"{row['preset']}: guided keeps {row['guided_share']:.4f} of white-noise energy "
              f"({row['images']} images); lowpass sigma {row['lowpass_sigma']:.3f} keeps "
              f"{row['lowpass_share']:.4f}; dct ratio {row['dct_ratio']:.4f} keeps {row['dct_share']:.4f}; "
              f"the preset's lowpass keeps {row['preset_lowpass_share']:.4f}, its dct "
              f"{row['preset_dct_share']:.4f}")


if __name__ == "__main__":
    main()
