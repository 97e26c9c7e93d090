"""A pickle reader that rebuilds numpy arrays and nothing else.

Pickle files can run arbitrary code when loaded. The classic ``mnist.pkl.gz`` only needs three globals to
rebuild its arrays (numpy's array-reconstruction function, ``numpy.ndarray`` and ``numpy.dtype``), so we
allow exactly those (plus ``_codecs.encode`` restricted to latin1, which Python 3 protocol-2 pickles use
to store raw bytes) and refuse every other global with a :class:`DataError`.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO

import numpy as np

from smoothadv.core.errors import DataError

try:  # numpy >= 2 moved the implementation to numpy._core; the old path still works but warns
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``, which Python 3 protocol-2 pickles use to rebuild ``bytes``."""
    if encoding.replace("-", "").lower() != "latin1" or not isinstance(text, str):
        raise DataError(
            f"refusing to unpickle _codecs.encode with encoding {encoding!r} (only latin1 is used "
            "for array bytes)"
        )
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle {module}.{name}: this file holds more than numpy arrays "
                "(only numpy array data is accepted, since unpickling other objects can run code)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError("refusing to unpickle a persistent reference; only plain numpy arrays are accepted")


def load_arrays_pickle(stream: BinaryIO | bytes) -> Any:
    """Unpickle ``stream`` allowing only numpy arrays inside tuples, lists, dicts and plain values.

    Python 2 pickles (like ``mnist.pkl.gz``) are read with ``encoding="latin1"``, which numpy needs to
    rebuild the raw array bytes.

    Raises:
        DataError: the pickle references anything other than numpy's array-reconstruction globals, or is
            corrupt.
    """
    if isinstance(stream, (bytes, bytearray)):
        stream = io.BytesIO(stream)
    try:
        return _ArrayOnlyUnpickler(stream, encoding="latin1").load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, OSError) as error:
        raise DataError(f"corrupt or unsupported pickle data ({type(error).__name__}: {error})") from error
