"""Experiments: what the command line runs, as library calls. Each resolves its defaults once
(:mod:`.defaults`) and calls the layers below.

* :func:`run_evaluation` (``smoothadv evaluate``), :func:`reproduce` (the paper's Tables 1-3, whose
  numbers are data in :mod:`.paper`), :func:`run_quick_demo` (the README's main job);
* :func:`craft_files` (``smoothadv attack``), :func:`predict_files`, :func:`train_c4`;
* :mod:`.figures`: the paper's Figs. 1 and 4.
"""

from smoothadv.experiments.craft import craft_files
from smoothadv.experiments.defaults import batch_size_for, default_dataset, preset_for_model
from smoothadv.experiments.demo import run_quick_demo
from smoothadv.experiments.jobs import resolve_data, run_evaluation
from smoothadv.experiments.paper import PAPER_ATTACKS, PAPER_TABLES
from smoothadv.experiments.predict import predict_files
from smoothadv.experiments.reproduce import reproduce
from smoothadv.experiments.training import train_c4

__all__ = [
    "PAPER_ATTACKS",
    "PAPER_TABLES",
    "batch_size_for",
    "craft_files",
    "default_dataset",
    "predict_files",
    "preset_for_model",
    "reproduce",
    "resolve_data",
    "run_evaluation",
    "run_quick_demo",
    "train_c4",
]
