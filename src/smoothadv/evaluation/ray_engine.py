"""The Ray engine: an evaluation's units run on a pool of Ray worker actors, on one machine or a cluster.

Each worker actor loads the models once (they travel through Ray's object store, pickled, and are put on
the worker's device), then runs one unit at a time on a :class:`~.engine.Workbench`. A unit's
images travel with it through the object store, so the nodes need no shared file system; with
``shared_data`` a lazily read image folder is read by the workers themselves, at the same path. The driver
keeps the only handle on the output folder: outputs come back to it and it writes them as they arrive.

Faults: a unit whose worker dies (killed, out of memory, its node gone) is queued again and runs on
another worker, which replaces the lost one; a unit that raises is tried again once and then reported
(key and error in :attr:`~.engine.EngineReport.failed`) while the other units go on. Nothing a lost worker
did reaches the records, so no record is written twice. Without a fixed ``workers`` count the pool grows
when a node joins and frees a CPU (or GPU).

Ray is an optional dependency: ``pip install 'smoothadv[ray]'``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from smoothadv.core.errors import ConfigError, warn
from smoothadv.core.runtime import resolve_device
from smoothadv.core.validation import check_positive_int
from smoothadv.evaluation.engine import (
    Accept,
    EngineReport,
    Progress,
    Unit,
    UnitOutput,
    Workbench,
    WorkContext,
    unit_inputs,
)

START_TIMEOUT_S = 120.0
POLL_S = 1.0
MAX_START_FAILURES = 3


def import_ray():
    """The ``ray`` module, or a ConfigError that names the extra to install."""
    try:
        import ray
    except ImportError:
        import sys

        raise ConfigError(
            "the Ray engine needs Ray, an optional dependency: install it with "
            f"{sys.executable} -m pip install 'smoothadv[ray]' (or pip install ray), or use the local engine."
        ) from None
    return ray


class RayEngine:
    """Run an evaluation's batches on Ray worker actors.

    Args:
        address: the cluster to join (``host:port`` of its head, or ``auto``); default: ``RAY_ADDRESS`` if
            set, else a Ray instance started on this machine for this run and stopped after it.
        workers: number of worker actors; default: one per CPU of the cluster (one per GPU when the workers
            use CUDA), growing when nodes join.
        device: the workers' device (``cpu``, ``cuda``); default: ``cuda`` when the cluster has GPUs, else
            ``cpu``. A CPU worker asks Ray for one CPU and runs one torch thread; a CUDA worker asks for one
            GPU.
        shared_data: the dataset is an image folder that every node sees at the same path: workers read the
            images there instead of receiving them from the driver.
        num_cpus: CPUs of the Ray instance started on this machine (default: all); ignored with ``address``.
        max_attempts: runs of a unit that raises before it is reported as failed.
        max_losses: workers a unit may lose (die under it) before it is reported as failed.

    Raises:
        ConfigError: bad counts; when the engine is opened, Ray missing or no worker able to start.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, workers: int | None = None, device: str | None = None,
                 shared_data: bool = False, num_cpus: int | None = None, max_attempts: int = 2,
                 max_losses: int = 5):
        for value, label in ((workers, "workers"), (num_cpus, "num_cpus")):
            if value is not None:
                check_positive_int(value, label)
        check_positive_int(max_attempts, "max_attempts")
        check_positive_int(max_losses, "max_losses")
        self.address = address
        self.workers = workers
        self.device = device
        self.shared_data = shared_data
        self.num_cpus = num_cpus
        self.max_attempts = max_attempts
        self.max_losses = max_losses

    def open(self, context: WorkContext) -> _RaySession:
        """Connect to (or start) Ray and start the workers for ``context``."""
        if self.shared_data and not context.dataset.lazy:
            raise ConfigError(
                f"shared data: {context.dataset.source} is held in memory, not read from an image folder; "
                "drop --shared-data (its images travel to the workers) or give an image folder."
            )
        return _RaySession(self, context)


