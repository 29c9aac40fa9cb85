"""Pure, batched similarity functions between attention maps and references.

Every function takes two tensors ``a`` (maps) and ``b`` (references) of shape (N, H, W) or (1, H, W)
(broadcast against each other, so N maps can be compared against one reference without copying) with values in
[0, 1] as produced by :func:`prepare`, and returns a :class:`MetricResult`: the (N,) values (float64 numpy)
and, for every value that is undefined, the reason it is NaN. No function loops over pairs in Python: the
six default metrics other than Wasserstein run compiled row kernels (:mod:`verification.metrics.kernels`,
numba, loaded on first use), one pass over a pair's pixels where the metric allows.

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
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from verification.errors import InputTooLargeError, InvalidInputError, ShapeError

Threshold = float | Literal["otsu"]
ArrayLike = np.ndarray | torch.Tensor


# The comparison grid: at most 2048² pixels per map and 4096 per side. A pair's working memory is a few copies
# of its grid (the two prepared maps, KL's ratios, SSIM's four fields: 235 MB for 2048² in float64).
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


# Work shared by the metrics of one compute_metrics chunk: which rows of a prepared tensor are not finite
# (prepare knows it already), and IoU/Dice's overlap counts (the same for both). Keyed by the identity of
# tensors that stay alive for the whole chunk; empty (no sharing) outside compute_metrics.
_SHARED: ContextVar[dict[tuple[Any, ...], Any] | None] = ContextVar("metrics_shared", default=None)


@contextmanager
def shared_work() -> Iterator[None]:
    """Within this block, metrics called on the same tensors reuse each other's row checks and counts."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _remember(key: tuple[Any, ...], value: Any) -> Any:
    cache = _SHARED.get()
    if cache is not None:
        cache[key] = value
    return value


