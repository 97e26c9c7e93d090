"""The devices tests run on: the CPU always, CUDA when present (those cases are marked ``cuda``, so a GPU
run is ``pytest -m cuda``; without a GPU they are skipped)."""

import pytest
import torch

CUDA = pytest.param(
    "cuda",
    marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")],
    id="cuda",
)
DEVICES = ["cpu", CUDA]
