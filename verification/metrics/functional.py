"""Pure, batched similarity functions between attention maps and references.

Every function takes two tensors ``a`` (maps) and ``b`` (references) of shape (N, H, W) or (1, H, W)
(broadcast against each other, so N maps can be compared against one reference without copying) with values in
[0, 1] as produced by :func:`prepare`, and returns a :class:`MetricResult`: the (N,) values (float64 numpy)
and, for every value that is undefined, the reason it is NaN. No function loops over pairs in Python.

Hostile input: text, complex numbers, an empty batch, 0-pixel maps or a comparison grid beyond
:data:`MAX_GRID_PIXELS` raise typed errors (:class:`~verification.errors.InvalidInputError`,
:class:`~verification.errors.ShapeError`, :class:`~verification.errors.InputTooLargeError`) before anything is
allocated. A map or reference holding NaN or ±inf is not scored: every metric gives NaN for that pair with the
reason "map has NaN or infinite values" (it is never normalised into an "all zeros" map).
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from verification.errors import InputTooLargeError, InvalidInputError, ShapeError

Threshold = float | Literal["otsu"]
ArrayLike = np.ndarray | torch.Tensor


# The comparison grid: at most 2048² pixels per map and 4096 per side. A pair's working memory is about 15
# copies of its grid (SSIM's five filtered products and their temporaries; 500 MB for 2048² in float64) and
# SSIM keeps an n × n filter matrix per side length (134 MB for n = 4096).
MAX_GRID_PIXELS = 2048 * 2048
MAX_GRID_SIDE = 4096
# A map as given (before resizing to the grid): the image loader's pixel limit (verification.io.images).
MAX_INPUT_PIXELS = 8192 * 8192
NONFINITE_MAP = "map has NaN or infinite values"
NONFINITE_REF = "reference has NaN or infinite values"


@dataclass(frozen=True)
class MetricResult:
    """Values of one metric for N pairs; ``reasons[i]`` says why ``values[i]`` is NaN (NaN entries only)."""

    values: np.ndarray
    reasons: dict[int, str] = field(default_factory=dict)


def nonfinite_rows(x: torch.Tensor) -> torch.Tensor:
    """(N,) bool: which maps of an (N, ...) batch hold a NaN or an infinity."""
    if x.is_floating_point() or x.is_complex():
        return ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)


def _nonfinite(a: torch.Tensor, b: torch.Tensor, ref: str = NONFINITE_REF) -> list[tuple[torch.Tensor, str]]:
    """The (mask, reason) pairs that leave a pair unscored because either side is not finite."""
    return [(nonfinite_rows(a), NONFINITE_MAP), (nonfinite_rows(b), ref)]


def _result(values: torch.Tensor, undefined: Sequence[tuple[torch.Tensor, str]] = ()) -> MetricResult:
    """Pack values; each (mask, reason) pair sets NaN and its reason where the mask is true (first wins).
    A mask of one row (a single reference broadcast against N maps) applies to every row."""
    out = values.detach().to(torch.float64).cpu().numpy().copy()
    reasons: dict[int, str] = {}
    for mask, reason in undefined:
        flat = mask.reshape(-1)
        if flat.numel() == 1 and out.size != 1:
            flat = flat.expand(out.size)
        idx = torch.nonzero(flat).reshape(-1).tolist()
        for i in idx:
            out[i] = np.nan
            reasons.setdefault(int(i), reason)
    return MetricResult(out, reasons)


# ----------------------------------------------------------------------------------------------- preparation
def _kind(x: object) -> str:
    """A short description of what a caller passed (never its contents)."""
    dtype = getattr(x, "dtype", None)
    shape = getattr(x, "shape", None)
    if dtype is not None:
        return f"{type(x).__name__} of dtype {dtype}" + (
            f" and shape {tuple(shape)}" if shape is not None else ""
        )
    return type(x).__name__


def as_batch(x: ArrayLike, name: str = "maps") -> torch.Tensor:
    """(H, W) or (N, H, W) array/tensor -> float tensor (N, H, W); float64 input stays float64.

    Raises InvalidInputError for anything that is not real numbers (text, objects, complex), ShapeError for
    another number of dimensions, an empty batch or maps of zero pixels.
    """
    if isinstance(x, (str, bytes)):
        raise InvalidInputError(f"{name} must be an array of numbers of shape (H, W) or (N, H, W), got text")
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise InvalidInputError(
            f"{name} must be an array of numbers of shape (H, W) or (N, H, W), got {_kind(x)}"
        ) from None
    if t.is_complex():
        raise InvalidInputError(f"{name} must be real numbers, got complex values ({t.dtype})")
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3:
        raise ShapeError(f"{name} must have shape (H, W) or (N, H, W), got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ShapeError(f"no {name} to compare: the batch is empty (shape {tuple(t.shape)})")
    if t.shape[1] == 0 or t.shape[2] == 0:
        raise ShapeError(f"{name} have no pixels (shape {tuple(t.shape)}); each map needs at least one")
    if t.shape[1] * t.shape[2] > MAX_INPUT_PIXELS:
        raise InputTooLargeError(
            f"{name} of {t.shape[1]}×{t.shape[2]} pixels are too large "
            f"(at most {MAX_INPUT_PIXELS:,} per map); resize them first"
        )
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return t


def check_grid(size: object) -> tuple[int, int]:
    """A comparison grid ``(h, w)`` of positive integers within :data:`MAX_GRID_SIDE` per side and
    :data:`MAX_GRID_PIXELS` in all; InvalidInputError or InputTooLargeError otherwise."""
    if isinstance(size, (str, bytes)):
        raise InvalidInputError("size must be a pair of whole numbers (height, width), got text")
    try:
        pair = list(itertools.islice(iter(size), 3))  # type: ignore[call-overload]
        if len(pair) != 2 or any(isinstance(v, bool) for v in pair):
            raise TypeError
        h, w = (operator.index(v) for v in pair)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"size must be a pair of whole numbers (height, width), got {_kind(size)}"
        ) from None
    if h < 1 or w < 1:
        raise InvalidInputError(f"size must be at least 1×1 pixels, got {h}×{w}")
    if max(h, w) > MAX_GRID_SIDE or h * w > MAX_GRID_PIXELS:
        raise InputTooLargeError(
            f"a comparison grid of {h}×{w} pixels is too large (at most {MAX_GRID_SIDE} per side and "
            f"{MAX_GRID_PIXELS:,} pixels); compare on a smaller grid, e.g. size=(64, 64)"
        )
    return h, w


def normalize_maps(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (H, W) map to [0, 1]; a constant map becomes all zeros (no division by 0)."""
    flat = x.reshape(x.shape[0], -1)
    lo = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    out = torch.where(span > 0, (flat - lo) / safe, torch.zeros_like(flat))
    return out.reshape(x.shape)


