"""sC&W's results on fixed inputs, to compare two versions of the code (run once on each checkout).

Prints, as JSON: P_suc and D_bar of sC&W on the first 100 MNIST test images (C4, MNIST preset, 9 x 100
iterations), and the success and L2 of sC&W on the first 3 foolbox photos (EfficientNet-Lite0, ImageNet
preset at a reduced budget of 2 x 50 iterations), one torch thread. A change of the solver must leave
them equal within 0.5%.

Usage: PYTHONPATH=CHECKOUT/src python benchmarks/results_check.py
"""

from __future__ import annotations

import json
import time

import torch

from smoothadv.attacks import PRESETS, SmoothCarliniWagnerL2
from smoothadv.data import load_mnist
from smoothadv.data.imagenet import load_imagenet_samples
from smoothadv.models import load_model


def main() -> None:
    torch.set_num_threads(1)
    out = {}
    data = load_mnist("test", limit=100)
    start = time.time()
    attack = SmoothCarliniWagnerL2(load_model("c4"), smoothing=PRESETS["mnist"]["smoothing"],
                                   **PRESETS["mnist"]["cw"])
    result = attack(data.images, data.labels)
    out["mnist"] = {"p_suc": result.success.float().mean().item(),
                    "d_bar": result.l2[result.success].mean().item(), "seconds": time.time() - start}
    photos = load_imagenet_samples(224)
    images, labels = photos.images[:3], photos.labels[:3]
    start = time.time()
    options = dict(PRESETS["imagenet"]["cw"], binary_search_steps=2, steps=50)
    attack = SmoothCarliniWagnerL2(load_model("efficientnet-lite0"),
                                   smoothing=PRESETS["imagenet"]["smoothing"], **options)
    result = attack(images, labels)
    out["photos"] = {"success": result.success.tolist(), "l2": result.l2.tolist(),
                     "seconds": time.time() - start}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
