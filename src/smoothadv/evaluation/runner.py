"""The evaluation runner of section 5.1: batches, epsilon grids, transfer targets, resumable records.

``evaluate(model, data, ["pgd2", "scw"], "out/run")`` classifies every image, attacks the correctly
classified ones batch by batch, and appends one record per image to ``out/run/records.jsonl`` as each
batch finishes (see :mod:`.records`). Killing it and calling it again with the same arguments resumes
where it stopped; the run configuration is kept in ``out/run/config.json`` and a run with another
configuration is refused. Tables and curves are computed from the records (:mod:`.metrics`).

Work order: the clean pass (every model, every batch), then attack by attack, epsilon by epsilon (the
grid in ascending order), batch by batch. Each batch's random state is seeded from ``seed`` and the batch
key, so a resumed run gives the records an uninterrupted run gives. The batches run on an engine
(:mod:`.engine`): here, in order, or on a Ray cluster (:mod:`.ray_engine`), where they finish in any order;
either way this process alone writes the output folder.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smoothadv.core.errors import ConfigError, DataError
from smoothadv.core.validation import make_output_dir
from smoothadv.data import ImageDataset
from smoothadv.evaluation.batch import BatchJob
from smoothadv.evaluation.engine import (
    CleanJob,
    Engine,
    EngineReport,
    EngineSession,
    LocalEngine,
    Unit,
    UnitOutput,
    WorkContext,
)
from smoothadv.evaluation.metrics import AttackStatistics, summary_table
from smoothadv.evaluation.plan import EvaluationPlan, as_dataset
from smoothadv.evaluation.records import (
    RECORDS_FILE,
    FolderLock,
    RecordStore,
    batch_key,
    clear_adversarial,
    save_adversarial,
    write_config,
)

CONFIG_VERSION = 1


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns.

    Attributes:
        out_dir: output folder. records: every record (clean and attack). table: one row per (model, attack).
        config: the recorded configuration. dataset: the images (for panels).
        models: name -> model. resumed_batches / ran_batches: batches found on disk / run now.
        trimmed_bytes: bytes of an unfinished batch cut from the records file when resuming.
        seconds: wall time of this call. engine: what the engine reports (workers, retries, failed units).
    """

    out_dir: Path
    records: list[dict]
    table: list[AttackStatistics]
    config: dict
    dataset: ImageDataset
    models: dict[str, Any]
    resumed_batches: int
    ran_batches: int
    trimmed_bytes: int
    seconds: float
    engine: EngineReport = field(default_factory=lambda: EngineReport("local"))

    def to_dict(self) -> dict:
        """JSON-ready summary (without the records)."""
        return {
            "out_dir": str(self.out_dir),
            "table": [row.to_dict() for row in self.table],
            "config": self.config,
            "resumed_batches": self.resumed_batches,
            "ran_batches": self.ran_batches,
            "seconds": self.seconds,
            "engine": self.engine.to_dict(),
        }


