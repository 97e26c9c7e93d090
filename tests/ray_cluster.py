"""Run Ray where nothing but the loopback address exists: each command goes into a network namespace of its
own (``unshare --net``) whose only interface is ``lo``. Ray's servers bind every interface they see; in
such a namespace that is 127.0.0.1 alone, so no test exposes a port. Every process of the namespace is
killed when the test is done with it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

SMOOTHADV = [sys.executable, "-c", "import sys; from smoothadv.cli import main; sys.exit(main())"]
RAY_CLI = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"]
QUIET_RAY = {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONWARNINGS": "ignore::DeprecationWarning"}


@functools.cache
def loopback_namespace_problem() -> str | None:
    """Why commands cannot run in a loopback-only namespace here (None when they can), Ray included."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed (pip install 'smoothadv[ray]')"
    return None if _unshare() else "unshare --net fails here, also with --user --map-root-user"


@functools.cache
def _unshare() -> list[str] | None:
    """The ``unshare`` command that makes a network namespace here: as root, or inside a user namespace."""
    for command in (["unshare", "--net"], ["unshare", "--user", "--map-root-user", "--net"]):
        try:
            probe = subprocess.run([*command, "--", "sh", "-c", "ip link set lo up"], capture_output=True,
                                   timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return command
    return None


def needs_loopback_namespace():
    """A skip marker for tests that start Ray (with the reason when they cannot run here)."""
    problem = loopback_namespace_problem()
    return pytest.mark.skipif(problem is not None, reason=problem or "")


def in_loopback(argv: Sequence[str]) -> list[str]:
    """``argv`` run in a new network namespace with only ``lo``, brought up first."""
    return [*(_unshare() or ["unshare", "--net"]), "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
            *argv]


def environment(**extra: str) -> dict[str, str]:
    """This process's environment with Ray's telemetry off and smoothadv importable from the tree."""
    source = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **QUIET_RAY, "PYTHONPATH": path, **extra}


def namespace_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def processes_in(namespace: str) -> list[int]:
    """Every process whose network namespace is ``namespace``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and namespace_of(int(entry)) == namespace:
            pids.append(int(entry))
    return pids


def kill_namespace(namespace: str | None) -> None:
    """SIGKILL every process left in ``namespace`` (Ray's servers and workers included)."""
    if namespace is None or namespace == namespace_of(os.getpid()):
        return
    for pid in processes_in(namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def loopback_process(argv: Sequence[str], *, log: Path, **env: str) -> Iterator[subprocess.Popen]:
    """Start ``argv`` in a loopback-only namespace (stdout and stderr to ``log``); on leaving, kill what is
    left of it and of its namespace."""
    with open(log, "wb") as handle:
        process = subprocess.Popen(in_loopback(argv), stdout=handle, stderr=subprocess.STDOUT,
                                   env=environment(**env))
    namespace = None
    for _ in range(200):  # the namespace exists once sh has run
        namespace = namespace_of(process.pid)
        if namespace != namespace_of(os.getpid()) or process.poll() is not None:
            break
        time.sleep(0.01)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        kill_namespace(namespace)


def run_in_loopback(argv: Sequence[str], *, log: Path, timeout: float, **env: str) -> int:
    """Run ``argv`` to its end in a loopback-only namespace, at most ``timeout`` seconds."""
    with loopback_process(argv, log=log, **env) as process:
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            tail = log.read_text()[-3000:]
            pytest.fail(f"{' '.join(argv[-12:])} ran over {timeout:.0f} s; its output:\n{tail}")


def json_output(log: Path) -> dict:
    """The JSON object a ``--json`` command printed (its last top-level ``{...}`` block in ``log``)."""
    text = log.read_text()
    start = text.rfind("\n{\n")
    start = 0 if text.startswith("{\n") and start < 0 else start + 1
    return json.loads(text[start : text.rindex("\n}") + 2])


def records_without_timing(path: Path) -> list[str]:
    """The records of a records file (markers included), each as sorted JSON without its timing field,
    in sorted order: equal for runs that did the same work in any order."""
    from smoothadv.evaluation.records import parse_records

    records, finished, _ = parse_records(path.read_bytes(), path)
    rows = [json.dumps({k: v for k, v in r.items() if k != "seconds"}, sort_keys=True) for r in records]
    return sorted(rows + [f"batch {key}" for key in finished])


def worker_running_a_unit() -> int | None:
    """The pid of a Ray worker actor that is inside :meth:`EvaluationWorker.run` now, if any."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::EvaluationWorker.run"):
                return int(entry)
    return None


def attack_batches(path: Path) -> int:
    """Attack batches finished in a records file (0 while it does not exist)."""
    if not path.exists():
        return 0
    return sum(line.startswith(b'{"count"') and b'"key": "attack|' in line
               for line in path.read_bytes().splitlines())
