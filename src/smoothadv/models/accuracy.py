"""Clean top-1 accuracy of a model: the one function every accuracy in the registry and training uses."""

from __future__ import annotations

import torch
from torch import nn

from smoothadv.data import ImageDataset


@torch.no_grad()
def measure_accuracy(model: nn.Module, data: ImageDataset | tuple[torch.Tensor, torch.Tensor], *,
                     batch_size: int = 100) -> tuple[int, int]:
    """(correct, total) top-1 predictions of ``model`` on a dataset or an ``(images, labels)`` pair.

    Args:
        model: (B, C, H, W) in [0, 1] -> (B, K) logits.
        data: an :class:`~smoothadv.data.ImageDataset`, or (N, C, H, W) images with (N,) int64 labels.
        batch_size: images per forward pass.
    """
    if isinstance(data, ImageDataset):
        batches = ((batch.images, batch.labels) for batch in data.batches(batch_size))
        total = len(data)
    else:
        images, labels = data
        batches = ((images[i:i + batch_size], labels[i:i + batch_size])
                   for i in range(0, len(labels), batch_size))
        total = len(labels)
    correct = sum(int((model(images).argmax(dim=1) == labels).sum()) for images, labels in batches)
    return correct, total
