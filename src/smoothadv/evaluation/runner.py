"""The evaluation runner of section 5.1: batches, epsilon grids, transfer targets, resumable records.

``evaluate(model, data, ["pgd2", "scw"], "out/run")`` classifies every image, attacks the correctly
classified ones batch by batch, and appends one record per image to ``out/run/records.jsonl`` as each
batch finishes (see :mod:`.records`). Killing it and calling it again with the same arguments resumes
where it stopped; the run configuration is kept in ``out/run/config.json`` and a run with another
configuration is refused. Tables and curves are computed from the records (:mod:`.metrics`).

Work order: the clean pass (every model, every batch), then attack by attack, epsilon by epsilon (the
grid in ascending order), batch by batch. Each batch's random state is seeded from ``seed`` and the batch
key, so a resumed run gives the records an uninterrupted run gives.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from smoothadv.attacks import ATTACKS, FIXED_DISTORTION_ATTACKS, PRESETS, make_attack
from smoothadv.errors import ConfigError, InputError, ShapeError
from smoothadv.evaluation.metrics import AttackStatistics, summary_table
from smoothadv.evaluation.records import RECORDS_FILE, FolderLock, RecordStore, batch_key, write_config

ADVERSARIAL_DIR = "adversarial"
CONFIG_VERSION = 1


@dataclass
class Samples:
    """The images an evaluation runs on: anything with ``labels``, ``ids`` and ``batch(indices)``
    (a :class:`smoothadv.data.ImageDataset`) or an ``(images, labels)`` / ``(images, labels, ids)`` tuple.

    Attributes:
        labels: (N,) int64. ids: N unique names. source: description for reports.
    """

    labels: torch.Tensor
    ids: list[str]
    source: str
    _get: Any = field(repr=False)

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        """(B, C, H, W) images at ``indices``."""
        return self._get(list(indices))

    def __len__(self) -> int:
        return len(self.ids)


def as_samples(data: Any, limit: int | None = None) -> Samples:
    """Wrap a dataset object or an (images, labels[, ids]) tuple; keep the first ``limit`` images.

    Raises:
        InputError / ShapeError: malformed tuple; ConfigError: bad ``limit``.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}.")
    if isinstance(data, (tuple, list)):
        if len(data) not in (2, 3):
            raise InputError("data must be a dataset or a tuple (images, labels) or (images, labels, ids).")
        images, labels = data[0], data[1]
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ShapeError("data images must be a (N, C, H, W) tensor in [0, 1].")
        labels = torch.as_tensor(labels).long().reshape(-1)
        if labels.numel() != images.shape[0]:
            raise ShapeError(
                f"{images.shape[0]} images but {labels.numel()} labels; give one label per image."
            )
        ids = [str(i) for i in data[2]] if len(data) == 3 else [f"{i:06d}" for i in range(len(labels))]
        samples = Samples(labels, ids, f"tensor of {len(labels)} images", lambda idx: images[idx])
    elif hasattr(data, "labels") and hasattr(data, "ids") and hasattr(data, "batch"):
        samples = Samples(
            torch.as_tensor(data.labels).long(),
            list(data.ids),
            str(getattr(data, "source", "")),
            lambda idx: data.batch(idx).images,
        )
    else:
        raise InputError(
            "data must be a smoothadv.data.ImageDataset or a tuple (images, labels); "
            f"got {type(data).__name__}."
        )
    if len(set(samples.ids)) != len(samples.ids):
        raise InputError("image ids must be unique; records are keyed by them.")
    if limit is not None and limit < len(samples):
        base = samples
        samples = Samples(base.labels[:limit], base.ids[:limit], f"{base.source}, first {limit}", base._get)
    return samples


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns.

    Attributes:
        out_dir: output folder. records: every record (clean and attack). table: one row per (model, attack).
        config: the recorded configuration. samples: the images (for panels).
        models: name -> model. resumed_batches / ran_batches: batches found on disk / run now.
        trimmed_bytes: bytes of an unfinished batch cut from the records file when resuming.
        seconds: wall time of this call.
    """

    out_dir: Path
    records: list[dict]
    table: list[AttackStatistics]
    config: dict
    samples: Samples
    models: dict[str, Any]
    resumed_batches: int
    ran_batches: int
    trimmed_bytes: int
    seconds: float

    def to_dict(self) -> dict:
        """JSON-ready summary (without the records)."""
        return {
            "out_dir": str(self.out_dir),
            "table": [row.to_dict() for row in self.table],
            "config": self.config,
            "resumed_batches": self.resumed_batches,
            "ran_batches": self.ran_batches,
            "seconds": self.seconds,
        }


def model_fingerprint(model: Any) -> str:
    """SHA-256 (first 16 hex digits) of a module's class and state dict: changes with any weight."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    if isinstance(model, nn.Module):
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def resolve_attacks(attacks: str | Sequence[str]) -> list[str]:
    """Normalise ``"fgsm,pgd2"`` or a list of names to registered attack names (order kept, no repeats)."""
    names = attacks.split(",") if isinstance(attacks, str) else list(attacks)
    resolved: list[str] = []
    for name in names:
        key = str(name).strip().lower().replace("-", "").replace("&", "").replace("_", "")
        if not key:
            continue
        if key not in ATTACKS:
            raise ConfigError(f"unknown attack {name!r}; choose among {', '.join(ATTACKS)}.")
        if key not in resolved:
            resolved.append(key)
    if not resolved:
        raise ConfigError(f"give at least one attack among {', '.join(ATTACKS)}.")
    return resolved


