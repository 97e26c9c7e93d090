"""The peers benchmark harness measures every library alike (no peer library needed for these tests)."""

from __future__ import annotations

import math

import pytest
import torch

from attack_fixtures import blocky_images, tiny_classifier
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def peers():
    return load_benchmark("peers.py", "peers_benchmark")


@pytest.fixture(scope="module")
def setting(peers):
    model = tiny_classifier()
    images = blocky_images(batch=8)
    with torch.no_grad():
        labels = model(images).argmax(1)
    return peers.Setting("tiny", model, images, labels, batch_size=3, classes=5, attempted=8)


def test_strength_is_conditional_on_success(peers, setting):
    adversarial = setting.images.clone()
    adversarial[:2] = 1.0 - adversarial[:2]  # changes the prediction only if the model says so
    with torch.no_grad():
        flipped = setting.model(adversarial).argmax(1) != setting.labels
    l2 = (adversarial - setting.images).flatten(1).norm(dim=1)
    assert 0 < int(flipped.sum()) < 2  # one success, one failure among the changed images
    result = peers.strength(setting, adversarial)
    assert result["p_suc"] == pytest.approx(flipped.float().mean().item())
    assert result["d_bar"] == pytest.approx(l2[flipped].mean().item())  # the failure is not averaged in
    assert math.isnan(peers.strength(setting, setting.images.clone())["d_bar"])  # no success: no D_bar


def test_run_row_interleaves_libraries_and_honours_limits(peers, setting):
    calls = []

    def identity(model, images, labels):
        calls.append(("identity", len(images)))
        return images

    def pgd(model, images, labels):
        calls.append(("pgd", len(images)))
        return peers.PGD2(model, 2.0, quantize=False).generate(images, labels)

    row = peers.Row("test", setting, "budget", {"smoothadv": pgd, "identity": identity},
                    limits={"identity": 4})
    peers.run_row(row, verbose=False)
    assert [c for c in calls if c[0] == "identity"] == [("identity", 3), ("identity", 1)]
    assert row.results["identity"]["images"] == 4 and row.results["identity"]["p_suc"] == 0.0
    assert row.results["smoothadv"]["images"] == 8 and row.results["smoothadv"]["time_ratio"] == 1.0
    assert row.results["smoothadv"]["batches"] == 3
    assert row.results["smoothadv"]["forwards_per_image"] == 10  # 10 steps, the clean pass shared
    assert row.results["identity"]["forwards_per_image"] == 0
    assert len(row.results["smoothadv"]["per_image_l2"]) == 8


def test_limited_peer_is_compared_on_the_same_images(peers):
    ours = {"per_image_l2": [1.0, 2.0, 3.0, 9.0], "per_image_success": [True, False, True, True]}
    assert peers.d_bar_on_first(ours, 3) == pytest.approx(2.0)  # (1 + 3) / 2: the failure and image 4 out


def test_failing_library_is_reported_not_fatal(peers, setting):
    def broken(model, images, labels):
        raise RuntimeError("peer exploded")

    row = peers.Row("test", setting, "budget", {"smoothadv": lambda m, x, y: x, "broken": broken})
    peers.run_row(row, verbose=False)
    assert "peer exploded" in row.results["broken"]["error"]
    assert "broken" in peers.markdown([row], "machine", "command")
