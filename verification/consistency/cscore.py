"""The C-Score of one gold list and per class (METHODS.md §4).

Per class c the *gold list* G_c is the images with true label c, predicted c and confidence p ≥ τ
(**default** τ = 0.9). Every map is min-max normalised to [0, 1] and raised to γ (**default** γ = 2).
The soft IoU of two maps is ``Σ min(a, b) / (Σ max(a, b) + ε)``; the C-Score of class c is the mean of the
soft IoU over all pairs i < j of G_c weighted by ``p_i · p_j``. A gold list with fewer than two images gives
NaN, reported as *collapsed* — never as 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from torch import Tensor

from verification.consistency.pairwise import (
    DEFAULT_EPS,
    DEFAULT_GAMMA,
    Backend,
    pairwise_sum_min,
    prepare_maps,
    soft_iou_pairs,
)
from verification.errors import ShapeError

Status = Literal["ok", "collapsed"]

DEFAULT_TAU = 0.9


@dataclass(frozen=True)
class CScore:
    """C-Score of one gold list. ``score`` is NaN with ``status="collapsed"`` and a ``reason`` when the list
    has fewer than two maps. ``n_pairs`` is how many pairs entered the mean (all, or the seeded sample)."""

    score: float
    n_gold: int
    n_pairs: int
    status: Status
    reason: str | None = None
    sampled: bool = False
    seed: int | None = None
    n_constant: int = 0


def c_score(
    maps: np.ndarray | Tensor,
    confidences: np.ndarray | Sequence[float],
    *,
    gamma: float = DEFAULT_GAMMA,
    eps: float = DEFAULT_EPS,
    normalize: bool = True,
    max_pairs: int | None = None,
    seed: int = 0,
    backend: Backend = "auto",
    n_threads: int | None = None,
) -> CScore:
    """C-Score of one gold list: ``Σ_{i<j} p_i p_j IoU_ij / Σ_{i<j} p_i p_j`` over maps (N, H, W).

    ``max_pairs``: when set and the list has more pairs than that, a uniform sample of ``max_pairs`` pairs
    (without replacement, ``numpy.random.default_rng(seed)``) is used and the record says so; **default** None
    — every pair, exactly.
    """
    p = np.asarray(confidences, dtype=np.float64).reshape(-1)
    n = int(np.asarray(maps.shape)[0]) if hasattr(maps, "shape") else len(maps)
    if p.shape[0] != n:
        raise ShapeError(f"{n} maps but {p.shape[0]} confidences")
    if n < 2:
        return CScore(
            score=math.nan,
            n_gold=n,
            n_pairs=0,
            status="collapsed",
            reason=f"collapsed gold list: {n} image(s), at least 2 are needed for a pair",
        )
    if (p < 0).any() or not np.isfinite(p).all():
        raise ValueError("confidences must be finite and non-negative")
    x = prepare_maps(maps, gamma=gamma, normalize=normalize)
    n_constant = int((x.max(axis=1) <= 0).sum())
    total_pairs = n * (n - 1) // 2
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs must be at least 1 or None, got {max_pairs}")
    if max_pairs is not None and total_pairs > max_pairs:
        rng = np.random.default_rng(seed)
        flat = np.sort(rng.choice(total_pairs, size=max_pairs, replace=False))
        ii, jj = _unrank_pairs(flat, n)
        iou = soft_iou_pairs(x, ii, jj, eps=eps)
        w = p[ii] * p[jj]
        sampled, used = True, max_pairs
    else:
        smin = pairwise_sum_min(x, backend=backend, n_threads=n_threads)
        sums = x.sum(axis=1, dtype=np.float64)
        ii, jj = np.triu_indices(n, k=1)
        sm = smin[ii, jj]
        iou = sm / (sums[ii] + sums[jj] - sm + eps)
        w = p[ii] * p[jj]
        sampled, used = False, total_pairs
    wsum = float(w.sum())
    if wsum <= 0:
        return CScore(
            score=math.nan,
            n_gold=n,
            n_pairs=used,
            status="collapsed",
            reason="every pair has zero confidence weight",
            sampled=sampled,
            seed=seed if sampled else None,
            n_constant=n_constant,
        )
    return CScore(
        score=float((w * iou).sum() / wsum),
        n_gold=n,
        n_pairs=used,
        status="ok",
        sampled=sampled,
        seed=seed if sampled else None,
        n_constant=n_constant,
    )


def _unrank_pairs(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major index k of the upper triangle (i < j) of an n×n matrix → (i, j)."""
    k = k.astype(np.int64)
    # rows start at offsets off(i) = i*n - i*(i+1)/2; invert with the quadratic formula, then fix rounding
    i = np.floor((2 * n - 1 - np.sqrt((2 * n - 1) ** 2 - 8 * k)) / 2).astype(np.int64)
    off = i * n - i * (i + 1) // 2
    over = k >= off + (n - 1 - i)
    i = np.where(over, i + 1, i)
    off = i * n - i * (i + 1) // 2
    under = k < off
    i = np.where(under, i - 1, i)
    off = i * n - i * (i + 1) // 2
    j = k - off + i + 1
    return i, j


