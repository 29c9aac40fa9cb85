"""The pairwise kernels of the C-Score: map preparation and all-pairs soft IoU (METHODS.md §4).

Only ``Σ min`` has to be computed per pair: ``Σ max = Σa + Σb − Σ min``. And
``Σ min(a, b) = (Σa + Σb − Σ|a − b|) / 2``, so the all-pairs ``Σ min`` is an all-pairs L1 (city-block)
distance, which :func:`scipy.spatial.distance.cdist` computes in compiled float64 loops. The default backend
runs it on pixel chunks (L1 is additive over pixels, so memory stays bounded) and on upper-triangle row
blocks spread over threads (scipy releases the GIL). ``backend="torch"`` does the same with blocked float32
``torch.minimum`` reductions (accumulated in float64); ``backend="compiled"`` fuses min and sum into one
kernel with :func:`torch.compile` (needs a C++ compiler; the first call compiles for a few seconds), which
``"auto"`` picks for large gold lists.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from verification.errors import ShapeError

log = logging.getLogger(__name__)

Backend = Literal["auto", "scipy", "torch", "compiled"]

DEFAULT_GAMMA = 2.0
DEFAULT_EPS = 1e-8
_PIXEL_CHUNK = 8192  # float64 chunk of 500 maps x 8192 px = 32 MB: bounded memory, cache-friendly rows
_ROW_BLOCK = 64


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
