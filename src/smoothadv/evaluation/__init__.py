"""Evaluation protocol of section 5.1: resumable per-image records, P_suc, D_bar, operating characteristic.

* :func:`evaluate` runs attacks over a dataset (epsilon grids, transfer targets) into an output folder of
  per-image records that a killed run resumes from;
* :mod:`.metrics` turns records into the paper's statistics (pure functions);
* :func:`run_evaluation` is the ``smoothadv evaluate`` job (models and data by name, plus the report);
  :func:`reproduce` rebuilds the paper's Tables 1-3; :func:`run_quick_demo` is the README's demo.
"""

from smoothadv.evaluation.metrics import (
    AttackStatistics,
    ImageOutcome,
    accuracy,
    attack_statistics,
    clean_results,
    evaluate_curve,
    image_outcomes,
    mean_distortion,
    median_distortion,
    operating_characteristic,
    success_probability,
    summary_table,
)
from smoothadv.evaluation.records import RecordStore, read_config, read_records
from smoothadv.evaluation.runner import EvaluationResult, Samples, as_samples, evaluate


def __getattr__(name):
    # The jobs import models, data and report modules: load them only when asked for.
    if name in ("run_evaluation", "resolve_data", "preset_for_model"):
        from smoothadv.evaluation import jobs

        return getattr(jobs, name)
    if name in ("reproduce", "PAPER_TABLES"):
        from smoothadv.evaluation import reproduce as module

        return getattr(module, name)
    if name == "run_quick_demo":
        from smoothadv.evaluation.demo import run_quick_demo

        return run_quick_demo
    raise AttributeError(f"module 'smoothadv.evaluation' has no attribute {name!r}")


__all__ = [
    "AttackStatistics",
    "EvaluationResult",
    "ImageOutcome",
    "PAPER_TABLES",
    "RecordStore",
    "Samples",
    "accuracy",
    "as_samples",
    "attack_statistics",
    "clean_results",
    "evaluate",
    "evaluate_curve",
    "image_outcomes",
    "mean_distortion",
    "median_distortion",
    "operating_characteristic",
    "preset_for_model",
    "read_config",
    "read_records",
    "reproduce",
    "resolve_data",
    "run_evaluation",
    "run_quick_demo",
    "success_probability",
    "summary_table",
]
