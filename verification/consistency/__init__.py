"""Consistency of attention across patients and checkpoints: the C-Score (METHODS.md §4).

Per class c the *gold list* G_c is the images with true label c, predicted c and confidence p ≥ τ
(**default** τ = 0.9). Every map is min-max normalised to [0, 1] and raised to γ (**default** γ = 2).
The soft IoU of two maps is ``Σ min(a, b) / (Σ max(a, b) + ε)``; the C-Score of class c is the mean of the
soft IoU over all pairs i < j of G_c weighted by ``p_i · p_j``. A gold list with fewer than two images gives
NaN, reported as *collapsed* — never as 0.

The package's modules: :mod:`~verification.consistency.checkpoints` (being split, issue #16).
"""

from __future__ import annotations

from verification.consistency.checkpoints import (
    AUTO_COMPILED_MIN_WORK,
    DEFAULT_EPS,
    DEFAULT_GAMMA,
    DEFAULT_TAU,
    SCHEMA_VERSION,
    Backend,
    CamFn,
    CheckpointRow,
    CheckpointSeries,
    CheckpointSummary,
    ClassConsistency,
    ConsistencyReport,
    CScore,
    EarlyWarning,
    ImagesLike,
    ProgressFn,
    Status,
    WarningKind,
    binary_auc,
    c_score,
    compiled_available,
    consistency_report,
    detect_early_warnings,
    gold_list,
    ovr_auc,
    pairwise_sum_min,
    prepare_maps,
    soft_iou_matrix,
    soft_iou_pairs,
    track_checkpoints,
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
    "soft_iou_matrix",
    "soft_iou_pairs",
    "track_checkpoints",
]
