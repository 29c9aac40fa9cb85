"""Consistency of attention across patients and checkpoints: the C-Score (METHODS.md §4).

Per class c the *gold list* G_c is the images with true label c, predicted c and confidence p ≥ τ
(**default** τ = 0.9). Every map is min-max normalised to [0, 1] and raised to γ (**default** γ = 2).
The soft IoU of two maps is ``Σ min(a, b) / (Σ max(a, b) + ε)``; the C-Score of class c is the mean of the
soft IoU over all pairs i < j of G_c weighted by ``p_i · p_j``. A gold list with fewer than two images gives
NaN, reported as *collapsed* — never as 0.

Pairwise work. Only ``Σ min`` has to be computed per pair: ``Σ max = Σa + Σb − Σ min``. And
``Σ min(a, b) = (Σa + Σb − Σ|a − b|) / 2``, so the all-pairs ``Σ min`` is an all-pairs L1 (city-block)
distance, which :func:`scipy.spatial.distance.cdist` computes in compiled float64 loops. The default backend
runs it on pixel chunks (L1 is additive over pixels, so memory stays bounded) and on upper-triangle row
blocks spread over threads (scipy releases the GIL). ``backend="torch"`` does the same with blocked float32
``torch.minimum`` reductions (accumulated in float64); ``backend="compiled"`` fuses min and sum into one
kernel with :func:`torch.compile` (needs a C++ compiler; the first call compiles for a few seconds), which
``"auto"`` picks for large gold lists.

Checkpoint tracking (:func:`track_checkpoints`) computes AUC, accuracy and the C-Score per method and class
for a series of checkpoints, and flags the early-warning pattern: the C-Score falls by more than ``drop``
from its running best while the AUC holds within ``auc_tolerance``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from verification.errors import ShapeError, VerificationError
from verification.io.records import LoadedImage, LoadedModel

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

Backend = Literal["auto", "scipy", "torch", "compiled"]
Status = Literal["ok", "collapsed"]

SCHEMA_VERSION = 1
DEFAULT_TAU = 0.9
DEFAULT_GAMMA = 2.0
DEFAULT_EPS = 1e-8
_PIXEL_CHUNK = 8192  # float64 chunk of 500 maps x 8192 px = 32 MB: bounded memory, cache-friendly rows
_ROW_BLOCK = 64


# ----------------------------------------------------------------------------------------------------------
# Map preparation and pairwise soft IoU
# ----------------------------------------------------------------------------------------------------------


def prepare_maps(
    maps: np.ndarray | Tensor, *, gamma: float = DEFAULT_GAMMA, normalize: bool = True
) -> np.ndarray:
    """(N, H, W) or (N, P) maps → (N, P) float32: min-max normalised per map to [0, 1], then raised to γ.

    A constant map normalises to all zeros (never a division by zero). With ``normalize=False`` the maps must
    already lie in [0, 1].
    """
    arr = maps.detach().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    if arr.ndim < 2:
        raise ShapeError(f"expected maps of shape (N, H, W) or (N, P); got {arr.shape}")
    if gamma <= 0 or not math.isfinite(gamma):
        raise ValueError(f"gamma must be a positive number, got {gamma}")
    x = np.ascontiguousarray(arr.reshape(arr.shape[0], -1), dtype=np.float32)
    if not np.isfinite(x).all():
        raise ShapeError("maps contain NaN or infinite values")
    if normalize:
        lo = x.min(axis=1, keepdims=True)
        span = x.max(axis=1, keepdims=True) - lo
        safe = np.where(span > 0, span, 1.0)
        x = np.where(span > 0, (x - lo) / safe, 0.0).astype(np.float32)
    elif x.size and (x.min() < 0 or x.max() > 1):
        raise ShapeError("normalize=False needs maps already in [0, 1]")
    if gamma != 1.0:
        x = np.power(x, np.float32(gamma), dtype=np.float32)
    return x


def _l1_block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import cdist

    return cdist(a, b, "cityblock")


def _sum_min_scipy(x: np.ndarray, n_threads: int) -> np.ndarray:
    n, p = x.shape
    sums = x.sum(axis=1, dtype=np.float64)
    l1 = np.zeros((n, n), dtype=np.float64)
    blocks = [(i, j) for i in range(0, n, _ROW_BLOCK) for j in range(i, n, _ROW_BLOCK)]
    with ThreadPoolExecutor(max_workers=max(1, n_threads)) as pool:
        for s in range(0, p, _PIXEL_CHUNK):
            chunk = np.ascontiguousarray(x[:, s : s + _PIXEL_CHUNK], dtype=np.float64)

            def run(ij: tuple[int, int], chunk: np.ndarray = chunk) -> tuple[int, int, np.ndarray]:
                i, j = ij
                return i, j, _l1_block(chunk[i : i + _ROW_BLOCK], chunk[j : j + _ROW_BLOCK])

            for i, j, d in pool.map(run, blocks):
                l1[i : i + d.shape[0], j : j + d.shape[1]] += d
    l1 = np.triu(l1) + np.triu(l1, 1).T
    out = 0.5 * (sums[:, None] + sums[None, :] - l1)
    np.fill_diagonal(out, sums)
    return np.clip(out, 0.0, None)


def _sum_min_torch(x: np.ndarray, n_threads: int, kernel: Callable[[Tensor, Tensor], Tensor]) -> np.ndarray:
    n, p = x.shape
    t = torch.from_numpy(x)
    out = torch.zeros((n, n), dtype=torch.float64)
    rows, chunk = 16, 2048  # (16, N, 2048) float32 temporaries: a few MB per step
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n_threads))
    try:
        with torch.inference_mode():
            for s in range(0, p, chunk):
                xc = t[:, s : s + chunk].contiguous()
                for i in range(0, n, rows):
                    out[i : i + rows, i:] += kernel(xc[i : i + rows], xc[i:]).double()
    finally:
        torch.set_num_threads(old)
    res = out.numpy()
    res = np.triu(res) + np.triu(res, 1).T
    return res


def _min_sum_eager(a: Tensor, b: Tensor) -> Tensor:
    return torch.minimum(a[:, None, :], b[None, :, :]).sum(-1)


_COMPILED: dict[str, Callable[[Tensor, Tensor], Tensor]] = {}
_COMPILED_LOCK = threading.Lock()
_TILE, _TILE_PIXELS = 64, 2048  # one fixed kernel shape: (64, 2048) x (64, 2048) -> (64, 64); compiled once
AUTO_COMPILED_MIN_WORK = 2e9  # pairs x pixels above which "auto" uses the compiled kernel (~200 maps at 224²)


def _compiled_kernel() -> Callable[[Tensor, Tensor], Tensor]:
    with _COMPILED_LOCK:
        if "min_sum" not in _COMPILED:
            _COMPILED["min_sum"] = torch.compile(_min_sum_eager, dynamic=False)
        return _COMPILED["min_sum"]


def _sum_min_compiled(x: np.ndarray, n_threads: int) -> np.ndarray:
    """Fused min+sum kernel on fixed (64 x 64 x 2048) tiles of the zero-padded maps (zeros add nothing to
    Σ min); float32 within a tile, float64 across tiles. Each kernel runs on one intra-op thread — OpenMP
    barriers inside tiny kernels stall on a busy machine — and tiles are spread over ``n_threads`` Python
    threads instead."""
    kernel = _compiled_kernel()
    n, p = x.shape
    t, c = _TILE, _TILE_PIXELS
    n_pad, p_pad = -(-n // t) * t, -(-p // c) * c
    xp = torch.zeros((n_pad, p_pad), dtype=torch.float32)
    xp[:n, :p] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    chunks = [xp[:, s : s + c].contiguous() for s in range(0, p_pad, c)]
    tiles = [(i, j) for i in range(0, n_pad, t) for j in range(i, n_pad, t)]
    out = np.zeros((n_pad, n_pad), dtype=np.float64)

    def run(ij: tuple[int, int]) -> tuple[int, int, np.ndarray]:
        i, j = ij
        acc = torch.zeros((t, t), dtype=torch.float64)
        with torch.inference_mode():
            for ch in chunks:
                acc += kernel(ch[i : i + t], ch[j : j + t])
        return i, j, acc.numpy()

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=max(1, n_threads)) as pool:
            for i, j, d in pool.map(run, tiles):
                out[i : i + t, j : j + t] = d
    finally:
        torch.set_num_threads(old)
    res = out[:n, :n]
    return np.triu(res) + np.triu(res, 1).T


def compiled_available() -> bool:
    """Whether the torch.compile backend works here (needs a C++ compiler); tried once per process."""
    with _COMPILED_LOCK:
        if "ok" in _COMPILED:
            return True
        if "failed" in _COMPILED:
            return False
    try:
        probe = np.random.default_rng(0).random((3, 5)).astype(np.float32)
        got = _sum_min_compiled(probe, 1)
        ok = bool(np.allclose(got, _sum_min_scipy(probe, 1), atol=1e-5))
    except Exception as exc:  # any compiler/toolchain failure means: use scipy, and say why
        log.warning("torch.compile backend unavailable, using scipy: %s", exc)
        ok = False
    with _COMPILED_LOCK:
        _COMPILED["ok" if ok else "failed"] = _min_sum_eager
    return ok


def pairwise_sum_min(x: np.ndarray, *, backend: Backend = "auto", n_threads: int | None = None) -> np.ndarray:
    """All-pairs ``Σ_p min(x_i[p], x_j[p])`` of (N, P) non-negative rows → (N, N) float64.

    ``backend``: "scipy" (exact float64 L1 identity), "torch" (blocked eager ``torch.minimum``),
    "compiled" (fused :func:`torch.compile` kernel, float32 per tile), "auto" (compiled when the work
    N(N−1)/2 · P exceeds ``AUTO_COMPILED_MIN_WORK`` and a compiler works here, else scipy).
    ``n_threads`` defaults to ``torch.get_num_threads()``.
    """
    if x.ndim != 2:
        raise ShapeError(f"expected (N, P) rows, got {x.shape}")
    threads = n_threads if n_threads is not None else torch.get_num_threads()
    if backend == "auto":
        work = x.shape[0] * (x.shape[0] - 1) / 2 * x.shape[1]
        backend = "compiled" if work >= AUTO_COMPILED_MIN_WORK and compiled_available() else "scipy"
    if backend == "scipy":
        return _sum_min_scipy(x, threads)
    if backend == "torch":
        return _sum_min_torch(np.ascontiguousarray(x, dtype=np.float32), threads, _min_sum_eager)
    if backend == "compiled":
        return _sum_min_compiled(x, threads)
    raise ValueError(f"unknown backend '{backend}'; choose auto, scipy, torch or compiled")


def soft_iou_matrix(
    maps: np.ndarray | Tensor,
    *,
    gamma: float = DEFAULT_GAMMA,
    eps: float = DEFAULT_EPS,
    normalize: bool = True,
    backend: Backend = "auto",
    n_threads: int | None = None,
) -> np.ndarray:
    """(N, N) soft IoU ``Σ min(a, b) / (Σ max(a, b) + ε)`` of every pair of prepared maps (see
    :func:`prepare_maps`); the diagonal is each map against itself."""
    x = prepare_maps(maps, gamma=gamma, normalize=normalize)
    smin = pairwise_sum_min(x, backend=backend, n_threads=n_threads)
    sums = x.sum(axis=1, dtype=np.float64)
    smax = sums[:, None] + sums[None, :] - smin
    return smin / (smax + eps)


def soft_iou_pairs(
    x: np.ndarray, ii: np.ndarray, jj: np.ndarray, *, eps: float = DEFAULT_EPS, chunk: int = 256
) -> np.ndarray:
    """Soft IoU of the listed pairs (ii[k], jj[k]) of prepared (N, P) maps, in chunks of pairs."""
    out = np.empty(len(ii), dtype=np.float64)
    for s in range(0, len(ii), chunk):
        a = x[ii[s : s + chunk]].astype(np.float64)
        b = x[jj[s : s + chunk]].astype(np.float64)
        smin = np.minimum(a, b).sum(axis=1)
        smax = np.maximum(a, b).sum(axis=1)
        out[s : s + chunk] = smin / (smax + eps)
    return out


# ----------------------------------------------------------------------------------------------------------
# C-Score of one gold list and per class
# ----------------------------------------------------------------------------------------------------------


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
            "macro_mean": _nan_to_none(self.macro_mean),
            "weighted_mean": _nan_to_none(self.weighted_mean),
            "n_collapsed": self.n_collapsed,
            "params": dict(self.params),
            "classes": [{**asdict(c), "score": _nan_to_none(c.score)} for c in self.classes],
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


def _nan_to_none(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# ----------------------------------------------------------------------------------------------------------
# AUC (Mann–Whitney) and accuracy
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# Checkpoint tracking and the early warning
# ----------------------------------------------------------------------------------------------------------

WarningKind = Literal["c_score_drop", "collapsed"]


@dataclass(frozen=True)
class EarlyWarning:
    """At ``checkpoint`` the C-Score of (``method``, ``class_name``) fell ``drop`` below its running best
    (reached at ``best_checkpoint``) — or the gold list collapsed — while the AUC held within tolerance.

    ``recovered_at`` names the first later checkpoint where the C-Score is back within ``drop`` of that best
    with the AUC no worse than at the best (``recovered_c_score`` its value): a dip that recovered, which is
    not drift toward a shortcut. None while the dip lasts to the last checkpoint."""

    kind: WarningKind
    checkpoint: str
    checkpoint_index: int
    method: str
    class_name: str
    c_score: float
    best_c_score: float
    best_checkpoint: str
    drop: float
    auc: float
    auc_at_best: float
    recovered_at: str | None = None
    recovered_c_score: float = math.nan

    @property
    def recovered(self) -> bool:
        """True when a later checkpoint brought the C-Score back (a dip, not drift)."""
        return self.recovered_at is not None

    def message(self) -> str:
        what = (
            "gold list collapsed"
            if self.kind == "collapsed"
            else f"C-Score {self.c_score:.3f} is {self.drop:.3f} below its best {self.best_c_score:.3f}"
        )
        text = (
            f"{self.checkpoint}: {self.method} / {self.class_name}: {what} (best at {self.best_checkpoint}) "
            f"while AUC holds ({self.auc:.3f} vs {self.auc_at_best:.3f})"
        )
        if self.recovered_at is not None:
            text += f"; recovered at {self.recovered_at} (C-Score {self.recovered_c_score:.3f})"
        return text


def detect_early_warnings(
    checkpoints: Sequence[str],
    auc: Sequence[float],
    scores: Mapping[tuple[str, str], Sequence[float]],
    *,
    drop: float = 0.1,
    auc_tolerance: float = 0.02,
) -> list[EarlyWarning]:
    """Early-warning pattern per (method, class) series of C-Scores over ``checkpoints``.

    "AUC holds" is read both ways: only earlier checkpoints b with ``|AUC_t − AUC_b| ≤ auc_tolerance`` are
    compared with t, so the generic, look-alike maps of a half-trained model (high C-Score, low AUC) never
    raise a warning against the competent model that follows. At checkpoint t a warning is raised when
    ``best − C_t > drop`` (best = the highest non-NaN C-Score among those b); a NaN C-Score there (collapsed
    gold list) is reported with kind "collapsed". A warning whose C-Score comes back — a later checkpoint u
    with ``best − C_u ≤ drop`` and ``AUC_u ≥ AUC_best − auc_tolerance`` — carries ``recovered_at`` (the first
    such u): the dip recovered, and only warnings without it are drift.
    """
    n = len(checkpoints)
    if len(auc) != n:
        raise ShapeError(f"{n} checkpoints but {len(auc)} AUC values")
    out: list[EarlyWarning] = []
    for (method, cls), series in scores.items():
        if len(series) != n:
            raise ShapeError(f"{method}/{cls}: {len(series)} C-Scores for {n} checkpoints")
        for t, s in enumerate(series):
            if math.isnan(auc[t]):
                continue
            comparable = [
                b
                for b in range(t)
                if not (math.isnan(series[b]) or math.isnan(auc[b])) and abs(auc[t] - auc[b]) <= auc_tolerance
            ]
            if comparable:
                best_t = max(comparable, key=lambda b: series[b])
                best = float(series[best_t])
                collapsed = math.isnan(s)
                if collapsed or best - s > drop:
                    back = next(
                        (
                            u
                            for u in range(t + 1, n)
                            if not (math.isnan(series[u]) or math.isnan(auc[u]))
                            and best - series[u] <= drop
                            and auc[u] >= auc[best_t] - auc_tolerance
                        ),
                        None,
                    )
                    out.append(
                        EarlyWarning(
                            kind="collapsed" if collapsed else "c_score_drop",
                            checkpoint=checkpoints[t],
                            checkpoint_index=t,
                            method=method,
                            class_name=cls,
                            c_score=float(s),
                            best_c_score=float(best),
                            best_checkpoint=checkpoints[best_t],
                            drop=math.nan if collapsed else float(best - s),
                            auc=float(auc[t]),
                            auc_at_best=float(auc[best_t]),
                            recovered_at=None if back is None else checkpoints[back],
                            recovered_c_score=math.nan if back is None else float(series[back]),
                        )
                    )
    out.sort(key=lambda w: (w.checkpoint_index, w.method, w.class_name))
    return out


@dataclass(frozen=True)
class CheckpointSummary:
    """Classification quality of one checkpoint on the evaluation set."""

    name: str
    index: int
    auc: float
    accuracy: float
    n_images: int
    class_auc: Mapping[str, float]


@dataclass(frozen=True)
class CheckpointRow:
    """C-Score of one (checkpoint, method, class)."""

    checkpoint: str
    checkpoint_index: int
    method: str
    class_name: str
    c_score: float
    n_gold: int
    n_pairs: int
    status: Status
    reason: str | None


@dataclass(frozen=True)
class CheckpointSeries:
    """AUC, accuracy and C-Score per method and class over a series of checkpoints, with early warnings."""

    checkpoints: tuple[CheckpointSummary, ...]
    rows: tuple[CheckpointRow, ...]
    warnings: tuple[EarlyWarning, ...]
    methods: tuple[str, ...]
    class_names: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def drifting(self) -> tuple[EarlyWarning, ...]:
        """The warnings whose dip lasts to the last checkpoint: drift toward a shortcut, not a passing dip."""
        return tuple(w for w in self.warnings if not w.recovered)

    @property
    def recovered(self) -> tuple[EarlyWarning, ...]:
        """The warnings whose C-Score came back at a later checkpoint."""
        return tuple(w for w in self.warnings if w.recovered)

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per (checkpoint, method, class) with the checkpoint's AUC and accuracy, the
        class AUC, the C-Score, |G_c|, status and the warning kind (empty when none)."""
        import pandas as pd

        summ = {s.index: s for s in self.checkpoints}
        warn = {
            (w.checkpoint_index, w.method, w.class_name): w.kind
            + ("" if w.recovered_at is None else f" (recovered at {w.recovered_at})")
            for w in self.warnings
        }
        records = []
        for r in self.rows:
            s = summ[r.checkpoint_index]
            records.append(
                {
                    "checkpoint": r.checkpoint,
                    "checkpoint_index": r.checkpoint_index,
                    "auc": s.auc,
                    "accuracy": s.accuracy,
                    "method": r.method,
                    "class": r.class_name,
                    "class_auc": s.class_auc.get(r.class_name, math.nan),
                    "c_score": r.c_score,
                    "n_gold": r.n_gold,
                    "n_pairs": r.n_pairs,
                    "status": r.status,
                    "warning": warn.get((r.checkpoint_index, r.method, r.class_name), ""),
                }
            )
        return pd.DataFrame.from_records(records)

    def table(self) -> pd.DataFrame:
        """Wide table: one row per checkpoint; AUC, accuracy, then ``C[method/class]`` and
        ``|G|[method/class]`` columns, then the warnings of that checkpoint."""
        import pandas as pd

        frame = self.to_frame()
        out = pd.DataFrame(
            {
                "checkpoint": [s.name for s in self.checkpoints],
                "auc": [s.auc for s in self.checkpoints],
                "accuracy": [s.accuracy for s in self.checkpoints],
            }
        )
        for m in self.methods:
            for c in self.class_names:
                sel = frame[(frame["method"] == m) & (frame["class"] == c)].set_index("checkpoint_index")
                if sel.empty:
                    continue
                out[f"C[{m}/{c}]"] = [sel["c_score"].get(s.index, math.nan) for s in self.checkpoints]
                out[f"|G|[{m}/{c}]"] = [int(sel["n_gold"].get(s.index, 0)) for s in self.checkpoints]
        out["warnings"] = [
            "; ".join(
                f"{w.method}/{w.class_name} {w.kind}" + ("" if w.recovered_at is None else " (recovered)")
                for w in self.warnings
                if w.checkpoint_index == s.index
            )
            for s in self.checkpoints
        ]
        return out

    def to_csv(self, path: str | Path, *, wide: bool = False) -> Path:
        """Write the long table (or the wide :meth:`table` with ``wide=True``) as CSV; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        (self.table() if wide else self.to_frame()).to_csv(path, index=False)
        return path

    def to_dict(self) -> dict[str, Any]:
        def clean(d: dict[str, Any]) -> dict[str, Any]:
            return {k: (_nan_to_none(v) if isinstance(v, float) else v) for k, v in d.items()}

        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "checkpoint_series",
            "methods": list(self.methods),
            "class_names": list(self.class_names),
            "params": dict(self.params),
            "checkpoints": [
                {**clean(asdict(s)), "class_auc": clean(dict(s.class_auc))} for s in self.checkpoints
            ],
            "rows": [clean(asdict(r)) for r in self.rows],
            "warnings": [{**clean(asdict(w)), "message": w.message()} for w in self.warnings],
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text (NaN written as null); also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckpointSeries:
        if data.get("kind") != "checkpoint_series" or data.get("schema_version") != SCHEMA_VERSION:
            raise VerificationError("not a checkpoint series record of a supported schema version")

        def nan(v: Any) -> Any:
            return math.nan if v is None else v

        summaries = tuple(
            CheckpointSummary(
                name=s["name"],
                index=s["index"],
                auc=nan(s["auc"]),
                accuracy=nan(s["accuracy"]),
                n_images=s["n_images"],
                class_auc={k: nan(v) for k, v in s["class_auc"].items()},
            )
            for s in data["checkpoints"]
        )
        rows = tuple(CheckpointRow(**{**r, "c_score": nan(r["c_score"])}) for r in data["rows"])
        fields = EarlyWarning.__dataclass_fields__
        warnings = tuple(
            EarlyWarning(**{k: v if k == "recovered_at" else nan(v) for k, v in w.items() if k in fields})
            for w in data["warnings"]
        )
        return cls(
            checkpoints=summaries,
            rows=rows,
            warnings=warnings,
            methods=tuple(data["methods"]),
            class_names=tuple(data["class_names"]),
            params=dict(data["params"]),
        )


ImagesLike = Tensor | Sequence[LoadedImage | str | Path]
CamFn = Callable[..., Sequence[Any]]
ProgressFn = Callable[[int, int, str], Any]


def _load_checkpoint(item: str | Path | LoadedModel, trust: bool) -> LoadedModel:
    if isinstance(item, LoadedModel):
        return item
    from verification.io.models import load_model

    return load_model(item, trust=trust)


def _input_tensor(images: ImagesLike, model: LoadedModel, cache: dict[str, list[LoadedImage]]) -> Tensor:
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise ShapeError(f"expected an input tensor (N, C, H, W); got {tuple(images.shape)}")
        return images
    from verification.io.images import load_image, to_tensor

    if "images" not in cache:
        cache["images"] = [im if isinstance(im, LoadedImage) else load_image(im) for im in images]
    return to_tensor(cache["images"], model)


def _checkpoint_name(item: str | Path | LoadedModel, model: LoadedModel) -> str:
    return Path(item).stem if isinstance(item, (str, Path)) else model.name


def track_checkpoints(
    checkpoints: Sequence[str | Path | LoadedModel],
    images: ImagesLike,
    labels: Sequence[int] | np.ndarray,
    *,
    methods: Sequence[str] = ("gradcam",),
    layer: str | None = None,
    names: Sequence[str] | None = None,
    tau: float = DEFAULT_TAU,
    gamma: float = DEFAULT_GAMMA,
    eps: float = DEFAULT_EPS,
    max_pairs: int | None = None,
    seed: int = 0,
    drop: float = 0.1,
    auc_tolerance: float = 0.02,
    batch_size: int = 16,
    backend: Backend = "auto",
    trust: bool = False,
    cam_fn: CamFn | None = None,
    progress: ProgressFn | None = None,
) -> CheckpointSeries:
    """AUC, accuracy and C-Score per method and class for each checkpoint on a labelled evaluation set.

    ``checkpoints``: model files (loaded with :func:`verification.io.models.load_model`) or LoadedModels,
    in training order. ``images``: a preprocessed tensor (N, C, H, W) used as is for every checkpoint, or
    images / image paths converted with each checkpoint's own preprocessing. ``methods``: CAM methods
    computed together by :func:`verification.cam.compute_cams` (``cam_fn`` replaces it, same signature)
    on ``layer`` (None → the default target layer), each image's CAM for its predicted class. AUC is the
    macro one-vs-rest AUC over the classes present in ``labels``; accuracy counts a garbage-class
    prediction as wrong. Early warnings: see :func:`detect_early_warnings` (``drop``, ``auc_tolerance``).
    ``progress(done, total, message)`` is called after each checkpoint.
    """
    if not checkpoints:
        raise ValueError("no checkpoints given")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if cam_fn is None:
        from verification.cam import compute_cams

        cam_fn = compute_cams
    cache: dict[str, list[LoadedImage]] = {}
    summaries: list[CheckpointSummary] = []
    rows: list[CheckpointRow] = []
    class_names: tuple[str, ...] | None = None
    ckpt_names: list[str] = []
    for t, item in enumerate(checkpoints):
        model = _load_checkpoint(item, trust)
        name = names[t] if names is not None else _checkpoint_name(item, model)
        ckpt_names.append(name)
        if class_names is None:
            class_names = model.class_names
        elif model.class_names != class_names:
            raise ShapeError(
                f"checkpoint '{name}' has classes {list(model.class_names)}, "
                f"the series has {list(class_names)}"
            )
        x = _input_tensor(images, model, cache)
        if x.shape[0] != y.shape[0]:
            raise ShapeError(f"{x.shape[0]} images but {y.shape[0]} labels")
        if y.size and (y.min() < 0 or y.max() >= model.num_classes):
            raise ShapeError(f"labels must lie in 0..{model.num_classes - 1}")
        maps: dict[str, list[np.ndarray]] = {m: [] for m in methods}
        probs_parts: list[np.ndarray] = []
        for s in range(0, x.shape[0], batch_size):
            results = cam_fn(
                model, x[s : s + batch_size], methods=tuple(methods), layers=[layer] if layer else None
            )
            by_method = {r.method: r for r in results}
            missing = [m for m in methods if m not in by_method]
            if missing:
                raise VerificationError(f"the CAM engine returned no result for {missing}")
            for m in methods:
                maps[m].append(np.asarray(by_method[m].maps, dtype=np.float32))
            probs_parts.append(np.asarray(results[0].probs, dtype=np.float64))
        probs = np.concatenate(probs_parts, axis=0)
        auc, per_class = ovr_auc(y, probs)
        acc = float((probs.argmax(axis=1) == y).mean()) if y.size else math.nan
        summaries.append(
            CheckpointSummary(
                name=name,
                index=t,
                auc=auc,
                accuracy=acc,
                n_images=int(y.size),
                class_auc={class_names[c]: v for c, v in per_class.items()},
            )
        )
        for m in methods:
            rep = consistency_report(
                np.concatenate(maps[m], axis=0),
                y,
                probs,
                method=m,
                class_names=class_names,
                tau=tau,
                gamma=gamma,
                eps=eps,
                max_pairs=max_pairs,
                seed=seed,
                backend=backend,
            )
            rows.extend(
                CheckpointRow(
                    checkpoint=name,
                    checkpoint_index=t,
                    method=m,
                    class_name=c.class_name,
                    c_score=c.score,
                    n_gold=c.n_gold,
                    n_pairs=c.n_pairs,
                    status=c.status,
                    reason=c.reason,
                )
                for c in rep.classes
            )
        log.info("checkpoint %s: AUC %.3f, accuracy %.3f", name, auc, acc)
        if progress is not None:
            progress(t + 1, len(checkpoints), name)
    if class_names is None:  # unreachable: checkpoints is non-empty
        raise ValueError("no checkpoints given")
    scored = [c for c in class_names if any(r.class_name == c for r in rows)]
    series = {
        (m, c): [
            next(r.c_score for r in rows if r.checkpoint_index == t and r.method == m and r.class_name == c)
            for t in range(len(checkpoints))
        ]
        for m in methods
        for c in scored
    }
    warnings = detect_early_warnings(
        ckpt_names, [s.auc for s in summaries], series, drop=drop, auc_tolerance=auc_tolerance
    )
    params = {
        "tau": tau,
        "gamma": gamma,
        "eps": eps,
        "max_pairs": max_pairs,
        "seed": seed,
        "drop": drop,
        "auc_tolerance": auc_tolerance,
        "layer": layer,
    }
    return CheckpointSeries(
        checkpoints=tuple(summaries),
        rows=tuple(rows),
        warnings=tuple(warnings),
        methods=tuple(methods),
        class_names=tuple(scored),
        params=params,
    )


__all__ = [
    "CScore",
    "CheckpointRow",
    "CheckpointSeries",
    "CheckpointSummary",
    "ClassConsistency",
    "ConsistencyReport",
    "EarlyWarning",
    "binary_auc",
    "c_score",
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
