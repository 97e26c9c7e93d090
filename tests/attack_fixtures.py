"""A tiny classifier and images with flat regions, shared by the attack tests."""

from __future__ import annotations

import torch
from torch import nn


def tiny_classifier(channels: int = 1, classes: int = 5, seed: int = 0) -> nn.Module:
    """A small random CNN on 12x12 images (deterministic), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 6 * 6, classes),
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model.eval()


def blocky_images(batch: int = 6, channels: int = 1, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Piecewise-constant 8-bit images: a bright rectangle on a dark background (flat regions + edges)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.full((batch, channels, size, size), 0.2)
    for b in range(batch):
        top, left = torch.randint(1, size // 2, (2,), generator=generator).tolist()
        level = 0.6 + 0.3 * torch.rand(channels, 1, 1, generator=generator)
        images[b, :, top:top + size // 2, left:left + size // 2] = level
    return torch.round(images * 255) / 255
