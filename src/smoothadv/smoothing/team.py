"""Torch's own OpenMP threads, borrowed to run compiled kernels side by side.

After each parallel region of torch (a convolution, a matrix product), its OpenMP workers spin on their
cores for milliseconds before they sleep (GNU libgomp's default). A thread of our own started in that time
waits for a core, so a solve split over our own threads right after the classifier runs no faster than on
one (``docs/smoothing.md``, "Two threads"). A parallel region opened in torch's OpenMP runtime itself runs
on those very workers, which take the work at once: :func:`run` opens one through the runtime's
``GOMP_parallel`` entry point (GNU libgomp; LLVM's libomp exports it too). That holds for a region opened
from the thread torch's own work runs on: a thread of a pool that opens one gets a team of new threads.

The region runs a Numba ``cfunc`` given a task table: an int64 array whose first two entries are the task
count and a counter, followed by one row of :data:`TASK_WIDTH` integers per task. Each thread of the team
claims tasks by an atomic increment of the counter (:func:`claim`) until none is left; a task row holds the
kernel's kind and its arguments, arrays as addresses (:func:`pointer`) and their sizes. The arrays must stay
alive until :func:`run` returns.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Integers per task row of a task table, after its two header entries. The compiled workers read it when
#: they are compiled; Numba's on-disk cache does not notice a change made here alone, so clear it then.
TASK_WIDTH = 24

_RUNTIME_NAMES = ("libgomp", "libomp", "libiomp5")


@functools.lru_cache(maxsize=1)
def _runtime() -> ctypes.CDLL | None:
    """A handle through which ``GOMP_parallel`` of torch's OpenMP runtime is looked up, or None: torch
    built without OpenMP, no such runtime in this process, or ``SMOOTHADV_TORCH_TEAM=0``.

    First torch's own ``libtorch_cpu``: a symbol looked up through it is searched in the libraries it was
    linked with, so this finds the runtime torch's parallel regions use, wherever it was loaded from.
    Then the OpenMP runtimes already loaded, those inside torch's folder first. Only libraries already in
    the process are opened (``RTLD_NOLOAD``), so no second runtime is ever added."""
    if os.environ.get("SMOOTHADV_TORCH_TEAM", "").strip() == "0" or not torch.backends.openmp.is_available():
        return None
    torch_folder = os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "")
    library_folder = os.path.join(torch_folder, "lib")
    names = sorted(os.listdir(library_folder)) if os.path.isdir(library_folder) else []
    candidates = [os.path.join(library_folder, name) for name in names if name.startswith("libtorch_cpu.")]
    loaded = []
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/maps") as maps:
                loaded = [line.split(None, 5)[-1].strip() for line in maps if "/" in line]
        except OSError:
            loaded = []
    shipped = [os.path.join(library_folder, name) for name in names]
    runtimes = list(dict.fromkeys(path for path in loaded + shipped
                                  if os.path.basename(path).startswith(_RUNTIME_NAMES)))
    runtimes.sort(key=lambda path: not os.path.abspath(path).startswith(torch_folder))
    for path in candidates + runtimes:
        try:
            library = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0))
            function = library.GOMP_parallel
        except (OSError, AttributeError):
            continue
        function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        function.restype = None
        return library
    return None


#: Set in a child process made by ``fork``: GNU libgomp does not rebuild its thread pool in a child, whose
#: first parallel region then waits forever for the parent's threads (torch's own parallel operations hang
#: there too, unless the child first sets ``torch.set_num_threads(1)``). A child solves on one thread.
_FORKED = False


def _after_fork_in_child() -> None:
    global _FORKED
    _FORKED = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def available() -> bool:
    """Whether kernels can run on torch's OpenMP threads (see :func:`_runtime`); never in a forked child
    (see :data:`_FORKED`)."""
    return not _FORKED and _runtime() is not None


def task_table(count: int) -> np.ndarray:
    """An empty table for ``count`` tasks: (2 + count * TASK_WIDTH,) int64, the count set."""
    table = np.zeros(2 + count * TASK_WIDTH, np.int64)
    table[0] = count
    return table


def run(worker: int, table: np.ndarray, threads: int) -> None:
    """Run the tasks of ``table`` on ``threads`` of torch's OpenMP threads (this one among them) and wait.

    Args:
        worker: address of a ``cfunc`` ``void(void*)`` that claims and runs tasks from the table.
        table: from :func:`task_table`, its rows filled.
        threads: team size (at most the task count is useful), capped at ``torch.get_num_threads()``, the
            threads the user gave torch.
    """
    table[1] = 0
    _runtime().GOMP_parallel(worker, table.ctypes.data, max(1, min(int(threads), torch.get_num_threads())), 0)


@intrinsic
def claim(typingctx, table):
    """Atomically ``table[1] += 1``; returns the old value (the task this thread takes)."""
    def codegen(context, builder, signature, args):
        view = context.make_array(signature.args[0])(context, builder, args[0])
        index = context.get_constant(types.intp, 1)
        address = cgutils.get_item_pointer(context, builder, signature.args[0], view, [index],
                                           wraparound=False)
        return builder.atomic_rmw("add", address, ir.Constant(ir.IntType(64), 1), "seq_cst")
    return types.int64(table), codegen


@intrinsic
def pointer(typingctx, address):
    """The int64 ``address`` as a ``void*`` (for ``numba.carray``)."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(types.int64), codegen
