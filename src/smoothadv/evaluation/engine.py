"""Where an evaluation's batches run: the units of work, the worker that runs one, and the local engine.

An evaluation is a list of units, each a deterministic, keyed batch: a :class:`CleanJob` (one model
classifies some images) or a :class:`~.batch.BatchJob` (one attack at one epsilon on some images). A
:class:`Workbench` turns a unit and its images into a :class:`UnitOutput` (the records and the adversarial
images to keep); the driver, and only the driver, writes them to the output folder. An engine decides where
workbenches live: :class:`LocalEngine` runs one in this process, one unit after the other;
:class:`~.ray_engine.RayEngine` runs one per Ray worker actor. Because each unit seeds torch from its key
(:func:`~.batch.seed_batch`), the records do not depend on the engine, the number of workers or the order
in which units finish.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from smoothadv.data import ImageDataset
from smoothadv.evaluation.batch import (
    BatchJob,
    attack_batch,
    batch_records,
    kept_images_step,
    mad_step,
    seed_batch,
    transfer_step,
)
from smoothadv.evaluation.plan import EvaluationPlan


@dataclass(frozen=True)
class CleanJob:
    """One unit of the clean pass: ``model`` classifies the images at dataset positions ``indices``.

    Attributes:
        model: model name. key: the batch key of the records file. indices: dataset positions. ids: their
            image ids.
    """

    model: str
    key: str
    indices: list[int]
    ids: list[str]


Unit = CleanJob | BatchJob


@dataclass
class UnitOutput:
    """What a unit produced, for the driver to write.

    Attributes:
        key: the unit's batch key. records: its records (see :mod:`.records`).
        classes: number of logits of the model (clean units; the driver checks the labels fit).
        adversarial_ids / adversarial: ids and (B', C, H, W) float images of the adversarial examples to
            keep (attack units with ``save_adversarial``), on the CPU.
        worker: who ran it (``"local"`` or a Ray node and process), for the engine's statistics.
    """

    key: str
    records: list[dict]
    classes: int | None = None
    adversarial_ids: list[str] = field(default_factory=list)
    adversarial: torch.Tensor | None = None
    worker: str = "local"


@dataclass
class WorkContext:
    """Everything a worker needs besides the units: built once per evaluation by the driver.

    Attributes:
        models: name -> model, the attacked one first (``model_name``), then the transfer targets.
        model_name: the attacked model. plan: what to run. mad_upsample: MAD's upsampling side (or None).
        device: where the driver's models are (the local engine runs there).
        dataset: the images; the driver reads each unit's images from it.
    """

    models: Mapping[str, nn.Module]
    model_name: str
    plan: EvaluationPlan
    mad_upsample: int | None
    device: torch.device
    dataset: ImageDataset


class Workbench:
    """Runs units on the models it holds; keeps the last attack it built (units come grouped by attack).

    Args:
        models: name -> model (the attacked one is ``model_name``), all on ``device``.
        model_name: the attacked model. plan: the evaluation plan. mad_upsample: MAD's upsampling side.
        device: where the units' images are moved before they meet the models.
    """

    def __init__(self, models: Mapping[str, nn.Module], model_name: str, plan: EvaluationPlan,
                 mad_upsample: int | None, device: torch.device):
        self.models = dict(models)
        self.model_name = model_name
        self.plan = plan
        self.mad_upsample = mad_upsample
        self.device = torch.device(device)
        self._attack_key: tuple | None = None
        self._attack = None

    def run(self, unit: Unit, images: torch.Tensor, labels: torch.Tensor) -> UnitOutput:
        """Run ``unit`` on its (B, C, H, W) ``images`` with (B,) ``labels``."""
        images, labels = images.to(self.device), labels.to(self.device)
        if isinstance(unit, CleanJob):
            return self._classify(unit, images, labels)
        return self._attack_unit(unit, images, labels)

    def _classify(self, unit: CleanJob, images: torch.Tensor, labels: torch.Tensor) -> UnitOutput:
        seed_batch(self.plan.seed, unit.key)  # a model with randomness predicts the same on any engine
        with torch.no_grad():
            logits = self.models[unit.model](images)
        predictions, labels = logits.argmax(dim=1).cpu(), labels.cpu()
        records = [
            {
                "kind": "clean",
                "model": unit.model,
                "image_id": unit.ids[k],
                "index": unit.indices[k],
                "label": int(labels[k]),
                "prediction": int(predictions[k]),
                "correct": bool(predictions[k] == labels[k]),
            }
            for k in range(len(unit.indices))
        ]
        return UnitOutput(unit.key, records, classes=int(logits.shape[1]))

    def _attack_unit(self, unit: BatchJob, images: torch.Tensor, labels: torch.Tensor) -> UnitOutput:
        model = self.models[self.model_name]
        if self._attack_key != (unit.attack, unit.epsilon):
            self._attack = self.plan.attack(unit.attack, model, unit.epsilon)
            self._attack_key = (unit.attack, unit.epsilon)
        seed_batch(self.plan.seed, unit.key)
        outcome = attack_batch(unit, self._attack, images, labels, self.model_name)
        transfer_step(outcome, {name: m for name, m in self.models.items() if name != self.model_name})
        if self.plan.perceptual:
            mad_step(outcome, self.mad_upsample)
        output = UnitOutput(unit.key, batch_records(outcome, self.model_name))
        if self.plan.save_adversarial:
            output.adversarial_ids, output.adversarial = kept_images_step(outcome)
        return output


def unit_inputs(dataset: ImageDataset, unit: Unit) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, C, H, W) images and (B,) labels of ``unit``, read from ``dataset``."""
    batch = dataset.batch(unit.indices)
    return batch.images, batch.labels


@dataclass
class EngineReport:
    """What an engine says about a run, beside the records (``EvaluationResult.engine``).

    Attributes:
        name: ``"local"`` or ``"ray"``. device: where the models ran. workers: largest number of workers
            alive at once.
        units_by_worker: units run per worker. retried: units run again after their worker was lost or
            raised. workers_lost: workers that died while they held a unit.
        failed: ``{"key", "error", "attempts"}`` of each unit that failed every attempt (not written; a
            re-run tries them again).
        start_seconds: from opening the engine to its first worker ready (importing smoothadv, loading
            the models).
        attacks_skipped: a clean batch of the attacked model failed, so no attack ran.
    """

    name: str
    device: str = "cpu"
    workers: int = 1
    units_by_worker: dict[str, int] = field(default_factory=dict)
    retried: int = 0
    workers_lost: int = 0
    failed: list[dict] = field(default_factory=list)
    start_seconds: float = 0.0
    attacks_skipped: bool = False

    def count(self, worker: str) -> None:
        """One more unit run by ``worker``."""
        self.units_by_worker[worker] = self.units_by_worker.get(worker, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        nodes = {worker.split("/")[0] for worker in self.units_by_worker}
        return {"name": self.name, "device": self.device, "workers": self.workers,
                "nodes": max(1, len(nodes)), "units_by_worker": dict(self.units_by_worker),
                "retried": self.retried, "workers_lost": self.workers_lost, "failed": list(self.failed),
                "start_seconds": self.start_seconds, "attacks_skipped": self.attacks_skipped}


Accept = Callable[[Unit, UnitOutput], None]


class Progress(Protocol):
    """The progress bar an engine advances (see ``runner._bar``)."""

    def update(self, n: int) -> None: ...

    def postfix(self, text: str) -> None: ...


class EngineSession(Protocol):
    """An engine opened on one evaluation's :class:`WorkContext`."""

    report: EngineReport

    def run(self, units: Sequence[Unit], accept: Accept, progress: Progress) -> None:
        """Run every unit and hand each output to ``accept`` (in the driver) as it arrives."""

    def close(self) -> None:
        """Release the workers."""


class Engine(Protocol):
    """Runs units of work: :class:`LocalEngine` or :class:`~.ray_engine.RayEngine`."""

    name: str

    def open(self, context: WorkContext) -> EngineSession: ...


class LocalEngine:
    """Runs every unit in this process, in order, on the driver's models (the default engine)."""

    name = "local"

    def open(self, context: WorkContext) -> _LocalSession:
        return _LocalSession(context)


class _LocalSession:
    def __init__(self, context: WorkContext):
        self.context = context
        self.bench = Workbench(context.models, context.model_name, context.plan, context.mad_upsample,
                               context.device)
        self.report = EngineReport("local", device=str(context.device))

    def run(self, units: Sequence[Unit], accept: Accept, progress: Progress) -> None:
        for unit in units:
            accept(unit, self.bench.run(unit, *unit_inputs(self.context.dataset, unit)))
            self.report.count("local")
            progress.update(len(unit.indices))

    def close(self) -> None:
        pass
