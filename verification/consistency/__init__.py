"""Consistency of attention across patients and checkpoints: the C-Score (METHODS.md §4).

Per class c the *gold list* G_c is the images with true label c, predicted c and confidence p ≥ τ
(**default** τ = 0.9). Every map is min-max normalised to [0, 1] and raised to γ (**default** γ = 2).
The soft IoU of two maps is ``Σ min(a, b) / (Σ max(a, b) + ε)``; the C-Score of class c is the mean of the
soft IoU over all pairs i < j of G_c weighted by ``p_i · p_j``. A gold list with fewer than two images gives
NaN, reported as *collapsed* — never as 0.

One concern per module; every public name is re-exported here (``from verification.consistency import X``):

* :mod:`~verification.consistency.pairwise` — map preparation and the all-pairs soft IoU kernels
  (``Σ min`` as an L1 distance: scipy, torch or a :func:`torch.compile` kernel);
* :mod:`~verification.consistency.cscore` — the gold list, the C-Score of one list, per class
  (:func:`c_score`, :func:`consistency_report`);
* :mod:`~verification.consistency.auc` — binary and one-vs-rest AUC;
* :mod:`~verification.consistency.checkpoints` — AUC, accuracy and C-Score over training checkpoints
  (:func:`track_checkpoints`) and the early warning (C-Score falling while the AUC holds).
"""

from __future__ import annotations

from verification.consistency.auc import binary_auc, ovr_auc
from verification.consistency.checkpoints import (
    SCHEMA_VERSION,
    CamFn,
    CheckpointRow,
    CheckpointSeries,
    CheckpointSummary,
    EarlyWarning,
    ImagesLike,
    ProgressFn,
    WarningKind,
    detect_early_warnings,
    series_mismatch,
    track_checkpoints,
)
from verification.consistency.cscore import (
    DEFAULT_TAU,
    ClassConsistency,
    ConsistencyReport,
    CScore,
    Status,
    c_score,
    consistency_report,
    gold_list,
)
from verification.consistency.pairwise import (
    AUTO_COMPILED_MIN_WORK,
    DEFAULT_EPS,
    DEFAULT_GAMMA,
    Backend,
    compiled_available,
    pairwise_sum_min,
    prepare_maps,
    soft_iou_matrix,
    soft_iou_pairs,
)

__all__ = [
    "AUTO_COMPILED_MIN_WORK",
    "DEFAULT_EPS",
    "DEFAULT_GAMMA",
    "DEFAULT_TAU",
    "SCHEMA_VERSION",
    "Backend",
    "CScore",
    "CamFn",
    "CheckpointRow",
    "CheckpointSeries",
    "CheckpointSummary",
    "ClassConsistency",
    "ConsistencyReport",
    "EarlyWarning",
    "ImagesLike",
    "ProgressFn",
    "Status",
    "WarningKind",
    "binary_auc",
    "c_score",
    "compiled_available",
    "consistency_report",
    "detect_early_warnings",
    "gold_list",
    "ovr_auc",
    "pairwise_sum_min",
    "prepare_maps",
    "series_mismatch",
    "soft_iou_matrix",
    "soft_iou_pairs",
    "track_checkpoints",
]