def _recall(key: tuple[Any, ...]) -> Any:
    cache = _SHARED.get()
    return None if cache is None else cache.get(key)


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor (a copy only for other devices); the fast row kernels run in numpy."""
    return x.detach().cpu().numpy()


# Per-thread arrays reused from call to call (see scratch); larger requests get a fresh array each time.
_SCRATCH = threading.local()
SCRATCH_MAX_BYTES = 16 << 20  # compute_metrics chunks at 224²: 4 MB a side
ALIGN_BYTES = 64  # a cache line, and one 512-bit vector


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype[Any] | type) -> np.ndarray:
    """``np.empty(shape, dtype)`` starting on a :data:`ALIGN_BYTES` boundary (numpy's large arrays start 16
    bytes past one, so every 64-byte vector access to them straddles two cache lines). SSIM of 1,000 pairs at
    224² with its fields in such an array: 163–172 ms, against 187–203 ms 16 bytes off and 172–180 ms in
    numba's own allocation (one thread, data in cache, load 4–4.5 on 2 CPUs)."""
    dt = np.dtype(dtype)
    size = math.prod(shape)
    raw = np.empty(max(size, 1) * dt.itemsize + ALIGN_BYTES, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGN_BYTES
    return raw[start : start + max(size, 1) * dt.itemsize].view(dt)[:size].reshape(shape)


def scratch(key: str, shape: tuple[int, ...], dtype: np.dtype[Any] | type) -> np.ndarray:
    """An uninitialised array of ``shape`` kept per thread under ``key`` and handed out again on the next
    call: at 224², first touching a new chunk-sized array costs more than the kernels that fill it. The caller
    must be done with the previous array of that key; arrays over :data:`SCRATCH_MAX_BYTES` are not kept.
    Either way the array starts on a cache line (:func:`aligned_empty`)."""
    dt = np.dtype(dtype)
    size = math.prod(shape)
    if size * dt.itemsize > SCRATCH_MAX_BYTES:
        return aligned_empty(shape, dt)
    store: dict[str, np.ndarray] = _SCRATCH.__dict__
    buf = store.get(key)
    if buf is None or buf.dtype != dt or buf.size < size:
        buf = store[key] = aligned_empty((max(size, 1),), dt)
    return buf[:size].reshape(shape)


def _bad_rows(x: torch.Tensor) -> np.ndarray:
    """(N,) bool numpy: rows holding NaN or ±inf (min/max propagate both: two passes, no bool temporary)."""
    known = _recall(("bad", id(x)))
    if known is not None:
        return known
    if not x.is_floating_point():
        return np.zeros(x.shape[0], dtype=bool)
    flat = _as_numpy(x).reshape(x.shape[0], -1)
    return ~(np.isfinite(flat.min(axis=1)) & np.isfinite(flat.max(axis=1)))


def nonfinite_reasons(
    a: torch.Tensor, b: torch.Tensor, ref: str = NONFINITE_REF
) -> list[tuple[np.ndarray, str]]:
    """The (mask, reason) pairs that leave a pair unscored because either side holds NaN or ±inf: pass them
    to :func:`make_result` (``ref`` names the second side, e.g. an annotation mask). A side that
    :func:`prepare` found finite in this :func:`shared_work` block is left out (no mask to test per
    metric)."""
    sides = ((a, NONFINITE_MAP), (b, ref))
    return [(_bad_rows(x), why) for x, why in sides if not _recall(("finite", id(x)))]


def make_result(
    values: torch.Tensor | np.ndarray,
    undefined: Sequence[tuple[torch.Tensor | np.ndarray, str]] = (),
) -> MetricResult:
    """Pack a metric's (N,) values; each (mask, reason) pair sets NaN and its reason where the mask is true
    (first wins). A mask of one row (a single reference broadcast against N maps) applies to every row."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    out = np.array(values, dtype=np.float64).reshape(-1)
    reasons: dict[int, str] = {}
    for mask, reason in undefined:
        m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        if not m.any():  # the usual case, tested quickly (flatnonzero costs more, on every chunk)
            continue
        flat = m.reshape(-1)
        if flat.size == 1 and out.size != 1:
            flat = np.broadcast_to(flat, out.shape)
        for i in np.flatnonzero(flat).tolist():
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
    buffers: tuple[np.ndarray | None, np.ndarray | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring maps and references to one grid and to [0, 1].

    ``maps`` (N, H, W) | (H, W) and ``refs`` (N, H', W') | (1, H', W') | (H', W'); ``size`` (default: the
    maps' grid) is the common grid. Returns (N|1, h, w) tensors that broadcast against each other.
    ``buffers``: (N|1, h·w) arrays of the result's dtype to normalise maps already on the grid into (the
    returned tensors then share their memory); compute_metrics reuses one pair from chunk to chunk, since
    touching freshly allocated memory costs more than the normalisation itself.
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
    out_a, out_b = buffers or (None, None)
    return _resize_normalized(a, target, out_a), _resize_normalized(b, target, out_b)


def _resize_normalized(x: torch.Tensor, size: tuple[int, int], out: np.ndarray | None = None) -> torch.Tensor:
    """Resize then min-max normalise; a map constant at its own resolution stays all zeros (interpolation
    leaves rounding ripples on a constant map, which the normalisation would blow up to [0, 1]). A map with a
    NaN or an infinity becomes all NaN, so that no metric scores it (it is not "constant")."""
    if tuple(x.shape[-2:]) == tuple(size) and x.device.type == "cpu":
        return _normalized_native(x, out)
    flat = x.reshape(x.shape[0], -1)
    bad = nonfinite_rows(x)
    if bool(bad.any()):
        x = torch.where(bad.reshape(-1, 1, 1), torch.zeros_like(x), x)
        flat = x.reshape(x.shape[0], -1)
    lo, hi = torch.aminmax(flat, dim=1)
    res = normalize_maps(resize_maps(x, size))
    res = res * (hi > lo).to(res.dtype).reshape(-1, 1, 1)
    if bool(bad.any()):
        res = torch.where(bad.reshape(-1, 1, 1), torch.full_like(res, math.nan), res)
    _remember(("bad", id(res)), bad.cpu().numpy())
    _remember(("finite", id(res)), not bool(bad.any()))
    _remember(("unit", id(res)), True)
    return res


def _normalized_native(x: torch.Tensor, out: np.ndarray | None = None) -> torch.Tensor:
    """:func:`_resize_normalized` without a resize, into ``out`` (a new array unless a buffer of the right
    shape and dtype is given): numpy's min and max, then (x − min) / (max − min) in one compiled pass; zeros
    for a constant map, NaN rows for a map with NaN or ±inf (remembered for the metrics that follow)."""
    n = x.shape[0]
    flat = _as_numpy(x).reshape(n, -1)
    if out is None or out.shape != flat.shape or out.dtype != flat.dtype:
        out = np.empty_like(flat)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    bad = ~(np.isfinite(lo) & np.isfinite(hi))
    span = hi - lo
    if bad.any():
        lo, span = np.where(bad, 0, lo), np.where(bad, 1, span)
    safe = np.where(span > 0, span, 1).astype(flat.dtype)  # a finite constant map is 0 / 1 = 0 everywhere
    if flat.dtype in (np.float32, np.float64):
        _kernels().normalize_rows(np.ascontiguousarray(flat), lo.astype(flat.dtype), safe, out)
    else:
        np.subtract(flat, lo.astype(flat.dtype)[:, None], out=out)
        out /= safe[:, None]
    if bad.any():
        out[bad] = np.nan
    res = torch.from_numpy(out).reshape(x.shape)
    _remember(("bad", id(res)), bad)
    _remember(("finite", id(res)), not bad.any())
    _remember(("unit", id(res)), True)
    return res


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
    a map with NaN or ±inf gets NaN (the metrics leave such a pair unscored). Maps spanning exactly [0, 1]
    (what :func:`prepare` makes) are binned in their own dtype — ``floor(x · nbins)`` is exact for a
    power-of-two ``nbins`` — by a compiled pass a row; other maps in float64. The threshold is then found by
    a compiled pass over each histogram, with scikit-image's float64 arithmetic.
    """
    n = x.shape[0]
    flat = _as_numpy(x).reshape(n, -1)
    with np.errstate(invalid="ignore"):
        lo64, hi64 = flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64)
    bad = ~(np.isfinite(lo64) & np.isfinite(hi64))
    unit = (lo64 == 0) & (hi64 == 1) & (flat.dtype.kind == "f") & (nbins & (nbins - 1) == 0)
    lo64, hi64 = np.where(bad, 0.0, lo64), np.where(bad, 0.0, hi64)
    counts = np.zeros((n, nbins), dtype=np.int64)
    if unit.any():
        counts[unit] = _unit_histograms(flat if unit.all() else flat[unit], nbins)
    rest = ~unit & ~bad & (hi64 > lo64)
    if rest.any():
        counts[rest] = _float64_histograms(flat[rest], lo64[rest], hi64[rest], nbins)
    span = hi64 - lo64
    thr = np.empty(n, dtype=np.float64)
    _kernels().otsu_from_counts(counts, lo64, np.where(span > 0, span, 1.0), thr)
    thr = np.where(span > 0, thr, lo64)  # a constant map: its value
    thr[bad] = np.nan
    return torch.from_numpy(thr).to(device=x.device, dtype=x.dtype)


