"""Running a model on image files: their top-K classes (``smoothadv predict``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from smoothadv.core.errors import ConfigError, ModelError
from smoothadv.core.images import read_image
from smoothadv.core.validation import check_keywords, check_positive_int
from smoothadv.models.spec import ModelSpec


@check_keywords
def predict_files(
    model: str | ModelSpec,
    paths: Sequence[str | Path],
    *,
    top: int = 5,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
) -> list[dict]:
    """Top-``top`` classes of ``model`` for each image file.

    Each image is read and preprocessed as the model expects (channel check, resize of the shorter side
    and centre crop to the model's input size).

    Args:
        model: registry name, user model, spec file or :class:`~smoothadv.models.ModelSpec` (user models
            declare their input size, channels and normalisation there).
        paths: image files.
        top: number of classes to report per image.
        device: where to run the model.
        batch_size: images per forward pass.

    Returns:
        One ``{"image": path, "top": [[index, name, probability], ...]}`` per file, in order; the name is
        the class number as text when the model has no class names.

    Raises:
        ModelError: unknown model. ConfigError: a user model without a declared input size, ``top`` < 1
            or no images. DataError: an image cannot be read or does not fit the model.
    """
    check_positive_int(top, "top")
    if not paths:
        raise ConfigError("give at least one image file.")
    spec = ModelSpec.parse(model)
    size, info = spec.require_input_size(), spec.info()
    images = [read_image(p, channels=info.channels, size=size, resize=info.resize) for p in paths]
    model = spec.load(device)
    spec_name = spec.display_name
    names = info.class_names()
    results = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.stack(images[start : start + batch_size]).to(device)
            logits = model(batch)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch.shape[0]:
                raise ModelError(
                    f"{spec_name} must return (B, K) logits, got {getattr(logits, 'shape', logits)!r}."
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