def epsilon_grid(
    attack: str, preset: str, epsilons: Mapping[str, Sequence[float]] | None
) -> list[float | None]:
    """The epsilons ``attack`` runs at: its grid (ascending) for fixed-distortion attacks, ``[None]`` else."""
    if attack not in FIXED_DISTORTION_ATTACKS:
        if epsilons and attack in epsilons:
            raise ConfigError(f"{attack} minimises distortion itself; it takes no epsilon grid.")
        return [None]
    grid = epsilons[attack] if epsilons and attack in epsilons else PRESETS[preset]["epsilons"][attack]
    values = sorted({float(e) for e in grid})
    if not values or any(not np.isfinite(e) or e <= 0 for e in values):
        raise ConfigError(f"epsilons of {attack} must be finite numbers > 0; got {list(grid)!r}.")
    return values


def evaluate(
    model: nn.Module,
    data: Any,
    attacks: str | Sequence[str],
    out_dir: str | Path,
    *,
    model_name: str = "model",
    preset: str = "mnist",
    epsilons: Mapping[str, Sequence[float]] | None = None,
    attack_options: Mapping[str, Mapping[str, Any]] | None = None,
    transfer_to: Mapping[str, nn.Module] | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    perceptual: bool = False,
    mad_upsample: int | None = None,
    save_adversarial: bool = True,
    restart: bool = False,
    progress: bool = True,
    extra_config: Mapping[str, Any] | None = None,
) -> EvaluationResult:
    """Run the protocol of section 5.1 and keep every per-image result in ``out_dir``.

    Args:
        model: the attacked classifier, (B, C, H, W) in [0, 1] -> (B, K) logits, in eval mode.
        data: an :class:`~smoothadv.data.ImageDataset` or a tuple ``(images, labels[, ids])``.
        attacks: attack names (``"fgsm,ifgsm,pgd2,qpgd2,cw,scw"``); see :data:`smoothadv.attacks.ATTACKS`.
        out_dir: output folder; ``records.jsonl``, ``config.json`` and ``adversarial/`` go there.
        model_name: name of ``model`` in the records.
        preset: ``"mnist"`` or ``"imagenet"``: attack parameters and default epsilon grids.
        epsilons: ``{attack: [eps, ...]}`` replacing the preset's grid of fixed-distortion attacks.
        attack_options: ``{attack: {option: value}}`` overrides (e.g. fewer C&W steps).
        transfer_to: ``{name: model}``: also measure each attack's adversarial images on these models
            (transferability, Table 3); the attack itself only sees ``model``.
        limit: use the first ``limit`` images.
        batch_size: images per attack batch (and per record write).
        seed: seed of ``torch.manual_seed`` (per batch, from the seed and the batch key).
        perceptual: compute the MAD score (2011 scale) of each successful adversarial example.
        mad_upsample: side images are upsampled to (nearest neighbour) before MAD; default: 4x for images
            smaller than MAD's 34-pixel minimum (MNIST 28x28 -> 112x112), else none.
        save_adversarial: keep successful adversarial images (8-bit, ``adversarial/*.npz``) for panels.
        restart: discard records of an earlier run in ``out_dir`` instead of resuming.
        progress: show tqdm progress bars (images/s and ETA) on stderr.
        extra_config: more JSON-ready entries for ``config.json`` (e.g. how the model was loaded).

    Returns:
        An :class:`EvaluationResult` with all records and the table.

    Raises:
        ConfigError: unknown attack or preset, bad grid, or ``out_dir`` holds a different run.
    """
    start = time.perf_counter()
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    names = resolve_attacks(attacks)
    samples = as_samples(data, limit)
    options = {name: dict((attack_options or {}).get(name, {})) for name in names}
    for name in attack_options or {}:
        if name not in names:
            raise ConfigError(f"attack_options names {name!r}, which is not among the attacks {names}.")
    grids = {name: epsilon_grid(name, preset, epsilons) for name in names}
    targets = dict(transfer_to or {})
    if model_name in targets:
        raise ConfigError(f"transfer target {model_name!r} has the attacked model's name; rename one.")
    models = {model_name: model, **targets}
    device = _device_of(model)
    image_shape = tuple(samples.images([0]).shape[1:])
    if mad_upsample is None and perceptual and min(image_shape[1:]) < 34:
        mad_upsample = 4 * max(image_shape[1:])

    parameters = {
        name: [
            make_attack(name, model, preset=preset, **_with_epsilon(options[name], eps)).parameters()
            for eps in grids[name]
        ]
        for name in names
    }
    config = {
        "version": CONFIG_VERSION,
        "model": model_name,
        "models": {name: model_fingerprint(m) for name, m in models.items()},
        "transfer_to": list(targets),
        "data": {
            "source": samples.source,
            "size": len(samples),
            "image_shape": list(image_shape),
            "ids_sha1": hashlib.sha1("\n".join(samples.ids).encode()).hexdigest(),
        },
        "attacks": names,
        "preset": preset,
        "epsilons": {name: grids[name] for name in names},
        "attack_parameters": parameters,
        "batch_size": batch_size,
        "seed": seed,
        "perceptual": {"metric": "MAD", "scale": "2011", "upsample_to": mad_upsample} if perceptual else None,
        "save_adversarial": save_adversarial,
        **dict(extra_config or {}),
    }
    out_dir = Path(out_dir)
    with FolderLock(out_dir):
        write_config(out_dir, config, restart=restart)
        if restart and (out_dir / ADVERSARIAL_DIR).is_dir():
            for stale in (out_dir / ADVERSARIAL_DIR).glob("*.npz"):
                stale.unlink()
        store = RecordStore(out_dir / RECORDS_FILE)
        resumed = len(store.finished)
        torch.manual_seed(seed)

        ran = _clean_pass(store, models, samples, batch_size, device, progress)

        correct = {
            r["image_id"]
            for r in store.records
            if r["kind"] == "clean" and r["model"] == model_name and r["correct"]
        }
        attacked = [i for i in range(len(samples)) if samples.ids[i] in correct]
        attack_chunks = [attacked[i : i + batch_size] for i in range(0, len(attacked), batch_size)]

        for name in names:
            work = [
                (
                    eps,
                    params,
                    chunk,
                    batch_key("attack", model_name, name, eps, [samples.ids[i] for i in chunk]),
                )
                for eps, params in zip(grids[name], parameters[name], strict=True)
                for chunk in attack_chunks
            ]
            done = sum(len(chunk) for _, _, chunk, key in work if key in store.finished)
            with _bar(len(attacked) * len(grids[name]), name, "img", progress, initial=done) as bar:
                attack, attack_eps = None, object()
                for eps, params, chunk, key in work:
                    if key in store.finished:
                        continue
                    ids = [samples.ids[i] for i in chunk]
                    if attack is None or attack_eps != eps:
                        attack = make_attack(name, model, preset=preset, **_with_epsilon(options[name], eps))
                        attack_eps = eps
                    _seed_batch(seed, key)
                    records = _attack_batch(
                        attack,
                        name,
                        eps,
                        params,
                        key,
                        chunk,
                        ids,
                        samples,
                        models,
                        model_name,
                        device,
                        perceptual,
                        mad_upsample,
                        out_dir if save_adversarial else None,
                    )
                    store.append_batch(key, records)
                    ran += 1
                    bar.update(len(chunk))
    return EvaluationResult(
        out_dir=out_dir,
        records=list(store.records),
        table=summary_table(store.records),
        config=config,
        samples=samples,
        models=models,
        resumed_batches=resumed,
        ran_batches=ran,
        trimmed_bytes=store.trimmed_bytes,
        seconds=time.perf_counter() - start,
    )


