"""The README's main job: all six attacks on MNIST C4, a few hundred images, one HTML report, in minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from smoothadv.data import load_mnist
from smoothadv.evaluation.runner import evaluate
from smoothadv.experiments.paper import PAPER_ATTACKS
from smoothadv.models import load_model
from smoothadv.report import table_text, write_report

#: Images of the demo and the reduced C&W/sC&W search; chosen so the demo runs in a few minutes on two
#: CPU cores (measured: see docs/evaluation.md).
DEMO_IMAGES = 300
DEMO_CW = {"binary_search_steps": 5, "steps": 50}


def run_quick_demo(
    out_dir: str | Path = "out/demo",
    *,
    images: int = DEMO_IMAGES,
    progress: bool = True,
    restart: bool = False,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Evaluate FGSM, I-FGSM, PGD2, C&W, qPGD2 and sC&W on C4 over the first ``images`` MNIST test images.

    Uses the MNIST preset (epsilon grids of section 5.1) with C&W and sC&W reduced to
    ``DEMO_CW`` (5 binary-search steps of 50 iterations instead of 9 x 100). Resumable like any evaluation.

    Args:
        out_dir: output folder (records, tables, plot, panel, ``report.html``).
        images: how many test images.
        progress: progress bars on stderr. restart: discard an earlier demo run in ``out_dir``.
        device: where the model runs.

    Returns:
        ``{"report": path of report.html, "table": [row dicts], "text": the table as text, "files": {...},
        "seconds": wall time, "notes": [...]}``.
    """
    model = load_model("c4", device)
    data = load_mnist("test", limit=images)
    options = {"cw": dict(DEMO_CW), "scw": dict(DEMO_CW)}
    result = evaluate(
        model,
        data,
        PAPER_ATTACKS,
        out_dir,
        model_name="c4",
        preset="mnist",
        attack_options=options,
        batch_size=100,
        restart=restart,
        progress=progress,
        extra_config={"demo": True},
    )
    notes = [
        f"Demo: first {images} MNIST test images; C&W and sC&W run {DEMO_CW['binary_search_steps']} "
        f"binary-search steps of {DEMO_CW['steps']} iterations (the paper: 9 x 100). "
        "Run `smoothadv reproduce table1` for the full protocol."
    ]
    files = write_report(result, title="smoothadv demo: six attacks on C4 / MNIST", notes=notes)
    return {
        "report": files["report"],
        "table": [row.to_dict() for row in result.table],
        "text": table_text(result.table),
        "files": files,
        "seconds": result.seconds,
        "notes": notes,
    }
