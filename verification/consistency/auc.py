"""AUC beside the C-Score: binary (Mann-Whitney, ties counted half) and one-vs-rest per class."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from verification.errors import ShapeError


def binary_auc(y_true: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float]) -> float:
    """ROC AUC of ``scores`` for the positives ``y_true == 1`` via the Mann–Whitney U statistic with average
    ranks for ties. NaN when one of the two groups is empty."""
    from scipy.stats import rankdata

    y = np.asarray(y_true).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ShapeError(f"{y.shape[0]} labels but {s.shape[0]} scores")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s, method="average")
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def ovr_auc(
    labels: np.ndarray | Sequence[int], probs: np.ndarray, classes: Sequence[int] | None = None
) -> tuple[float, dict[int, float]]:
    """One-vs-rest AUC per class (score ``probs[:, c]``, positives ``labels == c``) and their macro mean over
    the classes where both groups are non-empty. ``classes`` **default**: the classes in ``labels``."""
    y = np.asarray(labels).reshape(-1)
    pr = np.asarray(probs, dtype=np.float64)
    if pr.ndim != 2 or pr.shape[0] != y.shape[0]:
        raise ShapeError(f"probs must be (N, K) with N = {y.shape[0]}; got {pr.shape}")
    which = sorted({int(c) for c in y}) if classes is None else [int(c) for c in classes]
    per = {c: binary_auc(y == c, pr[:, c]) for c in which}
    valid = [v for v in per.values() if not math.isnan(v)]
    return (float(np.mean(valid)) if valid else math.nan), per