def _clean_pass(
    store: RecordStore, models: dict, samples: Samples, batch_size: int, device, progress: bool
) -> int:
    """Every model classifies every image (one ``clean`` record each); returns the batches run."""
    ran = 0
    chunks = [list(range(i, min(i + batch_size, len(samples)))) for i in range(0, len(samples), batch_size)]
    with _bar(len(chunks) * len(models), "clean pass", "batch", progress) as bar:
        for name, net in models.items():
            for chunk in chunks:
                ids = [samples.ids[i] for i in chunk]
                key = batch_key("clean", name, None, None, ids)
                if key not in store.finished:
                    with torch.no_grad():
                        predictions = net(samples.images(chunk).to(device)).argmax(dim=1).cpu()
                    labels = samples.labels[chunk]
                    store.append_batch(
                        key,
                        [
                            {
                                "kind": "clean",
                                "model": name,
                                "image_id": ids[k],
                                "index": chunk[k],
                                "label": int(labels[k]),
                                "prediction": int(predictions[k]),
                                "correct": bool(predictions[k] == labels[k]),
                            }
                            for k in range(len(chunk))
                        ],
                    )
                    ran += 1
                bar.update(1)
    return ran


def _with_epsilon(options: dict, epsilon: float | None) -> dict:
    return options if epsilon is None else {**options, "epsilon": epsilon}


