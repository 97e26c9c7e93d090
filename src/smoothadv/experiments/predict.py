"""Running a model on image files: their top-K classes (``smoothadv predict``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from smoothadv.core.errors import ConfigError, ModelError
from smoothadv.core.images import read_image
from smoothadv.models import load_model, model_info


def predict_files(
    spec: str,
    paths: Sequence[str | Path],
    *,
    top: int = 5,
    device: str = "cpu",
    weights: str | Path | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: int | None = None,
    channels: int | None = None,
    batch_size: int = 16,
) -> list[dict]:
    """Top-``top`` classes of the model named by ``spec`` for each image file.

    Each image is read and preprocessed as the model expects (channel check, resize of the shorter side
    and centre crop to the model's input size).

    Args:
        spec: model name or user spec (see :func:`smoothadv.models.load_model`).
        paths: image files.
        top: number of classes to report per image.
        device: where to run the model.
        weights, mean, std: see :func:`~smoothadv.models.load_model` (user models).
        input_size, channels: declared input of a user model (required for user models).
        batch_size: images per forward pass.

    Returns:
        One ``{"image": path, "top": [[index, name, probability], ...]}`` per file, in order; the name is
        the class number as text when the model has no class names.

    Raises:
        ModelError: unknown model, or a user model without a declared input size.
        DataError: an image cannot be read or does not fit the model.
        ConfigError: ``top`` < 1 or no images.
    """
    if not isinstance(top, int) or top < 1:
        raise ConfigError(f"top must be a positive integer, got {top!r}.")
    if not paths:
        raise ConfigError("give at least one image file.")
    info = model_info(spec, input_size=input_size, channels=channels)
    if info.input_size is None:
        raise ModelError(
            f"declare the input size of user model {spec!r} (--input-size N; and --channels 1 "
            "for greyscale): it is not guessed."
        )
    images = [read_image(p, channels=info.channels, size=info.input_size, resize=info.resize) for p in paths]
    model = load_model(spec, device, weights=weights, mean=mean, std=std)
    names = info.class_names()
    results = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.stack(images[start : start + batch_size]).to(device)
            logits = model(batch)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch.shape[0]:
                raise ModelError(
                    f"{spec} must return (B, K) logits, got {getattr(logits, 'shape', logits)!r}."
                )
            probabilities = logits.float().softmax(dim=1).cpu()
            values, indices = probabilities.topk(min(top, probabilities.shape[1]), dim=1)
            for offset in range(batch.shape[0]):
                entries = []
                for value, index in zip(values[offset].tolist(), indices[offset].tolist(), strict=False):
                    name = names[index] if names is not None and index < len(names) else str(index)
                    entries.append([index, name, value])
                results.append({"image": str(paths[start + offset]), "top": entries})
    return results