def pack_model(model: nn.Module) -> bytes:
    """A model as bytes that load on any device (see :func:`unpack_model`).

    The module is pickled with cloudpickle, so classes defined in a script, or in the user's own package
    (not installed in site-packages), travel by value; TorchScript parts (a scripted model, or one wrapped
    in a normalisation) travel as TorchScript archives; tensors on any device load on the worker's.

    Args:
        model: the driver's model, left untouched.

    Returns:
        The bytes to put in Ray's object store.
    """
    import types

    from ray import cloudpickle

    class Pickler(cloudpickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, torch.jit.ScriptModule):
                archive = io.BytesIO()
                torch.jit.save(obj, archive)
                return _load_script, (archive.getvalue(),)
            return super().reducer_override(obj)

    registered = set(cloudpickle.list_registry_pickle_by_value())
    by_value = {_own_package(type(m).__module__) for m in model.modules()} - {None} - registered
    for package in by_value:
        cloudpickle.register_pickle_by_value(sys.modules[package])
    try:
        buffer = io.BytesIO()
        pickle_module = types.SimpleNamespace(Pickler=Pickler, __name__="cloudpickle")
        torch.save(model, buffer, pickle_module=pickle_module)
    finally:
        for package in by_value:
            cloudpickle.unregister_pickle_by_value(sys.modules[package])
    return buffer.getvalue()


def _own_package(module: str) -> str | None:
    """The top-level package of ``module`` when it is the user's own code (not installed, so the workers
    may lack it: it travels by value), else None (installed packages, torch and smoothadv included, are
    imported by the workers)."""
    package = module.split(".")[0]
    if package in ("torch", "smoothadv", "builtins", "__main__") or package not in sys.modules:
        return None
    where = getattr(sys.modules[package], "__file__", None)
    if where is None:
        return None  # a namespace or built-in package
    where = os.path.abspath(where)
    installed = ("site-packages", "dist-packages")
    if any(part in installed for part in where.split(os.sep)) or where.startswith(sys.base_prefix):
        return None
    return package


def _load_script(archive: bytes) -> nn.Module:
    return torch.jit.load(io.BytesIO(archive), map_location="cpu")


def unpack_model(packed: bytes, device: torch.device) -> nn.Module:
    """The model of :func:`pack_model` on ``device``, in eval mode.

    Args:
        packed: from :func:`pack_model`. device: where to put it.
    """
    model = torch.load(io.BytesIO(packed), map_location=device, weights_only=False)
    return model.to(device).eval()


class EvaluationWorker:
    """A Ray actor (wrapped by ``ray.remote`` when the engine opens): loads the models once, runs units."""

    def __init__(self, payload: dict[str, Any], device: str):
        import ray

        self.device = resolve_device(device)
        if self.device.type == "cpu":
            torch.set_num_threads(1)
        models = {name: unpack_model(packed, self.device) for name, packed in payload["models"].items()}
        self.bench = Workbench(models, payload["model_name"], payload["plan"], payload["mad_upsample"],
                               self.device)
        self.dataset = payload.get("dataset")
        self.name = f"{ray.get_runtime_context().get_node_id()[:8]}/pid{os.getpid()}"

    def ready(self) -> str:
        """The worker's name (node and process), once the models are loaded."""
        return self.name

    def run(self, unit: Unit, images: torch.Tensor | None, labels: torch.Tensor | None) -> UnitOutput:
        """Run ``unit`` on its (B, C, H, W) ``images`` and (B,) ``labels``, or, both None, on the images
        the worker reads from the shared dataset."""
        if images is None:
            images, labels = unit_inputs(self.dataset, unit)
        output = self.bench.run(unit, images, labels)
        output.worker = self.name
        return output


