"""Per-image records on disk: an append-only JSON-lines file that survives Ctrl-C and ``kill -9``.

Every finished batch is appended as its records followed by one ``{"kind": "batch", "key": ...}`` marker
line, in a single write that is flushed and ``fsync``-ed before the next batch starts. On opening, the
file is read up to the last complete marker and cut there: a half-written last line, or the records of a
batch whose marker never reached the disk, are dropped (that batch is simply run again). The keys of the
finished batches tell a resumed run what to skip, so no record is ever written twice.

The image store keeps each batch's successful adversarial images, 8-bit, in ``adversarial/<hash>.npz``
(:func:`save_adversarial`, :func:`load_adversarial`), for the report's panels.

Record kinds (all JSON objects with a ``"kind"`` field):

* ``"clean"``: one per image and model: ``model``, ``image_id``, ``index``, ``label``, ``prediction``,
  ``correct``.
* ``"attack"``: one per attacked image, attack, epsilon and evaluated model: ``model`` (where success
  is measured), ``source_model`` (the attacked one), ``attack``, ``epsilon`` (None for minimisation
  attacks), ``parameters``, ``image_id``, ``index``, ``label``, ``prediction``, ``success``, ``l2``,
  ``linf``, ``iterations``, ``gradient_evaluations``, ``seconds`` (the batch time shared over its images),
  ``batch`` (the batch key), ``mad`` (None unless computed).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smoothadv.core.errors import ConfigError, DataError
from smoothadv.core.images import to_uint8

RECORDS_FILE = "records.jsonl"
ADVERSARIAL_DIR = "adversarial"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
BATCH_KIND = "batch"


def batch_key(stage: str, model: str, attack: str | None, epsilon: float | None, ids: Sequence[str]) -> str:
    """Stable key of one unit of work: (stage, model, attack, epsilon, the batch's image ids).

    The ids are hashed so the key stays short whatever the batch size.
    """
    digest = hashlib.sha1("\n".join(ids).encode("utf-8")).hexdigest()[:16]
    eps = "-" if epsilon is None else repr(float(epsilon))
    return f"{stage}|{model}|{attack or '-'}|{eps}|{ids[0] if ids else ''}+{len(ids)}|{digest}"


class RecordStore:
    """The records file of one output folder.

    Args:
        path: the ``records.jsonl`` file (created with its folder if missing).

    Attributes:
        records: every record of the finished batches, in file order.
        finished: keys of the finished batches.
        trimmed_bytes: how many bytes of an unfinished tail were cut when the file was opened.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        self.finished: set[str] = set()
        self.trimmed_bytes = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            self.path.touch()
            return
        data = self.path.read_bytes()
        self.records, self.finished, good_end = parse_records(data, self.path)
        if good_end < len(data):
            self.trimmed_bytes = len(data) - good_end
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())

    def append_batch(self, key: str, records: Iterable[dict[str, Any]]) -> None:
        """Append a batch's records and its marker in one write, then flush and fsync.

        Raises:
            ConfigError: ``key`` was finished already (a caller bug: it must skip finished batches).
        """
        if key in self.finished:
            raise ConfigError(f"batch {key!r} is already in {self.path}; skip finished batches.")
        records = list(records)
        lines = [json.dumps(record, sort_keys=True, allow_nan=False) for record in records]
        lines.append(json.dumps({"kind": BATCH_KIND, "key": key, "count": len(records)}, sort_keys=True))
        payload = ("\n".join(lines) + "\n").encode("utf-8")
        with open(self.path, "ab") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        self.records.extend(records)
        self.finished.add(key)


