"""A folder of PNG/JPEG images as a dataset, labelled by a CSV file or by the model's own predictions."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from smoothadv.core.errors import ConfigError, DataError, warn
from smoothadv.core.images import IMAGE_SUFFIXES, image_channels, read_image
from smoothadv.data.dataset import ImageDataset

DEFAULT_LABELS_FILE = "labels.csv"


class SkippedFileWarning(UserWarning):
    """An input file was left out of a dataset (non-strict loading); the dataset records why."""


def load_image_folder(
    folder: str | Path,
    *,
    channels: int,
    size: int,
    resize: int | None = None,
    labels: str | Path | None = None,
    model: Callable[[torch.Tensor], torch.Tensor] | None = None,
    class_names: Sequence[str] | None = None,
    strict: bool = False,
    lazy: bool = False,
    verify: bool = False,
    batch_size: int = 32,
) -> ImageDataset:
    """Load every image file (PNG, JPEG, ...) directly inside ``folder`` as a labelled dataset.

    Labels come from a CSV file with rows ``filename,label`` (an optional header row is skipped; a label
    is a class number, or a class name when ``class_names`` is given). ``labels=None`` uses
    ``folder/labels.csv`` when it exists; otherwise every image is labelled with ``model``'s prediction on
    it and the dataset says so (``labels_from_model=True``).

    Args:
        folder: the folder (not searched recursively).
        channels: 1 or 3, as the model expects; images with another number of channels are bad files.
        size: model input side; each image is resized (shorter side ``resize``) and centre-cropped to it.
        resize: shorter side before cropping (default ``size``).
        labels: CSV file, or None (see above).
        model: (B, C, size, size) images in [0, 1] -> (B, K) logits; needed only without labels.
        class_names: names of the K classes, to read names in the CSV and for reports.
        strict: raise on the first bad file or label row instead of skipping it with a warning.
        lazy: check each file's header now and decode images only when a batch needs them (by absolute
            path, so a process in another working directory reads the same files).
        verify: with ``lazy``, decode each image once now (the checks of an eager load: transparency,
            truncated files) instead of reading its header only.
        batch_size: batch size for the model's predictions.

    Returns:
        An :class:`ImageDataset` whose ``skipped`` lists every left-out file with the reason.

    Raises:
        DataError: missing folder, no usable image, bad CSV (or, with ``strict``, any bad file or row).
        ConfigError: no labels and no model.
    """
    _validate_channels(channels)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
    csv_path = Path(labels).expanduser() if labels is not None else folder / DEFAULT_LABELS_FILE
    use_csv = labels is not None or csv_path.is_file()
    if not use_csv and model is None:
        raise ConfigError(
            f"{folder} has no {DEFAULT_LABELS_FILE}: give a labels CSV (rows `filename,label`) or a model "
            "whose predictions on the clean images become the labels."
        )
    skipped: list[tuple[str, str]] = []

    def reject(name: str, reason: str) -> None:
        if strict:
            raise DataError(f"{folder / name}: {reason}")
        skipped.append((name, reason))
        warn(f"skipping {folder / name}: {reason}", SkippedFileWarning)

    label_of: dict[str, int] = {}
    if use_csv:
        label_of = _read_labels_csv(csv_path, class_names, reject)
        present = {p.name for p in files}
        for name in label_of:
            if name not in present:
                reject(name, f"listed in {csv_path.name} but no such image file is in the folder")
    kept: list[Path] = []
    images: list[torch.Tensor] = []
    for path in files:
        if use_csv and path.name not in label_of:
            if path.name not in {name for name, _ in skipped}:  # a bad label row was reported already
                reject(path.name, f"no label row for this file in {csv_path.name}")
            continue
        try:
            if not lazy:
                images.append(read_image(path, channels=channels, size=size, resize=resize))
            elif verify:
                read_image(path, channels=channels, size=size, resize=resize)
            else:
                _check_header(path, channels=channels, size=size)
        except DataError as error:
            reject(path.name, str(error).removeprefix(f"{path}: "))
            continue
        kept.append(path.absolute() if lazy else path)
    if not kept:
        raise DataError(f"no usable image in {folder}: " + "; ".join(f"{n}: {r}" for n, r in skipped))

    def load(index: int) -> torch.Tensor:
        return read_image(kept[index], channels=channels, size=size, resize=resize)

    stacked = None if lazy else torch.stack(images)
    ids = [p.name for p in kept]
    if use_csv:
        label_tensor = torch.tensor([label_of[name] for name in ids], dtype=torch.int64)
        how = f"labels from {csv_path.name}"
    else:
        label_tensor = predict_labels(model, stacked, load, len(kept), batch_size)
        how = "labels = the model's predictions on the clean images (no labels CSV)"
    return ImageDataset(
        labels=label_tensor,
        ids=ids,
        source=f"image folder {folder} ({len(kept)} images, {len(skipped)} skipped; {how})",
        image_shape=(channels, size, size),
        images=stacked,
        class_names=class_names,
        labels_from_model=not use_csv,
        skipped=skipped,
        load=load if lazy else None,
    )


def predict_labels(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor | None,
    load: Callable[[int], torch.Tensor],
    count: int,
    batch_size: int = 32,
) -> torch.Tensor:
    """(count,) int64 arg-max predictions of ``model`` on the images (a tensor, or read with ``load``)."""
    predictions = []
    with torch.no_grad():
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            batch = (
                images[start:stop]
                if images is not None
                else torch.stack([load(i) for i in range(start, stop)])
            )
            logits = model(batch)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != stop - start:
                raise DataError(
                    "the model must return (B, K) logits to label images; "
                    f"it returned {getattr(logits, 'shape', type(logits).__name__)}."
                )
            predictions.append(logits.argmax(dim=1).cpu())
    return torch.cat(predictions).to(torch.int64)


def _check_header(path: Path, *, channels: int, size: int) -> None:
    """Cheap check of a file (header only) for lazy loading: readable, channel count, size."""
    try:
        with Image.open(path) as image:
            found, width, height = image_channels(image), *image.size
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable image ({error}); give a PNG or JPEG file.") from error
    if found != channels:
        raise DataError(f"{path}: the image has {found} channel(s) but the model expects {channels}.")
    if min(width, height) < size:
        raise DataError(
            f"{path}: the image is {width}x{height} pixels, too small for the model's {size}x{size} input."
        )


def _read_labels_csv(
    path: Path, class_names: Sequence[str] | None, reject: Callable[[str, str], None]
) -> dict[str, int]:
    if not path.is_file():
        raise DataError(f"labels file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            rows = [row for row in csv.reader(stream) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read the labels CSV {path} ({error}); it must be UTF-8 text.") from error
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["filename", "label"]:
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path} has no label rows; write one `filename,label` row per image.")
    by_name = {name: i for i, name in enumerate(class_names)} if class_names is not None else {}
    n_classes = len(class_names) if class_names is not None else None
    labels: dict[str, int] = {}
    for line, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise DataError(
                f"{path}, row {line}: expected 2 columns `filename,label`, got {len(row)}: {row}."
            )
        name, text = row[0].strip(), row[1].strip()
        if name in labels:
            raise DataError(f"{path}, row {line}: {name} is labelled twice.")
        try:
            label = int(text)
        except ValueError:
            if text not in by_name:
                reject(
                    name, f"label {text!r} in {path.name} is neither a class number nor a known class name"
                )
                continue
            label = by_name[text]
        if label < 0 or (n_classes is not None and label >= n_classes):
            bound = f"0..{n_classes - 1}" if n_classes is not None else ">= 0"
            reject(name, f"label {label} in {path.name} is outside {bound}")
            continue
        labels[name] = label
    return labels


def _validate_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}.")
