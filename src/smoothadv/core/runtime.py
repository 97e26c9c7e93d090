"""Where models run: the torch device from a user's string, and the CPU threads torch may use.

Torch's default of one thread per core is a poor choice on a machine that is already busy: the threads
of two processes then wait on each other (the README has the measurement). :func:`default_threads`
therefore leaves the cores that the load average says are taken.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from smoothadv.core.errors import ConfigError
from smoothadv.core.validation import check_positive_int

#: Upper bound of the default thread count (small models stop scaling well before it).
MAX_DEFAULT_THREADS = 16


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """The available CPUs minus the ones the 1-minute load average says are busy (at least 1)."""
    cpus = available_cpus()
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):
        busy = 0
    return max(1, min(cpus - busy, cpus, MAX_DEFAULT_THREADS))


@dataclass(frozen=True)
class Runtime:
    """The device and CPU threads a command runs with (printed in its configuration)."""

    device: torch.device
    threads: int
    threads_chosen: bool

    def to_dict(self) -> dict:
        how = f"chosen for this machine ({available_cpus()} CPUs, load average taken into account)"
        return {"device": str(self.device), "threads": self.threads,
                "threads_from": how if self.threads_chosen else "--threads"}

    def describe(self) -> str:
        origin = f"of {available_cpus()} CPUs, chosen from the load" if self.threads_chosen else "--threads"
        return f"device {self.device}, {self.threads} CPU thread{'s' if self.threads > 1 else ''} ({origin})"


def resolve_device(device: str | torch.device | None = "cpu") -> torch.device:
    """A torch device from ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto`` (CUDA when available).

    Raises:
        ConfigError: an unknown device string, or a device this torch build or machine does not have.
    """
    if isinstance(device, torch.device):
        resolved = device
    else:
        text = "auto" if device is None else str(device).strip().lower()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            resolved = torch.device(text)
        except (RuntimeError, ValueError):
            raise ConfigError(
                f"unknown device {device!r}; give cpu, cuda, cuda:N (N-th GPU), mps or auto."
            ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no visible CUDA device"
            raise ConfigError(
                f"device {device!r} asked for, but this Python has {build} (torch {torch.__version__}); "
                "use --device cpu, or install a CUDA build of torch."
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(f"device {device!r}: this machine has {count} CUDA device(s), "
                              f"numbered 0 to {count - 1}.")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available here; use --device cpu.")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r} is not supported; give cpu, cuda, cuda:N, mps or auto.")
    return resolved


def set_runtime(device: str | torch.device | None = "cpu", threads: int | None = None) -> Runtime:
    """Resolve ``device`` and set torch's CPU threads (``threads`` or :func:`default_threads`).

    Raises:
        ConfigError: bad device (see :func:`resolve_device`) or a thread count below 1.
    """
    resolved = resolve_device(device)
    if threads is not None:
        check_positive_int(threads, "threads")
    chosen = threads is None
    count = default_threads() if chosen else threads
    torch.set_num_threads(count)
    return Runtime(device=resolved, threads=count, threads_chosen=chosen)