def parse_records(data: bytes, path: Path) -> tuple[list[dict[str, Any]], set[str], int]:
    """The records and keys of the finished batches in a records file's bytes, and where they end.

    Everything after the last complete batch marker (a half-written or damaged line, a batch whose marker
    never reached the disk) is left out: ``end`` is the byte offset just after that marker.

    Raises:
        DataError: a line that is not a smoothadv record, or a batch marker that appears twice.
    """
    records: list[dict[str, Any]] = []
    finished: set[str] = set()
    pending: list[dict[str, Any]] = []
    end = position = 0
    while position < len(data):
        newline = data.find(b"\n", position)
        if newline < 0:
            break  # a half-written last line
        line = data[position:newline]
        position = newline + 1
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            break  # damaged line: everything after the last marker is redone
        if not isinstance(item, dict) or "kind" not in item:
            raise DataError(f"{path}: line is not a smoothadv record: {line[:80]!r}.")
        if item["kind"] == BATCH_KIND:
            key = item.get("key")
            if key in finished:
                raise DataError(
                    f"{path}: batch {key!r} appears twice (the file was edited, or two runs wrote "
                    "to it at once); use a new --out folder or --restart."
                )
            finished.add(key)
            records.extend(pending)
            pending = []
            end = position
        else:
            pending.append(item)
    return records, finished, end


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of the finished batches in a records file or an output folder (read only, no trimming)."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORDS_FILE
    if not path.is_file():
        raise DataError(f"no records file at {path}; run `smoothadv evaluate --out {path.parent}` first.")
    return parse_records(path.read_bytes(), path)[0]


def adversarial_file(out_dir: str | Path, key: str) -> Path:
    """Where the adversarial images of batch ``key`` are kept (``adversarial/<hash>.npz``)."""
    return Path(out_dir) / ADVERSARIAL_DIR / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".npz")


def save_adversarial(out_dir: str | Path, key: str, ids: Sequence[str], images: torch.Tensor) -> Path:
    """Keep the (B, C, H, W) adversarial images of ``ids`` from batch ``key`` as 8-bit values, fsync-ed."""
    path = adversarial_file(out_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez_compressed(handle, ids=np.array(list(ids)), images=to_uint8(images).cpu().numpy())
        handle.flush()
        os.fsync(handle.fileno())
    return path


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


def clear_adversarial(out_dir: str | Path) -> None:
    """Delete every kept adversarial image of ``out_dir`` (a restarted run)."""
    folder = Path(out_dir) / ADVERSARIAL_DIR
    if folder.is_dir():
        for stale in folder.glob("*.npz"):
            stale.unlink()


def write_config(folder: str | Path, config: dict[str, Any], *, restart: bool = False) -> None:
    """Record the run configuration in ``folder``, or check it against the one already there.

    Args:
        folder: output folder.
        config: JSON-ready description of everything that changes the results.
        restart: delete the folder's records and configuration first (a fresh run).

    Raises:
        ConfigError: the folder holds a run with a different configuration (and ``restart`` is off).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / CONFIG_FILE
    normalised = json.loads(json.dumps(config, sort_keys=True))
    if restart:
        for name in (RECORDS_FILE, CONFIG_FILE):
            (folder / name).unlink(missing_ok=True)
    if config_path.exists():
        try:
            existing = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"{config_path} is damaged ({error}); use a new --out folder or --restart."
            ) from error
        if existing != normalised:
            changed = sorted(
                k for k in set(existing) | set(normalised) if existing.get(k) != normalised.get(k)
            )
            raise ConfigError(
                f"{folder} holds a run with a different configuration (differs in: {', '.join(changed)}); "
                "use a new --out folder, or --restart to discard the records there."
            )
        return
    if (folder / RECORDS_FILE).exists() and (folder / RECORDS_FILE).stat().st_size > 0:
        raise ConfigError(f"{folder} has records but no {CONFIG_FILE}; use a new --out folder or --restart.")
    temporary = config_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(normalised, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, config_path)


def read_config(folder: str | Path) -> dict[str, Any]:
    """The configuration recorded in an output folder."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise DataError(f"no {CONFIG_FILE} in {folder}; is it an evaluation output folder?")
    return json.loads(path.read_text(encoding="utf-8"))


class FolderLock:
    """An exclusive lock on an output folder, so two runs never append to the same records file.

    Uses ``fcntl.flock`` on ``folder/.lock``; the operating system releases it when the process ends,
    even by ``kill -9``. Where ``fcntl`` does not exist (Windows) the lock is a no-op.

    Raises:
        ConfigError: on entering, when another process holds the lock.
    """

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_FILE
        self._handle = None

    def __enter__(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise ConfigError(
                f"another evaluation (pid {owner}) is writing to {self.path.parent}; wait for it to finish "
                "or stop it, or use a new --out folder."
            ) from error
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.close()  # closing releases the flock
            self._handle = None