class _RaySession:
    def __init__(self, engine: RayEngine, context: WorkContext):
        ray = self.ray = import_ray()
        self.opened_at = self.none_alive_since = time.monotonic()
        self.engine, self.context = engine, context
        self.report = EngineReport("ray")
        self.started_ray = False
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            address = engine.address or os.environ.get("RAY_ADDRESS") or "local"
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            if address == "local":
                options["num_cpus"] = engine.num_cpus
            else:
                _use_cluster_token()
            try:
                ray.init(address=address, **options)
            except ConnectionError as error:
                raise ConfigError(f"cannot reach the Ray cluster at {address!r} ({error}); start it with "
                                  "`ray start --head` or fix --address.") from None
            self.started_ray = True
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise

    def _prepare(self) -> None:
        ray, engine, context = self.ray, self.engine, self.context
        resources = ray.cluster_resources()
        device = engine.device or ("cuda" if resources.get("GPU", 0) >= 1 else "cpu")
        try:
            kind = torch.device(device).type  # not resolve_device: this (driver) machine may lack it
        except (RuntimeError, ValueError):
            raise ConfigError(f"unknown device {device!r}; give cpu, cuda or auto.") from None
        if kind == "cuda":
            device = "cuda"  # Ray shows each GPU worker the one GPU it was given, as cuda:0
        self.resource = "GPU" if device == "cuda" else "CPU"
        payload = {
            "models": {name: pack_model(model) for name, model in context.models.items()},
            "model_name": context.model_name,
            "plan": context.plan,
            "mad_upsample": context.mad_upsample,
            "dataset": context.dataset if engine.shared_data else None,
        }
        self.payload = ray.put(payload)
        request = {"num_cpus": 1, "num_gpus": 1} if self.resource == "GPU" else {"num_cpus": 1}
        self.actor_class = ray.remote(max_restarts=0, max_task_retries=0, **request)(EvaluationWorker)
        self.device = self.report.device = device
        self.starting: dict[Any, Any] = {}  # ready() ref -> actor
        self.idle: list[Any] = []
        self.names: dict[Any, str] = {}
        self.start_failures = 0
        self.growth_stopped = False
        if resources.get(self.resource, 0) < 1:
            raise ConfigError(f"the Ray cluster has no {self.resource} for {device} workers ({resources}); "
                              "add a node that has one, or pick another --device.")
        target = engine.workers or int(resources[self.resource])
        for _ in range(target):
            self._start_worker()

    def _start_worker(self) -> None:
        actor = self.actor_class.remote(self.payload, self.device)
        self.starting[actor.ready.remote()] = actor

    def _maybe_grow(self, queued: int) -> None:
        """Without a fixed worker count, start one more worker when a CPU (GPU) is free and work waits."""
        if self.engine.workers is not None or self.starting or not queued or self.growth_stopped:
            return
        if self.ray.available_resources().get(self.resource, 0) >= 1:
            self._start_worker()

    def run(self, units: Sequence[Unit], accept: Accept, progress: Progress) -> None:
        ray = self.ray
        queue = deque(units)
        attempts: dict[str, int] = {}
        losses: dict[str, int] = {}
        running: dict[Any, tuple[Unit, Any]] = {}
        last_growth = time.monotonic()
        while queue or running:
            while self.idle and queue:
                unit, actor = queue.popleft(), self.idle.pop()
                inputs = (None, None) if self.engine.shared_data else unit_inputs(self.context.dataset, unit)
                running[actor.run.remote(unit, *inputs)] = (unit, actor)
            if time.monotonic() - last_growth > 2 * POLL_S:
                self._maybe_grow(len(queue))
                last_growth = time.monotonic()
            progress.postfix(f"{len(running)} of {len(self.names)} workers busy")
            done, _ = ray.wait(list(running) + list(self.starting), num_returns=1, timeout=POLL_S)
            if not done:
                self._check_started()
                continue
            ref = done[0]
            if ref in self.starting:
                self._worker_started(ref)
                continue
            unit, actor = running.pop(ref)
            try:
                output = ray.get(ref)
            except ray.exceptions.RayTaskError as error:
                self._replace(actor)  # the retry runs in a fresh process: a broken worker is not reused
                attempts[unit.key] = attempts.get(unit.key, 0) + 1
                if attempts[unit.key] >= self.engine.max_attempts:
                    self._fail(unit, _describe(error), attempts[unit.key])
                else:
                    self.report.retried += 1
                    queue.append(unit)
                continue
            except ray.exceptions.RayError as error:
                self._lose(actor)
                losses[unit.key] = losses.get(unit.key, 0) + 1
                if losses[unit.key] >= self.engine.max_losses:
                    self._fail(unit, f"lost {losses[unit.key]} workers ({type(error).__name__})",
                               losses[unit.key])
                else:
                    self.report.retried += 1
                    queue.appendleft(unit)
                continue
            self.idle.append(actor)
            accept(unit, output)
            self.report.count(output.worker)
            progress.update(len(unit.indices))

    def _worker_started(self, ref) -> None:
        actor = self.starting.pop(ref)
        try:
            self.names[actor] = self.ray.get(ref)
        except self.ray.exceptions.RayError as error:  # its __init__ raised, or it was killed starting
            self.start_failures += 1
            if self.start_failures < MAX_START_FAILURES:
                self._start_worker()
                return
            if self.names or self.starting:  # others run, or may still come up: go on without this one
                if not self.growth_stopped:
                    warn(f"Ray workers fail to start on some node ({_describe(error)[:500]}); going on "
                         "with the others.", RuntimeWarning)
                self.growth_stopped = True
                return
            raise ConfigError(
                f"Ray workers fail to start ({self.start_failures} in a row): {_describe(error)[:2000]}\n"
                "Every node needs smoothadv and torch installed, and the device asked for."
            ) from None
        self.start_failures = 0
        self.idle.append(actor)
        if not self.report.start_seconds:
            self.report.start_seconds = time.monotonic() - self.opened_at
        self.report.workers = max(self.report.workers, len(self.names))

    def _lose(self, actor) -> None:
        self.report.workers_lost += 1
        self._replace(actor)

    def _replace(self, actor) -> None:
        """Kill ``actor`` (it may be alive but unreachable, holding its CPU/GPU) and start another."""
        with contextlib.suppress(Exception):
            self.ray.kill(actor)
        self.names.pop(actor, None)
        if not self.names:
            self.none_alive_since = time.monotonic()
        self._start_worker()

    def _fail(self, unit: Unit, error: str, attempts: int) -> None:
        self.report.failed.append({"key": unit.key, "error": error, "attempts": attempts})

    def _check_started(self) -> None:
        """Give up when no worker has been alive for :data:`START_TIMEOUT_S` (none can be placed)."""
        if not self.names and time.monotonic() - self.none_alive_since > START_TIMEOUT_S:
            raise ConfigError(
                f"no Ray worker started within {START_TIMEOUT_S:.0f} s; each needs one {self.resource} and "
                f"the cluster has {self.ray.cluster_resources()}. Add nodes or lower --workers."
            )

    def close(self) -> None:
        ray = self.ray
        for actor in [*getattr(self, "names", {}), *getattr(self, "starting", {}).values()]:
            with contextlib.suppress(Exception):  # an actor already gone is fine
                ray.kill(actor)
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False


def _use_cluster_token() -> None:
    """Join a cluster with token authentication (what ``ray start`` turns on since Ray 2.5x) as
    ``ray start --address`` does: with the token of ``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token`` when one
    exists and ``RAY_AUTH_MODE`` is not set. Ray versions without token authentication need nothing."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:
        return
    with contextlib.suppress(Exception):  # a private API: if it changed, Ray's own error says what to do
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _describe(error: Exception) -> str:
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {cause}".strip()