def resize_maps(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, H, W) maps to ``size`` (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    y = F.interpolate(x.unsqueeze(1), size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return y.squeeze(1)


def prepare(
    maps: ArrayLike,
    refs: ArrayLike,
    size: tuple[int, int] | None = None,
    *,
    normalize: bool = True,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring maps and references to one grid and to [0, 1].

    ``maps`` (N, H, W) | (H, W) and ``refs`` (N, H', W') | (1, H', W') | (H', W'); ``size`` (default: the
    maps' grid) is the common grid. Returns (N|1, h, w) tensors that broadcast against each other.
    """
    a = as_batch(maps, "maps")
    b = as_batch(refs, "refs")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ShapeError(
            f"cannot compare {a.shape[0]} maps with {b.shape[0]} references: give one reference per map "
            "or one reference for all"
        )
    dt = dtype or (torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32)
    a, b = a.to(dt), b.to(dt)
    target = check_grid(size if size is not None else (int(a.shape[-2]), int(a.shape[-1])))
    if not normalize:
        return resize_maps(a, target), resize_maps(b, target)
    return _resize_normalized(a, target), _resize_normalized(b, target)


def _resize_normalized(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize then min-max normalise; a map constant at its own resolution stays all zeros (interpolation
    leaves rounding ripples on a constant map, which the normalisation would blow up to [0, 1]). A map with a
    NaN or an infinity becomes all NaN, so that no metric scores it (it is not "constant")."""
    flat = x.reshape(x.shape[0], -1)
    bad = nonfinite_rows(x)
    if bool(bad.any()):
        x = torch.where(bad.reshape(-1, 1, 1), torch.zeros_like(x), x)
        flat = x.reshape(x.shape[0], -1)
    lo, hi = torch.aminmax(flat, dim=1)
    out = normalize_maps(resize_maps(x, size))
    out = out * (hi > lo).to(out.dtype).reshape(-1, 1, 1)
    if bool(bad.any()):
        out = torch.where(bad.reshape(-1, 1, 1), torch.full_like(out, math.nan), out)
    return out


def _flat(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape[-2:] != b.shape[-2:]:
        raise ShapeError(
            f"maps {tuple(a.shape)} and references {tuple(b.shape)} are on different grids; use prepare()"
        )
    a, b = torch.broadcast_tensors(a, b)
    return a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)


# ----------------------------------------------------------------------------------------------- thresholds
def otsu_thresholds(x: torch.Tensor, nbins: int = 256) -> torch.Tensor:
    """Per-map Otsu threshold (N,), the same histogram rule as ``skimage.filters.threshold_otsu``.

    The histogram has ``nbins`` equal bins over each map's own [min, max]; a constant map returns its value;
    a map with NaN or ±inf gets NaN (the metrics leave such a pair unscored).
    """
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    bad = nonfinite_rows(flat)
    flat = torch.where(bad[:, None], torch.zeros_like(flat), flat)
    n = flat.shape[0]
    lo = flat.amin(dim=1, keepdim=True)
    hi = flat.amax(dim=1, keepdim=True)
    span = hi - lo
    const = (span <= 0).reshape(-1)
    safe = torch.where(span > 0, span, torch.ones_like(span))
    idx = ((flat - lo) / safe * nbins).floor().clamp_(0, nbins - 1).to(torch.int64)
    offsets = torch.arange(n, device=x.device).unsqueeze(1) * nbins
    counts = (
        torch.bincount((idx + offsets).reshape(-1), minlength=n * nbins).reshape(n, nbins).to(torch.float64)
    )
    edges = lo + safe * torch.arange(nbins + 1, dtype=torch.float64, device=x.device) / nbins
    centers = (edges[:, :-1] + edges[:, 1:]) / 2
    w1 = counts.cumsum(1)
    w2 = counts.flip(1).cumsum(1).flip(1)
    m1 = (counts * centers).cumsum(1) / w1.clamp_min(1e-300)
    m2 = (counts * centers).flip(1).cumsum(1).flip(1) / w2.clamp_min(1e-300)
    var12 = w1[:, :-1] * w2[:, 1:] * (m1[:, :-1] - m2[:, 1:]) ** 2
    best = var12.argmax(dim=1, keepdim=True)
    thr = centers.gather(1, best).reshape(-1)
    thr = torch.where(const, lo.reshape(-1), thr)
    return torch.where(bad, torch.full_like(thr, math.nan), thr).to(x.dtype)


def check_threshold(threshold: object) -> Threshold:
    """``"otsu"`` or a number in [0, 1] (maps are compared in [0, 1]); InvalidInputError otherwise."""
    if isinstance(threshold, str):
        if threshold == "otsu":
            return "otsu"
        raise InvalidInputError(f"threshold must be a number in [0, 1] or 'otsu', got {threshold[:40]!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"threshold must be a number in [0, 1] or 'otsu', got {_kind(threshold)}")
    value = float(threshold)
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise InvalidInputError(
            f"threshold must be in [0, 1] (maps are compared after scaling to [0, 1]), got {value:g}"
        )
    return value


def binarize(x: torch.Tensor, threshold: Threshold = 0.5) -> torch.Tensor:
    """Foreground = value > threshold (the scikit-image convention); ``"otsu"`` picks a threshold per map."""
    threshold = check_threshold(threshold)
    if threshold == "otsu":
        return x > otsu_thresholds(x).reshape(-1, *([1] * (x.ndim - 1)))
    return x > float(threshold)


# ----------------------------------------------------------------------------------------------- overlap
def _overlap(
    a: torch.Tensor, b: torch.Tensor, threshold: Threshold
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    fa, fb = _flat(binarize(a, threshold), binarize(b, threshold))
    # float32 0/1 vectors: counts are exact up to 2^24 pixels, and a dot product is far faster than bool sums
    fa, fb = fa.to(torch.float32), fb.to(torch.float32)
    inter = torch.linalg.vecdot(fa, fb).to(torch.float64)
    return inter, fa.sum(1).to(torch.float64), fb.sum(1).to(torch.float64)


def iou(a: torch.Tensor, b: torch.Tensor, threshold: Threshold = 0.5) -> MetricResult:
    """Jaccard index |A∩B| / |A∪B| of the binarised maps; both empty -> 1.0."""
    inter, na, nb = _overlap(a, b, threshold)
    union = na + nb - inter
    return _result(
        torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter)), _nonfinite(a, b)
    )


def dice(a: torch.Tensor, b: torch.Tensor, threshold: Threshold = 0.5) -> MetricResult:
    """Dice 2|A∩B| / (|A| + |B|) of the binarised maps; both empty -> 1.0."""
    inter, na, nb = _overlap(a, b, threshold)
    den = na + nb
    return _result(
        torch.where(den > 0, 2 * inter / den.clamp_min(1), torch.ones_like(inter)), _nonfinite(a, b)
    )


@dataclass(frozen=True)
class ThresholdCurve:
    """A metric swept over thresholds: ``values`` (N, T) at ``thresholds`` (T,), ``auc`` (N,) by trapezoid,
    divided by the threshold span so it stays in the metric's range."""

    thresholds: np.ndarray
    values: np.ndarray
    auc: np.ndarray


def threshold_curve(
    a: torch.Tensor,
    b: torch.Tensor,
    metric: Literal["iou", "dice"] = "iou",
    thresholds: Sequence[float] | np.ndarray | None = None,
) -> ThresholdCurve:
    """IoU or Dice at each threshold (default 0, 0.05, ..., 0.95) and the normalised area under that curve."""
    if metric not in ("iou", "dice"):
        raise InvalidInputError(f"metric must be 'iou' or 'dice', got {str(metric)[:40]!r}")
    try:
        ts = np.linspace(0.0, 0.95, 20) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"thresholds must be numbers in [0, 1], got {_kind(thresholds)}") from None
    if ts.ndim != 1 or ts.size < 2:
        raise InvalidInputError("thresholds must be a 1-D sequence of at least two values")
    if not (np.all((ts >= 0) & (ts <= 1)) and np.all(np.diff(ts) > 0)):
        raise InvalidInputError("thresholds must be increasing numbers in [0, 1]")
    fn = iou if metric == "iou" else dice
    # One batched evaluation per threshold: T is small, and N is never looped over.
    vals = np.stack([fn(a, b, float(t)).values for t in ts], axis=1)
    auc = np.trapezoid(vals, ts, axis=1) / (ts[-1] - ts[0])
    return ThresholdCurve(ts, vals, auc)


# ----------------------------------------------------------------------------------------------- SSIM
def _gaussian_taps(sigma: float, truncate: float) -> np.ndarray:
    # scipy.ndimage.gaussian_filter's kernel: radius int(truncate * sigma + 0.5), normalised to sum 1.
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


@lru_cache(maxsize=16)
def _valid_filter_matrix(n: int, sigma: float) -> torch.Tensor:
    """(n - win + 1, n) banded M with (M @ x)[i] = Σ_k taps[k] x[i + k]: a 'valid' 1-D Gaussian filter."""
    taps = _gaussian_taps(sigma, 3.5)
    win = taps.size
    m = np.zeros((n - win + 1, n))
    for i in range(n - win + 1):  # built once per grid size and cached
        m[i, i : i + win] = taps
    return torch.from_numpy(m)


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    sigma: float = 1.5,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> MetricResult:
    """Mean SSIM (Wang et al. 2004) with scikit-image's Gaussian settings.

    Equals ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=sigma,
    use_sample_covariance=False, data_range=data_range)``: an 11-tap Gaussian (truncate 3.5) and the mean
    taken over the image cropped by (win - 1) // 2 on every side. Because exactly the pixels whose window
    touches the border are cropped, a 'valid' separable filter gives the same numbers without any padding; it
    is applied as two matrix products with banded filter matrices, which CPUs run far faster than a
    one-channel convolution.
    """
    for name, v in (("sigma", sigma), ("data_range", data_range)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise InvalidInputError(f"{name} must be a positive finite number, got {_kind(v)}")
    h, w = int(a.shape[-2]), int(a.shape[-1])
    if sigma > max(h, w):
        raise ShapeError(f"SSIM with sigma {sigma:g} needs maps far larger than {(h, w)}")
    win = _gaussian_taps(sigma, 3.5).size
    if min(h, w) < win:
        raise ShapeError(f"SSIM needs maps of at least {win}x{win} pixels, got {(h, w)}")
    a, b = torch.broadcast_tensors(a, b)
    n = a.shape[0]
    mh = _valid_filter_matrix(h, sigma).to(a.device, a.dtype)
    mw = _valid_filter_matrix(w, sigma).to(a.device, a.dtype)
    stack = torch.stack([a, b, a * a, b * b, a * b])  # (5, N, H, W)
    f = torch.matmul(mh, torch.matmul(stack, mw.T))  # (5, N, H', W')
    ux, uy, uxx, uyy, uxy = f.unbind(0)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return _result(s.reshape(n, -1).mean(1, dtype=torch.float64), _nonfinite(a, b))


# ----------------------------------------------------------------------------------------------- correlation
def cosine(a: torch.Tensor, b: torch.Tensor) -> MetricResult:
    """Cosine similarity of the flattened maps; NaN when either map is all zeros."""
    fa, fb = _flat(a, b)
    na, nb = fa.norm(dim=1).to(torch.float64), fb.norm(dim=1).to(torch.float64)
    # float32 accumulation can land a hair outside [-1, 1] (1.0001 for a map with itself): clamp to the range.
    val = (torch.linalg.vecdot(fa, fb).to(torch.float64) / (na * nb).clamp_min(1e-300)).clamp(-1.0, 1.0)
    return _result(
        val, [*_nonfinite(a, b), (na == 0, "map is all zeros"), (nb == 0, "reference is all zeros")]
    )


def pearson(a: torch.Tensor, b: torch.Tensor) -> MetricResult:
    """Pearson correlation of the flattened maps; NaN when either map is constant."""
    fa, fb = _flat(a, b)
    ca = fa - fa.mean(1, keepdim=True)
    cb = fb - fb.mean(1, keepdim=True)
    sa, sb = ca.norm(dim=1).to(torch.float64), cb.norm(dim=1).to(torch.float64)
    # Relative test: a map equal to a constant up to rounding counts as constant.
    tol = 8 * torch.finfo(fa.dtype).eps * math.sqrt(fa.shape[1])
    const_a = sa <= tol * fa.abs().amax(1).to(torch.float64)
    const_b = sb <= tol * fb.abs().amax(1).to(torch.float64)
    val = (torch.linalg.vecdot(ca, cb).to(torch.float64) / (sa * sb).clamp_min(1e-300)).clamp(-1.0, 1.0)
    return _result(val, [*_nonfinite(a, b), (const_a, "map is constant"), (const_b, "reference is constant")])


# ------------------------------------------------------------------------------------------- distributions
def kl_divergence(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> MetricResult:
    """KL(P_ref ‖ Q_map) in nats: P = reference + eps, Q = map + eps, each normalised to sum 1.

    Equals ``scipy.stats.entropy(ref.ravel() + eps, map.ravel() + eps)``.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
        raise InvalidInputError(f"eps must be a positive finite number, got {_kind(eps)}")
    fa, fb = _flat(a, b)
    q = fa + eps
    p = fb + eps
    sq, sp = q.sum(1, keepdim=True), p.sum(1, keepdim=True)
    # Σ p/sp · log((p/sp) / (q/sq)) = Σ p · log(p/q) / sp + log(sq/sp): one log per pixel.
    kl = torch.linalg.vecdot(p, torch.log(p / q)).to(torch.float64) / sp.reshape(-1).to(torch.float64)
    kl = kl + torch.log(sq / sp).reshape(-1).to(torch.float64)
    return _result(kl.clamp_min(0.0), _nonfinite(a, b))


def wasserstein_values(a: torch.Tensor, b: torch.Tensor) -> MetricResult:
    """1-D Wasserstein distance between the two maps' VALUE distributions (not spatial).

    Equals ``scipy.stats.wasserstein_distance(map.ravel(), ref.ravel())``: with equal pixel counts it is the
    mean absolute difference of the sorted values.
    """
    fa, fb = _flat(a, b)
    sa = torch.sort(fa.to(torch.float64), dim=1).values
    sb = torch.sort(fb.to(torch.float64), dim=1).values
    return _result((sa - sb).abs().mean(1), _nonfinite(a, b))


# ----------------------------------------------------------------------------------------------- annotations
def _disk(radius: int, dtype: torch.dtype) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, dtype=torch.float64)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).to(dtype)


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: int = 0) -> MetricResult:
    """1.0 when the map's maximum (first in row-major order) lies in the mask, or within ``tolerance`` pixels
    of it (Euclidean; Zhang et al. 2016 use 15 px), else 0.0; NaN when the mask is empty."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, np.integer)) or tolerance < 0:
        raise InvalidInputError(f"tolerance must be a whole number of pixels ≥ 0, got {_kind(tolerance)}")
    # beyond the map's diagonal every pixel is within reach: a larger disk changes nothing but its cost
    tolerance = min(int(tolerance), math.ceil(math.hypot(maps.shape[-2], maps.shape[-1])))
    maps, masks = torch.broadcast_tensors(maps, masks.to(maps.dtype))
    m = masks > 0.5
    if tolerance > 0:
        k = _disk(tolerance, maps.dtype).to(maps.device)[None, None]
        m = F.conv2d(m.to(maps.dtype).unsqueeze(1), k, padding=tolerance).squeeze(1) > 0
    flat_m = m.reshape(m.shape[0], -1)
    top = maps.reshape(maps.shape[0], -1).argmax(dim=1, keepdim=True)
    hit = flat_m.gather(1, top).reshape(-1).to(torch.float64)
    return _result(
        hit,
        [
            *_nonfinite(maps, masks, "annotation mask has NaN or infinite values"),
            (~flat_m.any(1), "annotation mask is empty"),
        ],
    )


def energy_in_mask(maps: torch.Tensor, masks: torch.Tensor) -> MetricResult:
    """Share of the map's total energy (sum of values) that falls inside the mask, in [0, 1]."""
    fa, fm = _flat(maps, masks.to(maps.dtype))
    fa = fa.to(torch.float64)
    total = fa.sum(1)
    inside = (fa * (fm > 0.5)).sum(1)
    return _result(
        inside / total.clamp_min(1e-300),
        [
            *_nonfinite(maps, masks, "annotation mask has NaN or infinite values"),
            (total <= 0, "map is all zeros"),
            (~(fm > 0.5).any(1), "annotation mask is empty"),
        ],
    )