def gold_list(
    labels: np.ndarray | Sequence[int], probs: np.ndarray, class_index: int, *, tau: float = DEFAULT_TAU
) -> np.ndarray:
    """Indices of the gold list of ``class_index``: true label c, predicted (argmax of ``probs`` (N, K)) c,
    and confidence ``probs[i, c] ≥ tau``."""
    y = np.asarray(labels).reshape(-1)
    pr = np.asarray(probs, dtype=np.float64)
    if pr.ndim != 2 or pr.shape[0] != y.shape[0]:
        raise ShapeError(f"probs must be (N, K) with N = {y.shape[0]} labels; got {pr.shape}")
    pred = pr.argmax(axis=1)
    keep = (y == class_index) & (pred == class_index) & (pr[:, class_index] >= tau)
    return np.flatnonzero(keep)


@dataclass(frozen=True)
class ClassConsistency:
    """C-Score of one class for one method."""

    method: str
    class_index: int
    class_name: str
    score: float
    n_gold: int
    n_pairs: int
    status: Status
    reason: str | None
    sampled: bool
    n_constant: int


@dataclass(frozen=True)
class ConsistencyReport:
    """C-Score per class for one method, with the macro mean (over non-collapsed classes) and the mean
    weighted by gold-list size |G_c|. ``n_collapsed`` classes are NaN and excluded from both means."""

    method: str
    classes: tuple[ClassConsistency, ...]
    macro_mean: float
    weighted_mean: float
    n_collapsed: int
    params: Mapping[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [
            f"{c.class_name}: {'collapsed' if c.status == 'collapsed' else f'{c.score:.3f}'} (|G|={c.n_gold})"
            for c in self.classes
        ]
        return (
            f"{self.method}: macro {self.macro_mean:.3f}, size-weighted {self.weighted_mean:.3f} over "
            f"{len(self.classes) - self.n_collapsed} of {len(self.classes)} classes "
            f"({self.n_collapsed} collapsed); " + "; ".join(parts)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "macro_mean": nan_to_none(self.macro_mean),
            "weighted_mean": nan_to_none(self.weighted_mean),
            "n_collapsed": self.n_collapsed,
            "params": dict(self.params),
            "classes": [{**asdict(c), "score": nan_to_none(c.score)} for c in self.classes],
        }


def consistency_report(
    maps: np.ndarray | Tensor,
    labels: np.ndarray | Sequence[int],
    probs: np.ndarray,
    *,
    method: str = "cam",
    class_names: Sequence[str] | None = None,
    classes: Sequence[int] | None = None,
    tau: float = DEFAULT_TAU,
    gamma: float = DEFAULT_GAMMA,
    eps: float = DEFAULT_EPS,
    normalize: bool = True,
    max_pairs: int | None = None,
    seed: int = 0,
    backend: Backend = "auto",
    n_threads: int | None = None,
) -> ConsistencyReport:
    """C-Score per class of maps (N, H, W) with true ``labels`` (N,) and class probabilities ``probs`` (N, K).

    ``classes``: which class indices to score (**default** every class that occurs in ``labels``).
    """
    arr = maps.detach().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    y = np.asarray(labels).reshape(-1)
    pr = np.asarray(probs, dtype=np.float64)
    if arr.shape[0] != y.shape[0]:
        raise ShapeError(f"{arr.shape[0]} maps but {y.shape[0]} labels")
    k = pr.shape[1] if pr.ndim == 2 else 0
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ShapeError(f"{len(names)} class names for {k} probability columns")
    which = sorted({int(c) for c in y}) if classes is None else [int(c) for c in classes]
    rows: list[ClassConsistency] = []
    for c in which:
        if not 0 <= c < k:
            raise ShapeError(f"class index {c} is outside the {k} model outputs")
        idx = gold_list(y, pr, c, tau=tau)
        cs = c_score(
            arr[idx],
            pr[idx, c],
            gamma=gamma,
            eps=eps,
            normalize=normalize,
            max_pairs=max_pairs,
            seed=seed,
            backend=backend,
            n_threads=n_threads,
        )
        rows.append(
            ClassConsistency(
                method=method,
                class_index=c,
                class_name=names[c],
                score=cs.score,
                n_gold=cs.n_gold,
                n_pairs=cs.n_pairs,
                status=cs.status,
                reason=cs.reason,
                sampled=cs.sampled,
                n_constant=cs.n_constant,
            )
        )
    ok = [r for r in rows if r.status == "ok"]
    macro = float(np.mean([r.score for r in ok])) if ok else math.nan
    wsum = sum(r.n_gold for r in ok)
    weighted = float(sum(r.score * r.n_gold for r in ok) / wsum) if wsum else math.nan
    params = {
        "tau": tau,
        "gamma": gamma,
        "eps": eps,
        "normalize": normalize,
        "max_pairs": max_pairs,
        "seed": seed,
    }
    return ConsistencyReport(
        method=method,
        classes=tuple(rows),
        macro_mean=macro,
        weighted_mean=weighted,
        n_collapsed=len(rows) - len(ok),
        params=params,
    )


def nan_to_none(v: float | None) -> float | None:
    """A float for a JSON document: NaN (a collapsed or unscored C-Score) as None."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