def _unit_histograms(rows: np.ndarray, nbins: int) -> np.ndarray:
    """(k, nbins) counts of rows with values in [0, 1]: bin floor(x · nbins), 1.0 in the last bin (as
    ``np.histogram``); exact in float32 and float64 for a power-of-two ``nbins``. One compiled pass a row."""
    dt = np.float64 if rows.dtype == np.float64 else np.float32
    out = np.empty((rows.shape[0], nbins), dtype=np.int64)
    _kernels().unit_histograms(np.ascontiguousarray(rows, dtype=dt), nbins, out)
    return out


def _float64_histograms(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, nbins: int) -> np.ndarray:
    """(k, nbins) counts over each row's own [lo, hi] (hi > lo, finite), in float64."""
    k = rows.shape[0]
    flat = torch.from_numpy(rows).to(torch.float64)
    lo_t, span = torch.from_numpy(lo).unsqueeze(1), torch.from_numpy(hi - lo).unsqueeze(1)
    idx = ((flat - lo_t) / span * nbins).floor().clamp_(0, nbins - 1).to(torch.int64)
    idx += (torch.arange(k) * nbins).unsqueeze(1)
    return torch.bincount(idx.reshape(-1), minlength=k * nbins).reshape(k, nbins).numpy()


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
def paired_rows(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(Na, P) and (Nb, P) numpy views of maps on one grid, Na and Nb equal or one of them 1 (broadcast by
    the kernels, never copied); ShapeError for different grids or batch sizes that do not broadcast."""
    if a.shape[-2:] != b.shape[-2:]:
        raise ShapeError(
            f"maps {tuple(a.shape)} and references {tuple(b.shape)} are on different grids; use prepare()"
        )
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ShapeError(f"cannot compare {a.shape[0]} maps with {b.shape[0]} references")
    fa, fb = _as_numpy(a).reshape(a.shape[0], -1), _as_numpy(b).reshape(b.shape[0], -1)
    if fa.dtype.kind != "f" or fb.dtype.kind != "f":
        dt = np.result_type(fa.dtype, fb.dtype, np.float32)
        fa, fb = fa.astype(dt, copy=False), fb.astype(dt, copy=False)
    return fa, fb


@lru_cache(maxsize=1)
def _kernels() -> ModuleType:
    """The compiled row kernels (:mod:`verification.metrics.kernels`), imported on first use (numba)."""
    from verification.metrics import kernels

    return kernels


def _kernel_rows(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """:func:`paired_rows` as C-contiguous arrays of one dtype, float64 if either side is, else float32; made
    once per (a, b) in a :func:`shared_work` block (the checks and views cost ~5 µs, per metric and chunk)."""
    key = ("rows", id(a), id(b))
    known = _recall(key)
    if known is not None:
        return known
    fa, fb = paired_rows(a, b)
    dt = np.float64 if np.float64 in (fa.dtype, fb.dtype) else np.float32
    return _remember(key, (np.ascontiguousarray(fa, dtype=dt), np.ascontiguousarray(fb, dtype=dt)))


def _thresholds(x: torch.Tensor, threshold: Threshold, dtype: np.dtype[Any]) -> np.ndarray:
    """Per-row thresholds of ``x`` in the maps' dtype: Otsu's per map, or the number for every map (compared
    in the maps' dtype, as numpy compares an array with a Python number)."""
    if threshold == "otsu":
        return otsu_thresholds(x).cpu().numpy().astype(dtype)
    return np.full(x.shape[0], threshold, dtype=dtype)


def _overlap(a: torch.Tensor, b: torch.Tensor, threshold: Threshold) -> tuple[np.ndarray, ...]:
    """(|A∩B|, |A|, |B|) per pair as float64, foreground = value > threshold; one compiled pass a pair.
    Shared by IoU and Dice within one compute_metrics chunk."""
    threshold = check_threshold(threshold)
    fa, fb = _kernel_rows(a, b)  # grid and batch checks
    key = ("overlap", id(a), id(b), threshold)
    known = _recall(key)
    if known is not None:
        return known
    counts = np.empty((max(fa.shape[0], fb.shape[0]), 3), dtype=np.int64)
    _kernels().overlap_counts(
        fa, fb, _thresholds(a, threshold, fa.dtype), _thresholds(b, threshold, fb.dtype), counts
    )
    inter, na, nb = counts.astype(np.float64).T
    return _remember(key, (inter, na, nb))


def iou(a: torch.Tensor, b: torch.Tensor, threshold: Threshold = 0.5) -> MetricResult:
    """Jaccard index |A∩B| / |A∪B| of the binarised maps; both empty -> 1.0."""
    inter, na, nb = _overlap(a, b, threshold)
    union = na + nb - inter
    return make_result(np.where(union > 0, inter / np.maximum(union, 1), 1.0), nonfinite_reasons(a, b))


def dice(a: torch.Tensor, b: torch.Tensor, threshold: Threshold = 0.5) -> MetricResult:
    """Dice 2|A∩B| / (|A| + |B|) of the binarised maps; both empty -> 1.0."""
    inter, na, nb = _overlap(a, b, threshold)
    den = na + nb
    return make_result(np.where(den > 0, 2 * inter / np.maximum(den, 1), 1.0), nonfinite_reasons(a, b))


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
def _ssim_taps(sigma: float, dtype: np.dtype[Any]) -> tuple[Any, ...]:
    """:func:`_gaussian_taps` (truncate 3.5) as a tuple of ``dtype`` scalars, as ssim_means takes them."""
    return tuple(_gaussian_taps(sigma, 3.5).astype(dtype))


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
    touches the border are cropped, a 'valid' separable filter gives the same numbers without any padding.

    Four filtered fields instead of five: with s = a + b and d = a − b, 2·μaμb = (μs² − μd²)/2,
    μa² + μb² = (μs² + μd²)/2, 2·cov = (var s − var d)/2 and var a + var b = (var s + var d)/2, so SSIM =
    (μs² − μd² + 2C1)(var s − var d + 2C2) / ((μs² + μd² + 2C1)(var s + var d + 2C2)). One compiled kernel
    (:func:`verification.metrics.kernels.ssim_means`) filters a pair's four fields (held in a per-thread,
    cache-line-aligned :func:`scratch` array) in the maps' dtype, in blocks of output rows that stay in the
    CPU caches, and sums the formula in float64.
    """
    for name, v in (("sigma", sigma), ("data_range", data_range)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise InvalidInputError(f"{name} must be a positive finite number, got {_kind(v)}")
    h, w = int(a.shape[-2]), int(a.shape[-1])
    if sigma > max(h, w):
        raise ShapeError(f"SSIM with sigma {sigma:g} needs maps far larger than {(h, w)}")
    win = 2 * int(3.5 * sigma + 0.5) + 1  # _gaussian_taps' length
    if min(h, w) < win:
        raise ShapeError(f"SSIM needs maps of at least {win}x{win} pixels, got {(h, w)}")
    fa, fb = _kernel_rows(a, b)  # grid and batch checks
    dt = fa.dtype.type
    out = np.empty(max(fa.shape[0], fb.shape[0]), dtype=np.float64)
    c1, c2 = 2 * (k1 * data_range) ** 2, 2 * (k2 * data_range) ** 2
    fields = scratch("ssim", (4, h, w), fa.dtype)
    _kernels().ssim_means(
        fa.reshape(-1, h, w), fb.reshape(-1, h, w), _ssim_taps(sigma, fa.dtype), dt(c1), dt(c2), out, fields
    )
    return make_result(out, nonfinite_reasons(a, b))


# ----------------------------------------------------------------------------------------------- correlation
def _unit_clip(x: np.ndarray) -> np.ndarray:
    """``np.clip(x, -1, 1)`` in place (NaN stays NaN), as two ufuncs: np.clip's dispatch costs more than
    the whole cosine of a compute_metrics chunk's 20 pairs takes outside its kernel."""
    np.maximum(x, -1.0, out=x)
    return np.minimum(x, 1.0, out=x)


def cosine(a: torch.Tensor, b: torch.Tensor) -> MetricResult:
    """Cosine similarity of the flattened maps; NaN when either map is all zeros. One compiled call a batch,
    one pass a pair (Σa², Σb², Σab in float64).

    Maps that :func:`prepare` normalised in this :func:`shared_work` block (compute_metrics' chunks), in
    float32, are summed in blocks of 128 pixels in float32, the blocks' sums in float64
    (:func:`~verification.metrics.kernels.cosine_rows` with ``unit``): no float64 conversion per pixel, at
    the cost of float32 rounding within a block. Measured on 1,000 attention-like 224² pairs against the
    float64 sums: |difference| median 1.5e-9, worst 1.0e-8 (the float32 peer, scipy on float32 maps, is up to
    2.6e-7 off); anywhere else (maps of any range) every product is summed in float64 (4e-14)."""
    fa, fb = _kernel_rows(a, b)
    n = max(fa.shape[0], fb.shape[0])
    val, zero = np.empty(n, dtype=np.float64), np.empty(n, dtype=np.int8)
    unit = fa.dtype == np.float32 and bool(_recall(("unit", id(a))) and _recall(("unit", id(b))))
    _kernels().cosine_rows(fa, fb, val, zero, unit)
    undefined = nonfinite_reasons(a, b)
    if zero.any():
        undefined += [((zero & 1) > 0, "map is all zeros"), ((zero & 2) > 0, "reference is all zeros")]
    return make_result(val, undefined)


def _constant(x: np.ndarray, mean: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """(n,) bool: which pairs' row of ``x`` (N|1, P) is constant up to rounding, given its mean and its norm
    after centring. Relative test: max|x| ≤ |mean| + norm, so only rows near the bound need their maximum."""
    tol = 8 * np.finfo(x.dtype).eps * math.sqrt(x.shape[1])
    const = norm <= tol * (np.abs(mean) + norm)
    if const.any():
        rows = np.flatnonzero(const)
        top = np.abs(x[rows if x.shape[0] > 1 else np.zeros_like(rows)]).max(axis=1).astype(np.float64)
        const[rows] = norm[rows] <= tol * top
    return const


def pearson(a: torch.Tensor, b: torch.Tensor) -> MetricResult:
    """Pearson correlation of the flattened maps; NaN when either map is constant. One compiled kernel a
    pair: the means, then the centred sums of products, in float64 (for float32 maps :func:`prepare`
    normalised in this :func:`shared_work` block, the means from float32 block sums folded in float64, which
    moves r by rounding only: ≤ 1.1e-15 on attention-like 224² pairs)."""
    fa, fb = _kernel_rows(a, b)
    n = max(fa.shape[0], fb.shape[0])
    m = np.empty((n, 5), dtype=np.float64)
    unit = fa.dtype == np.float32 and bool(_recall(("unit", id(a))) and _recall(("unit", id(b))))
    _kernels().centred_moments(fa, fb, m, unit)
    sa, sb = np.sqrt(m[:, 2]), np.sqrt(m[:, 3])
    with np.errstate(invalid="ignore"):
        const_a, const_b = _constant(fa, m[:, 0], sa), _constant(fb, m[:, 1], sb)
        val = _unit_clip(m[:, 4] / np.maximum(sa * sb, 1e-300))
    undefined = [*nonfinite_reasons(a, b), (const_a, "map is constant"), (const_b, "reference is constant")]
    return make_result(val, undefined)


# ------------------------------------------------------------------------------------------- distributions
def kl_divergence(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> MetricResult:
    """KL(P_ref ‖ Q_map) in nats: P = reference + eps, Q = map + eps, each normalised to sum 1.

    Equals ``scipy.stats.entropy(ref.ravel() + eps, map.ravel() + eps)``.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
        raise InvalidInputError(f"eps must be a positive finite number, got {_kind(eps)}")
    fa, fb = _kernel_rows(a, b)
    n, e = max(fa.shape[0], fb.shape[0]), fa.dtype.type(eps)
    # Σ p/sp · log((p/sp) / (q/sq)) = ln 2 · Σ p · log2(p/q) / sp + log(sq/sp): p/q and the sums in one
    # compiled pass, the logarithm by numpy (vectorised; log2 is the cheaper one), the weighted sum in a
    # second compiled pass.
    r = scratch("kl", (n, fa.shape[1]), fa.dtype)
    sums, weighted = np.empty((n, 2), dtype=np.float64), np.empty(n, dtype=np.float64)
    kernels = _kernels()
    kernels.kl_ratios(fa, fb, e, r, sums)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.log2(r, out=r)
        kernels.kl_weighted(fb, e, r, weighted)
        kl = math.log(2.0) * weighted / sums[:, 1] + np.log(sums[:, 0] / sums[:, 1])
    return make_result(np.maximum(kl, 0.0), nonfinite_reasons(a, b))


def wasserstein_values(a: torch.Tensor, b: torch.Tensor) -> MetricResult:
    """1-D Wasserstein distance between the two maps' VALUE distributions (not spatial).

    Equals ``scipy.stats.wasserstein_distance(map.ravel(), ref.ravel())``: with equal pixel counts it is the
    mean absolute difference of the sorted values.
    """
    fa, fb = _flat(a, b)
    sa = torch.sort(fa.to(torch.float64), dim=1).values
    sb = torch.sort(fb.to(torch.float64), dim=1).values
    return make_result((sa - sb).abs().mean(1), nonfinite_reasons(a, b))


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
    return make_result(
        hit,
        [
            *nonfinite_reasons(maps, masks, "annotation mask has NaN or infinite values"),
            (~flat_m.any(1), "annotation mask is empty"),
        ],
    )


def energy_in_mask(maps: torch.Tensor, masks: torch.Tensor) -> MetricResult:
    """Share of the map's total energy (sum of values) that falls inside the mask, in [0, 1]."""
    fa, fm = _flat(maps, masks.to(maps.dtype))
    fa = fa.to(torch.float64)
    total = fa.sum(1)
    inside = (fa * (fm > 0.5)).sum(1)
    return make_result(
        inside / total.clamp_min(1e-300),
        [
            *nonfinite_reasons(maps, masks, "annotation mask has NaN or infinite values"),
            (total <= 0, "map is all zeros"),
            (~(fm > 0.5).any(1), "annotation mask is empty"),
        ],
    )