def model_fingerprint(model: Any) -> str:
    """SHA-256 (first 16 hex digits) of a module's class and state dict: changes with any weight."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    if isinstance(model, nn.Module):
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def evaluate(
    model: nn.Module,
    data: Any,
    plan: EvaluationPlan | Any,
    out_dir: str | Path,
    *,
    model_name: str = "model",
    transfer_to: Mapping[str, nn.Module] | None = None,
    restart: bool = False,
    progress: bool = True,
    extra_config: Mapping[str, Any] | None = None,
    engine: Engine | str | None = None,
    **plan_options: Any,
) -> EvaluationResult:
    """Run the protocol of section 5.1 and keep every per-image result in ``out_dir``.

    Args:
        model: the attacked classifier, (B, C, H, W) in [0, 1] -> (B, K) logits, in eval mode.
        data: an :class:`~smoothadv.data.ImageDataset` or a tuple ``(images, labels[, ids])``.
        plan: an :class:`~.plan.EvaluationPlan`, or attack names (``"fgsm,pgd2"``, a list) with the plan's
            other fields as keyword arguments (``preset=``, ``epsilons=``, ``batch_size=``, ...).
        out_dir: output folder; ``records.jsonl``, ``config.json`` and ``adversarial/`` go there.
        model_name: name of ``model`` in the records.
        transfer_to: ``{name: model}``: also measure each attack's adversarial images on these models
            (transferability, Table 3); the attack itself only sees ``model``.
        restart: discard records of an earlier run in ``out_dir`` instead of resuming.
        progress: show tqdm progress bars (images/s and ETA) on stderr.
        extra_config: more JSON-ready entries for ``config.json`` (e.g. how the model was loaded).
        engine: where the batches run: ``"local"`` (default: this process, in order), ``"ray"`` or a
            :class:`~.ray_engine.RayEngine` (a Ray cluster's workers). The engine is not part of the
            configuration: a run started on one engine can be resumed on the other, with equal records.
        **plan_options: fields of :class:`~.plan.EvaluationPlan` when ``plan`` is attack names.

    Returns:
        An :class:`EvaluationResult` with all records and the table.

    Raises:
        ConfigError: unknown attack or preset, bad grid, unknown engine, or ``out_dir`` holds a
            different run.
    """
    start = time.perf_counter()
    if isinstance(plan, EvaluationPlan):
        if plan_options:
            raise ConfigError(f"give {', '.join(plan_options)} in the EvaluationPlan, not beside it.")
    else:
        try:
            plan = EvaluationPlan(plan, **plan_options)
        except TypeError as error:
            raise ConfigError(f"evaluate(): {error}; see smoothadv.evaluation.EvaluationPlan.") from None
    dataset = as_dataset(data, plan.limit)
    targets = dict(transfer_to or {})
    if model_name in targets:
        raise ConfigError(f"transfer target {model_name!r} has the attacked model's name; rename one.")
    models = {model_name: model, **targets}
    device = _device_of(model)
    mad_upsample = plan.mad_upsample_for(dataset.image_shape)
    parameters = {
        name: [plan.attack(name, model, eps).parameters() for eps in plan.grids[name]]
        for name in plan.attacks
    }
    config = {
        "version": CONFIG_VERSION,
        "model": model_name,
        "models": {name: model_fingerprint(m) for name, m in models.items()},
        "transfer_to": list(targets),
        "data": {
            "source": dataset.source,
            "size": len(dataset),
            "image_shape": list(dataset.image_shape),
            "ids_sha1": hashlib.sha1("\n".join(dataset.ids).encode()).hexdigest(),
        },
        **plan.to_config(),
        "attack_parameters": parameters,
        "perceptual": (
            {"metric": "MAD", "scale": "2011", "upsample_to": mad_upsample} if plan.perceptual else None
        ),
        **dict(extra_config or {}),
    }
    out_dir = make_output_dir(out_dir)
    engine = resolve_engine(engine)
    context = WorkContext(models, model_name, plan, mad_upsample, device, dataset)
    with FolderLock(out_dir):
        write_config(out_dir, config, restart=restart)
        if restart:
            clear_adversarial(out_dir)
        store = RecordStore(out_dir / RECORDS_FILE)
        resumed = len(store.finished)
        ran = 0

        def accept(unit: Unit, output: UnitOutput) -> None:
            nonlocal ran
            if isinstance(unit, CleanJob):
                _check_labels_fit(dataset.labels[unit.indices], output.classes, unit.ids, unit.model)
            elif output.adversarial is not None:
                save_adversarial(out_dir, unit.key, output.adversarial_ids, output.adversarial)
            store.append_batch(unit.key, output.records)
            ran += 1

        session = engine.open(context)
        try:
            clean_units = [
                CleanJob(name, batch_key("clean", name, None, None, ids), chunk, ids)
                for name in models
                for chunk in _chunks(range(len(dataset)), plan.batch_size)
                for ids in ([dataset.ids[i] for i in chunk],)
            ]
            _run_units(session, clean_units, store, accept, "clean pass", progress)
            # the attack batches are cut from the correctly classified images: without every clean record
            # of the attacked model they would get other images and keys than a complete run's
            if any(f["key"].startswith(f"clean|{model_name}|") for f in session.report.failed):
                session.report.attacks_skipped = True  # a re-run does the clean batch, then the attacks
            else:
                _attack_pass(session, store, accept, dataset, plan, parameters, model_name, engine.name,
                             progress)
        finally:
            session.close()
    return EvaluationResult(
        out_dir=out_dir,
        records=list(store.records),
        table=summary_table(store.records),
        config=config,
        dataset=dataset,
        models=models,
        resumed_batches=resumed,
        ran_batches=ran,
        trimmed_bytes=store.trimmed_bytes,
        seconds=time.perf_counter() - start,
        engine=session.report,
    )


def _attack_pass(session: EngineSession, store: RecordStore, accept, dataset: ImageDataset,
                 plan: EvaluationPlan, parameters: dict, model_name: str, engine_name: str,
                 progress: bool) -> None:
    """Attack the images ``model_name`` classifies correctly, attack by attack, epsilon by epsilon."""
    correct = {
        r["image_id"] for r in store.records
        if r["kind"] == "clean" and r["model"] == model_name and r["correct"]
    }
    attacked = [i for i in range(len(dataset)) if dataset.ids[i] in correct]
    units = [
        BatchJob(name, eps, params, batch_key("attack", model_name, name, eps, ids), chunk, ids)
        for name in plan.attacks
        for eps, params in zip(plan.grids[name], parameters[name], strict=True)
        for chunk in _chunks(attacked, plan.batch_size)
        for ids in ([dataset.ids[i] for i in chunk],)
    ]
    if engine_name == "local":  # one bar per attack: their costs differ too much for one ETA
        for name in plan.attacks:
            _run_units(session, [u for u in units if u.attack == name], store, accept, name, progress)
    else:  # one bar over every worker
        _run_units(session, units, store, accept, "attacks", progress)


def _chunks(indices, size: int) -> list[list[int]]:
    indices = list(indices)
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def _run_units(session: EngineSession, units: list[Unit], store: RecordStore, accept, desc: str,
               progress: bool) -> None:
    """Run the units not finished yet, with one progress bar (images) over all of them."""
    todo = [unit for unit in units if unit.key not in store.finished]
    total = sum(len(unit.indices) for unit in units)
    done = total - sum(len(unit.indices) for unit in todo)
    with _bar(total, desc, "img", progress, initial=done) as bar:
        session.run(todo, accept, bar)


def resolve_engine(engine: Engine | str | None) -> Engine:
    """``None``/``"local"`` -> :class:`LocalEngine`, ``"ray"`` -> a :class:`RayEngine` with its defaults,
    or an engine object as it is."""
    if engine is None or engine == "local":
        return LocalEngine()
    if engine == "ray":
        from smoothadv.evaluation.ray_engine import RayEngine

        return RayEngine()
    if isinstance(engine, str):
        raise ConfigError(f"unknown engine {engine!r}: give 'local' or 'ray'.")
    return engine


def _check_labels_fit(labels: torch.Tensor, classes: int, ids: list[str], model_name: str) -> None:
    """A label the model cannot output would count as a misclassified image: refuse it instead."""
    bad = [(image_id, int(label)) for image_id, label in zip(ids, labels.tolist(), strict=True)
           if not 0 <= label < classes]
    if bad:
        shown = ", ".join(f"{image_id} -> {label}" for image_id, label in bad[:3])
        raise DataError(
            f"{len(bad)} label(s) outside 0..{classes - 1}, the classes of {model_name} ({shown}); fix the "
            "labels (labels.csv) or give the model they are for."
        )


def _device_of(model: Any) -> torch.device:
    if isinstance(model, nn.Module):
        parameter = next(model.parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")


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

    def postfix(self, text: str) -> None:
        """Show ``text`` after the rate (the current attack, or the workers in use)."""
        if self.bar is not None and text != self.bar.postfix:
            self.bar.set_postfix_str(text, refresh=False)
