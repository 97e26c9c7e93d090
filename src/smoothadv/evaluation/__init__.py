"""Evaluation protocol of section 5.1: resumable per-image records, P_suc, D_bar, operating characteristic.

* :func:`evaluate` runs attacks over a dataset (epsilon grids, transfer targets) into an output folder of
  per-image records that a killed run resumes from;
* :mod:`.metrics` turns records into the paper's statistics (pure functions);
* :class:`EvaluationPlan` says what to run; :mod:`.batch` how one batch runs (the attack, then transfer,
  MAD and image storage as separate steps); :mod:`.records` keeps records and images on disk.

Running by model and data names, the report and the paper's tables are in :mod:`smoothadv.experiments`.
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
from smoothadv.evaluation.plan import EvaluationPlan, as_dataset
from smoothadv.evaluation.records import RecordStore, load_adversarial, read_config, read_records
from smoothadv.evaluation.runner import EvaluationResult, evaluate

__all__ = [
    "AttackStatistics",
    "EvaluationPlan",
    "EvaluationResult",
    "ImageOutcome",
    "RecordStore",
    "accuracy",
    "as_dataset",
    "attack_statistics",
    "clean_results",
    "evaluate",
    "evaluate_curve",
    "image_outcomes",
    "load_adversarial",
    "mean_distortion",
    "median_distortion",
    "operating_characteristic",
    "read_config",
    "read_records",
    "success_probability",
    "summary_table",
]