def _device_of(model: Any) -> torch.device:
    if isinstance(model, nn.Module):
        parameter = next(model.parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")


def _seed_batch(seed: int, key: str) -> None:
    offset = int(hashlib.sha1(key.encode()).hexdigest()[:12], 16)
    torch.manual_seed((int(seed) * 1_000_003 + offset) % (2**63 - 1))


def adversarial_file(out_dir: str | Path, key: str) -> Path:
    """Where the adversarial images of batch ``key`` are kept."""
    return Path(out_dir) / ADVERSARIAL_DIR / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".npz")


def load_adversarial(out_dir: str | Path, key: str, image_id: str) -> torch.Tensor | None:
    """The saved (C, H, W) adversarial image of ``image_id`` from batch ``key``, or None if not kept."""
    path = adversarial_file(out_dir, key)
    if not path.is_file():
        return None
    with np.load(path) as archive:
        ids = list(archive["ids"])
        if image_id not in ids:
            return None
        return torch.from_numpy(archive["images"][ids.index(image_id)].astype(np.float32) / 255.0)


def _attack_batch(
    attack,
    name,
    eps,
    params,
    key,
    chunk,
    ids,
    samples,
    models,
    model_name,
    device,
    perceptual,
    mad_upsample,
    save_dir,
) -> list[dict]:
    images = samples.images(chunk).to(device)
    labels = samples.labels[chunk].to(device)
    result = attack(images, labels)
    adversarial = result.adversarial.detach()
    per_image_seconds = result.seconds / len(chunk)
    successes = {model_name: result.success.cpu()}
    predictions = {model_name: result.predictions.cpu()}
    for target, net in models.items():
        if target == model_name:
            continue
        with torch.no_grad():
            target_predictions = net(adversarial).argmax(dim=1).cpu()
        predictions[target] = target_predictions
        successes[target] = target_predictions != labels.cpu()
    any_success = torch.stack(list(successes.values())).any(dim=0)
    mads: dict[int, float] = {}
    if perceptual and bool(any_success.any()):
        from smoothadv.perceptual import mad_batch

        index = any_success.nonzero()[:, 0]
        scores = mad_batch(
            images[index].cpu(), adversarial[index].cpu(), scale="2011", upsample_to=mad_upsample
        )
        mads = {int(i): float(s.mad) for i, s in zip(index, scores, strict=True) if np.isfinite(s.mad)}
    if save_dir is not None and bool(any_success.any()):
        index = any_success.nonzero()[:, 0]
        path = adversarial_file(save_dir, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = torch.round(adversarial[index].cpu() * 255).clamp(0, 255).to(torch.uint8).numpy()
        with open(path, "wb") as handle:
            np.savez_compressed(handle, ids=np.array([ids[int(i)] for i in index]), images=pixels)
            handle.flush()
            os.fsync(handle.fileno())
    l2, linf = result.l2.cpu(), result.linf.cpu()
    iterations, evaluations = result.iterations.cpu(), result.gradient_evaluations.cpu()
    records = []
    for target in models:
        for k in range(len(chunk)):
            records.append(
                {
                    "kind": "attack",
                    "model": target,
                    "source_model": model_name,
                    "attack": name,
                    "epsilon": eps,
                    "parameters": params,
                    "image_id": ids[k],
                    "index": chunk[k],
                    "label": int(samples.labels[chunk[k]]),
                    "prediction": int(predictions[target][k]),
                    "success": bool(successes[target][k]),
                    "l2": float(l2[k]),
                    "linf": float(linf[k]),
                    "iterations": int(iterations[k]),
                    "gradient_evaluations": int(evaluations[k]),
                    "seconds": per_image_seconds,
                    "batch": key,
                    "mad": mads.get(k) if bool(successes[target][k]) else None,
                }
            )
    return records


class _bar:
    """A tqdm progress bar on stderr (images/s and ETA), or a silent stand-in."""

    def __init__(self, total: int, desc: str, unit: str, enabled: bool, initial: int = 0):
        self.bar = None
        if enabled and total > 0:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                file=sys.stderr,
                dynamic_ncols=True,
                smoothing=0.1,
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)
