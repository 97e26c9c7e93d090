"""Craft adversarial image files: read images, attack a model, write 8-bit PNGs and a per-image table.

This is what ``smoothadv attack`` runs; it is usable from Python too::

    summary = craft_files("c4", "scw", ["digit.png"], "out/")
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from smoothadv.attacks import ATTACKS, FIXED_DISTORTION_ATTACKS, make_attack
from smoothadv.core.errors import ConfigError
from smoothadv.core.images import read_image, save_image
from smoothadv.experiments.defaults import preset_for_model
from smoothadv.models import load_model, model_info


def craft_files(model: str, attack: str, inputs: Sequence[str | Path], out_dir: str | Path, *,
                epsilon: float | None = None, preset: str | None = None, labels: Sequence[int] | None = None,
                quantize: bool = True, batch_size: int = 16, input_size: int | None = None,
                channels: int | None = None, weights: str | None = None) -> dict:
    """Attack every input image and write ``<stem>_<attack>.png`` plus ``results.csv``/``results.json``.

    Args:
        model: registry name (``c4``, ``efficientnet-lite0``, ...), TorchScript file or ``module:factory``.
        attack: attack name (``fgsm``, ``ifgsm``, ``pgd2``, ``qpgd2``, ``cw``, ``scw``, ``deepfool``).
        inputs: image files; each is resized and centre-cropped to the model's input size.
        out_dir: output folder (created).
        epsilon: budget of a fixed-distortion attack (default: the preset's).
        preset: ``mnist`` or ``imagenet`` parameters (default: from the model's dataset).
        labels: true labels, one per input; None uses the model's predictions on the clean images
            (the summary says so).
        quantize: round to 8 bits and re-check success (what a saved PNG holds).
        batch_size: images attacked together.
        input_size, channels: declared input of a user model.
        weights: weights file of a factory model.

    Returns:
        A summary: ``records`` (one per image, with input/output paths), ``labels_from_model``, paths.
    """
    if not inputs:
        raise ConfigError("give at least one input image.")
    info = model_info(model, input_size=input_size, channels=channels)
    if info.input_size is None:
        raise ConfigError(f"{model} is a user model: declare its input size with --input-size.")
    if preset is None:
        preset = preset_for_model(model, info.input_size)
    key = ATTACKS.resolve(attack)
    overrides = {}
    if epsilon is not None:
        if not ATTACKS[key].fixed_distortion:
            allowed = ", ".join(FIXED_DISTORTION_ATTACKS)
            raise ConfigError(f"--epsilon applies to {allowed} only, not {attack}.")
        overrides["epsilon"] = epsilon
    network = load_model(model, weights=weights)
    attacker = make_attack(key, network, preset=preset, quantize=quantize, **overrides)
    paths = [Path(p) for p in inputs]
    images = torch.stack([read_image(p, channels=info.channels, size=info.input_size, resize=info.resize)
                          for p in paths])
    if labels is not None and len(labels) != len(paths):
        raise ConfigError(f"got {len(labels)} labels for {len(paths)} images; give one label per image.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for start in range(0, len(paths), batch_size):
        batch = images[start:start + batch_size]
        batch_labels = None if labels is None else torch.tensor(labels[start:start + batch_size])
        result = attacker(batch, batch_labels)
        for offset, record in enumerate(result.to_records()):
            source = paths[start + offset]
            target = out_dir / f"{source.stem}_{attacker.name}.png"
            save_image(result.adversarial[offset], target)
            records.append({"input": str(source), "output": str(target), **record})
    summary = {
        "model": model, "attack": attacker.name, "preset": preset, "parameters": attacker.parameters(),
        "labels_from_model": labels is None, "records": records,
        "csv": str(out_dir / "results.csv"), "json": str(out_dir / "results.json"),
    }
    _write_table(records, Path(summary["csv"]))
    Path(summary["json"]).write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _write_table(records: list[dict], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
