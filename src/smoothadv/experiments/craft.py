"""Craft adversarial image files: read images, attack a model, write 8-bit PNGs and a per-image table.

This is what ``smoothadv attack`` runs; it is usable from Python too::

    summary = craft_files("c4", "scw", ["digit.png"], "out/")

For each input ``<stem>.png`` it writes ``<stem>_clean.png``, the image exactly as the model saw it (after
resizing and cropping; compare adversarial examples with this one), and ``<stem>_<attack>.png``, the
adversarial example, plus ``results.csv`` / ``results.json`` with one row per input.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from smoothadv.attacks import ATTACKS, FIXED_DISTORTION_ATTACKS, make_attack
from smoothadv.core.errors import ConfigError, InputError
from smoothadv.core.images import read_image, save_image
from smoothadv.core.validation import check_keywords, check_positive_int, make_output_dir
from smoothadv.experiments.defaults import resolve_preset
from smoothadv.models.spec import ModelSpec
from smoothadv.report import write_records_csv

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
CLEAN_SUFFIX = "_clean"


@check_keywords
def craft_files(model: str | ModelSpec, attack: str, inputs: Sequence[str | Path], out_dir: str | Path, *,
                epsilon: float | None = None, preset: str | None = None, labels: Sequence[int] | None = None,
                quantize: bool = True, batch_size: int = 16, device: str | torch.device = "cpu",
                overwrite: bool = False, progress: bool = False) -> dict:
    """Attack every input image and write its clean crop, its adversarial PNG and the results table.

    Args:
        model: registry name, TorchScript file, ``module:factory``, spec file or :class:`ModelSpec`.
        attack: attack name (``fgsm``, ``ifgsm``, ``pgd2``, ``qpgd2``, ``cw``, ``scw``, ``deepfool``).
        inputs: image files; each is resized and centre-cropped to the model's input size.
        out_dir: output folder (created).
        epsilon: budget of a fixed-distortion attack (default: the preset's).
        preset: ``mnist`` or ``imagenet`` parameters (default: the model's, see
            :func:`~smoothadv.experiments.defaults.resolve_preset`).
        labels: true labels, one per input; None uses the model's predictions on the clean images
            (the summary says so). An input the model already misclassifies is reported as such, never
            as fooled, and gets no adversarial file.
        quantize: round to 8 bits and re-check success (what a saved PNG holds).
        batch_size: images attacked together.
        device: where the model runs.
        overwrite: replace the files of an earlier run in ``out_dir`` (else such a run is refused).
        progress: show a progress bar over the batches.

    Returns:
        A summary: ``records`` (one per image, with its ``input``, ``clean`` and ``output`` paths and
        ``status``), ``labels_from_model``, ``preset`` and where it came from, ``renamed`` (inputs whose
        file names clash, and the names used), and the table paths.

    Raises:
        ConfigError: no inputs, bad labels, an epsilon for an attack without one, or an ``out_dir``
            holding an earlier run (without ``overwrite``).
        DataError: an unreadable image or one that does not fit the model.
    """
    spec = ModelSpec.parse(model)
    if not inputs:
        raise ConfigError("give at least one input image.")
    check_positive_int(batch_size, "batch_size")
    paths = [Path(p) for p in inputs]
    if labels is not None:
        labels = _check_labels(labels, len(paths))
    size, info = spec.require_input_size(), spec.info()
    preset, preset_from = resolve_preset(spec, preset)
    key = ATTACKS.resolve(attack)
    overrides = {}
    if epsilon is not None:
        if not ATTACKS[key].fixed_distortion:
            allowed = ", ".join(FIXED_DISTORTION_ATTACKS)
            raise ConfigError(f"--epsilon applies to {allowed} only, not {attack}.")
        overrides["epsilon"] = epsilon
    images = torch.stack([read_image(path, channels=info.channels, size=size, resize=info.resize)
                          for path in paths])
    out_dir = make_output_dir(out_dir)
    network = spec.load(device)
    attacker = make_attack(key, network, preset=preset, quantize=quantize, **overrides)
    stems, renamed = output_stems(paths)
    targets = [(out_dir / f"{stem}{CLEAN_SUFFIX}.png", out_dir / f"{stem}_{attacker.name}.png")
               for stem in stems]
    _refuse_earlier_run(out_dir, [path for pair in targets for path in pair], overwrite)

    records = []
    from tqdm import tqdm

    starts = range(0, len(paths), batch_size)
    for start in tqdm(starts, desc=attacker.name, unit="batch", disable=not progress or len(starts) < 2):
        batch = images[start:start + batch_size].to(device)
        batch_labels = None if labels is None else torch.tensor(labels[start:start + batch_size])
        result = attacker(batch, batch_labels)
        for offset, record in enumerate(result.to_records()):
            index = start + offset
            clean_path, adversarial_path = targets[index]
            save_image(images[index], clean_path)
            if record["clean_correct"]:
                save_image(result.adversarial[offset], adversarial_path)
            status = ("fooled" if record["success"] else
                      "not fooled" if record["clean_correct"] else "already misclassified")
            records.append({"input": str(paths[index]), "clean": str(clean_path),
                            "output": str(adversarial_path) if record["clean_correct"] else None,
                            "status": status, **record})
    summary = {
        "model": spec.display_name, "model_spec": spec.to_dict(), "attack": attacker.name, "preset": preset,
        "preset_from": preset_from, "parameters": attacker.parameters(), "labels_from_model": labels is None,
        "renamed": renamed, "records": records,
        "csv": str(out_dir / RESULTS_CSV), "json": str(out_dir / RESULTS_JSON),
    }
    write_records_csv(records, summary["csv"])
    Path(summary["json"]).write_text(json.dumps(summary, indent=2, default=str))
    return summary


def output_stems(paths: Sequence[Path]) -> tuple[list[str], dict[str, str]]:
    """File stems for the outputs of ``paths``, unique: inputs whose stems clash (``a/x.png``, ``b/x.png``)
    get their folder's name in front (``a_x``, ``b_x``), then a number if still needed.

    Returns:
        (one stem per path, ``{input path: stem}`` for the renamed ones).
    """
    counts = Counter(path.stem for path in paths)
    used = {path.stem for path in paths if counts[path.stem] == 1}
    stems, renamed = [], {}
    for path in paths:
        stem = path.stem
        if counts[stem] > 1:
            base = f"{path.resolve().parent.name or 'root'}_{path.stem}"
            stem, number = base, 2
            while stem in used:
                stem, number = f"{base}-{number}", number + 1
            renamed[str(path)] = stem
        used.add(stem)
        stems.append(stem)
    return stems, renamed


def _check_labels(labels: Sequence[int], count: int) -> list[int]:
    if len(labels) != count:
        raise ConfigError(f"got {len(labels)} labels for {count} images; give one label per image.")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in labels):
        raise InputError(f"labels must be class indices >= 0, got {list(labels)!r}.")
    return list(labels)


def _refuse_earlier_run(out_dir: Path, outputs: list[Path], overwrite: bool) -> None:
    existing = [path for path in [out_dir / RESULTS_JSON, out_dir / RESULTS_CSV, *outputs] if path.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more file(s)" if len(existing) > 1 else ""
        raise ConfigError(
            f"{out_dir} already holds {existing[0].name}{more} from an earlier run; give another --out, "
            "or --overwrite to replace them."
        )



def score_results(folder: str | Path, *, scale: str = "2011") -> dict:
    """MAD, PSNR and SSIM of every adversarial file of a ``smoothadv attack`` folder against the clean
    input the model saw (``<stem>_clean.png``), read from its ``results.json``. Images below MAD's
    minimum size are upsampled for MAD as in the evaluation (MNIST 28x28 -> 112x112).

    Returns:
        ``{"folder", "attack", "model", "scores": [{"input", "clean", "output", "mad", "psnr", ...}]}``;
        inputs without an adversarial file (already misclassified) are listed with ``"skipped"``.

    Raises:
        DataError: no ``results.json`` in ``folder``, or one that is not ours.
    """
    from smoothadv.core.errors import DataError
    from smoothadv.perceptual import quality_report

    folder = Path(folder)
    path = folder / RESULTS_JSON
    if not path.is_file():
        raise DataError(f"{folder} holds no {RESULTS_JSON}: give the --out folder of `smoothadv attack`, "
                        "or two image files.")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        records = summary["records"]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path} is not a results file of `smoothadv attack` ({error}).") from error
    scores = []
    for record in records:
        clean, output = record.get("clean"), record.get("output")
        if clean is None:
            raise DataError(f"{path} was written by an older smoothadv without the clean crops; run "
                            "`smoothadv attack` again.")
        entry = {"input": record["input"], "clean": clean, "output": output}
        if output is None:
            scores.append({**entry, "skipped": record.get("status", "no adversarial file")})
            continue
        report = quality_report(_beside(folder, clean), _beside(folder, output), scale=scale,
                                upsample_to="auto")
        scores.append({**entry, **report.to_dict()})
    return {"folder": str(folder), "attack": summary.get("attack"), "model": summary.get("model"),
            "scale": scale, "scores": scores}


def _beside(folder: Path, recorded: str) -> Path:
    """A recorded output path, or the file of that name in ``folder`` when the folder was moved."""
    path = Path(recorded)
    return path if path.is_file() else folder / path.name
