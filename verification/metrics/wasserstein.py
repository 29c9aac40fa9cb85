"""Spatial earth-mover (Wasserstein-1) distance between maps seen as mass on the pixel grid.

The registered ``wasserstein`` metric (:func:`wasserstein`) is the EXACT earth mover's distance on a grid
graph (METHODS.md §2: coordinates in [0, 1], Euclidean ground cost): each map is area-pooled to at most
``grid``×``grid`` cells (default :data:`DEFAULT_GRID` = 32; each cell placed at the centre of the pixels it
pools, mass kept), normalised to unit mass, and the minimum-cost flow of ``a − b`` is solved exactly on the
graph joining every cell to its neighbours at the offsets (0, 1), (1, 0), (1, ±1), (1, ±2), (2, ±1),
(1, ±3), (3, ±1), (2, ±3), (3, ±2) and their opposites (32 arcs a cell), each arc costing the Euclidean
distance between the two cell centres (:mod:`verification.metrics.grid_flow`: a compiled network simplex
with a multi-scale start, or a grid-Poisson start on noise-like maps).

The graph's path length is never below the Euclidean distance and, on a square grid, at most 1.31 % above it
(consecutive arc directions are at most 18.4° apart and span unimodular cones: 1 / cos(9.2°) − 1), so the
value is an UPPER bound of the exact distance on the pooled grid, at most 1.31 % high; it is exact for moves
along the 32 arc directions (a translation by whole cells along an axis, a diagonal, (1, 2), …).

Measured against POT's exact ``ot.emd2`` (Euclidean cost) on the same 32×32 grid (``.venv/bin/python
bench/wasserstein.py --pairs 40``, four runs 13:35–13:46 UTC at load 2.9–3.9 on 2 cores; |relative error|
median / p95 / worst): attention-like pairs (224² maps pooled) 0.46 % / 0.66 % / 0.90 %; i.i.d. noise 0.11 %
/ 0.21 % / 0.30 %; two blobs vs one 0.58 % / 1.00 % / 1.10 %; never below ``ot.emd2``, as the bound says.
CPU time a pair (both single-threaded), ours against ``ot.emd2``: attention-like 1.22–1.41 ms against
185–251 ms (137×, 139×, 179×, 184×), noise 1.18–1.41 ms against 131–162 ms (103×, 109×, 115×, 136×), two
blobs 0.92–1.01 ms against 145–173 ms (150×, 157×, 172×, 187×) in four 40-pair runs (a 20-pair run: 143× /
131× / 198×) — ``ot.emd2``'s own time varies by ~25 % between runs, so noise's ratio, the lowest, moves
with it; it stayed above issue #18's 100× in all five runs. On the quiet machine (14:05 and 14:58 UTC,
load 0.5–1.3): 172× / 122× / 199× and 151× / 130× / 150× (attention-like / noise / two blobs).
Median pivots a pair 2,462 /
2,145 / 2,470 (noise-like pairs start from grid-Poisson keys: see :mod:`~verification.metrics.grid_flow`).
1,000 attention-like 224² pairs through ``compute_metrics(..., ["wasserstein"], size=None)`` on 2 threads:
1.25–1.53 s CPU, 0.80–2.33 s wall at load 3–5 (0.93–0.99 s wall at load ~1.2 before this session's solver
changes, which cut its CPU time a pair by ~30 %). Pooling 224² maps to 32² instead of 64² changed
attention-like values by 0.12 % (median; p95 0.24 %), and 64² costs ~10× more (12–17 ms a pair), hence the
32×32 default. Numba compiles the solver on the first call of a process with no cache (12.4–13.8 s at load
3.3–3.8, where the solver as it was before took 12.1–12.2 s; 7.9–8.9 s at load ~1.3; the benchmark's own
figure, pooling kernel and imports included, 18.9–22.7 s at load 3.4–3.9), then loads it from disk
(0.50–0.68 s incl. imports).

Pooling moves each unit of mass by at most half a cell's diagonal (√2 / 62 in the unit square at 32×32),
the same for the exact solver run on the pooled maps; the benchmark also reports 32×32 against 64×64.

:func:`sliced_wasserstein` (not registered) is kept as a labelled LOWER bound: the maps are projected on
``n_directions`` lines and the 1-D distances averaged; every projection is 1-Lipschitz, so with the default
``rescale=False`` it never exceeds the exact distance and for a translation by ``t`` it is ``(2/π)|t|``.
``rescale=True`` multiplies by π/2 (exact for translations, otherwise neither a lower nor an upper bound);
even so it measured 11 % (median, attention-like) to 34 % (median, noise) below ``ot.emd2`` at 32×32
(``python bench/wasserstein.py``; deterministic).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from verification.errors import InvalidInputError
from verification.metrics.functional import MetricResult, make_result, nonfinite_reasons, paired_rows

DEFAULT_DIRECTIONS = 32
DEFAULT_GRID = 32
DEFAULT_SEED = 0
MAX_DIRECTIONS = 4096  # the midpoint rule's error is already far below the pooling error at 32
MAX_GRID = 256  # the sliced bound's limit
MAX_EXACT_GRID = 128  # the exact solver's: about a second a pair at 128×128, growing ~ cells²
NO_MASS_MAP = "map has no mass (all zeros)"
NO_MASS_REF = "reference has no mass (all zeros)"
OVERFLOW_MAP = "map's values overflow float64 when pooled (near 1e308): rescale the map"
OVERFLOW_REF = "reference's values overflow float64 when pooled (near 1e308): rescale the reference"
_CHUNK_ELEMENTS = 1 << 23  # bound on pairs × directions × cells held at once (about 32 MB in float32)


def cell_centres(n_in: int, n_out: int) -> np.ndarray:
    """Coordinates in [0, 1] of adaptive-average-pool cells (centre of the input pixels each one covers)."""
    i = np.arange(n_out)
    start = np.floor(i * n_in / n_out)
    end = np.ceil((i + 1) * n_in / n_out)
    centre = (start + end - 1) / 2
    return centre / max(n_in - 1, 1)


@lru_cache(maxsize=32)
def _projection_plan(
    in_hw: tuple[int, int], out_hw: tuple[int, int], n_directions: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per direction: the order of the grid cells along the projected line and the gaps between them."""
    ys = cell_centres(in_hw[0], out_hw[0])
    xs = cell_centres(in_hw[1], out_hw[1])
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)  # (cells, 2)
    offset = np.random.default_rng(seed).random()
    theta = math.pi * (np.arange(n_directions) + offset) / n_directions
    dirs = np.stack([np.cos(theta), np.sin(theta)], axis=1)  # (D, 2)
    proj = dirs @ pts.T  # (D, cells)
    order = np.argsort(proj, axis=1, kind="stable")
    sorted_pos = np.take_along_axis(proj, order, axis=1)
    gaps = np.diff(sorted_pos, axis=1)  # (D, cells - 1)
    return torch.from_numpy(order), torch.from_numpy(gaps)


def _nonnegative(x: torch.Tensor) -> torch.Tensor:
    """Negative values clipped to 0; a batch with none (prepared maps are in [0, 1]) is returned as is."""
    return x.clamp_min(0) if bool((x.amin() < 0).item()) else x


def pool_mass(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Area-pool (N, H, W) maps to at most ``grid`` cells per side; each map keeps its total mass."""
    h, w = x.shape[-2:]
    oh, ow = min(h, grid), min(w, grid)
    if (oh, ow) == (h, w):
        return x
    pooled = F.adaptive_avg_pool2d(x.unsqueeze(1), (oh, ow)).squeeze(1)
    # Adaptive cells may differ in size: rescale so each map keeps its mass exactly (a massless map stays 0;
    # a float32 clamp at 1e-300 would be 0 and give 0/0 = NaN).
    total, pooled_total = x.sum((-2, -1), keepdim=True), pooled.sum((-2, -1), keepdim=True)
    safe = torch.where(pooled_total > 0, pooled_total, torch.ones_like(pooled_total))
    return pooled * torch.where(pooled_total > 0, total / safe, torch.zeros_like(total))


def pooled_rows(x: torch.Tensor, out_hw: tuple[int, int]) -> np.ndarray:
    """(N, cells) float64 cell means of ``max(x, 0)`` (x (N, H, W)) area-pooled to ``out_hw`` as
    :func:`pool_mass` pools (without its rescaling to the map's total: each row is normalised to unit mass
    afterwards, so a factor common to the row changes nothing). One compiled pass over the maps in their own
    dtype, summing in float64: no float64 copy of the full-resolution maps (which cost more than the
    pooling)."""
    from verification.metrics import kernels  # numba: imported on first use, not with the metrics

    t = x.detach().cpu()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    arr = np.ascontiguousarray(t.numpy()).reshape(-1, int(t.shape[-2]), int(t.shape[-1]))
    out = np.empty((arr.shape[0], out_hw[0] * out_hw[1]), np.float64)
    kernels.pool_nonnegative(arr, out_hw[0], out_hw[1], out)
    return out


def _check_whole(name: str, v: object, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= hi:
        raise InvalidInputError(f"{name} must be a whole number from 1 to {hi}, got {str(v)[:40]}")


def wasserstein(a: torch.Tensor, b: torch.Tensor, *, grid: int = DEFAULT_GRID) -> MetricResult:
    """Spatial Wasserstein-1 between maps ``a`` and references ``b`` (N|1, H, W) as mass distributions on the
    pixel grid with coordinates in [0, 1]: exact transport on the grid graph described in the module
    docstring (an upper bound of the Euclidean earth mover's distance, at most 1.31 % high on square grids),
    after area-pooling to at most ``grid``×``grid`` cells. Negative values are clipped to 0; each map is
    normalised to unit mass. NaN (with a reason) when a map has no mass or is not finite."""
    _check_whole("grid", grid, MAX_EXACT_GRID)
    unscored = nonfinite_reasons(a, b)
    paired_rows(a, b)  # grid and batch checks
    in_hw = (int(a.shape[-2]), int(a.shape[-1]))
    out_hw = (min(in_hw[0], grid), min(in_hw[1], grid))
    pa, pb = pooled_rows(a, out_hw), pooled_rows(b, out_hw)
    n = max(pa.shape[0], pb.shape[0])
    fa = np.broadcast_to(pa, (n, pa.shape[1]))
    fb = np.broadcast_to(pb, (n, pb.shape[1]))
    ma, mb = fa.max(1), fb.max(1)  # the largest cell, not the sum: a sum of finite cells can overflow
    ok = (ma > 0) & (mb > 0) & np.isfinite(ma) & np.isfinite(mb)
    for mask, _ in unscored:  # (Na,) or (Nb,): one row broadcasts
        ok &= ~np.broadcast_to(np.asarray(mask, dtype=bool).reshape(-1), ok.shape)
    overflow = [(~np.isfinite(ma), OVERFLOW_MAP), (~np.isfinite(mb), OVERFLOW_REF)]  # finite pixels, pooled
    out = np.full(n, np.nan)
    if ok.any():
        from verification.metrics import grid_flow  # numba: imported on first use, not with the metrics

        ys = tuple(cell_centres(in_hw[0], out_hw[0]).tolist())
        xs = tuple(cell_centres(in_hw[1], out_hw[1]).tolist())
        out[ok] = grid_flow.graph_transport(fa[ok], fb[ok], ys, xs)
    return make_result(out, [*unscored, (ma <= 0, NO_MASS_MAP), (mb <= 0, NO_MASS_REF), *overflow])


def sliced_wasserstein(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    n_directions: int = DEFAULT_DIRECTIONS,
    grid: int = DEFAULT_GRID,
    seed: int = DEFAULT_SEED,
    rescale: bool = False,
) -> MetricResult:
    """A LOWER bound of the spatial Wasserstein-1 distance (see the module docstring): the sliced distance
    between maps ``a`` and references ``b`` (N|1, H, W) on the pixel grid with coordinates in [0, 1].
    ``rescale=True`` multiplies by π/2 (exact for translations, no longer a bound). Negative values are
    clipped to 0; each map is normalised to unit mass. NaN (with a reason) when a map has no mass."""
    _check_whole("n_directions", n_directions, MAX_DIRECTIONS)
    _check_whole("grid", grid, MAX_GRID)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(f"seed must be a whole number ≥ 0, got {str(seed)[:40]}")
    unscored = nonfinite_reasons(a, b)  # before clipping, which would turn -inf into 0
    paired_rows(a, b)  # grid and batch checks
    in_hw = (int(a.shape[-2]), int(a.shape[-1]))
    # Pool each side once (a single reference is pooled once, not once per map), then broadcast.
    pa, pb = torch.broadcast_tensors(pool_mass(_nonnegative(a), grid), pool_mass(_nonnegative(b), grid))
    out_hw = (int(pa.shape[-2]), int(pa.shape[-1]))
    n = pa.shape[0]
    # numpy from here (single-threaded): a few small steps per chunk, which torch's thread pool slows down
    fa = pa.detach().cpu().numpy().reshape(n, -1)
    fb = pb.detach().cpu().numpy().reshape(n, -1)
    ma, mb = fa.sum(1, dtype=np.float64), fb.sum(1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = fa / np.maximum(ma, 1e-300)[:, None].astype(fa.dtype) - fb / np.maximum(mb, 1e-300)[
            :, None
        ].astype(fb.dtype)
    order, gaps = _projection_plan(in_hw, out_hw, n_directions, seed)
    g = gaps.numpy().astype(diff.dtype)
    cells = order.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // (n_directions * cells))
    out = np.empty(n, dtype=np.float64)
    flat_order = order.numpy().reshape(-1)
    for s in range(0, n, chunk):  # chunks bound memory; each chunk is one batched computation
        d = diff[s : s + chunk]
        cdf = np.take(d, flat_order, axis=1).reshape(d.shape[0], n_directions, cells)
        np.cumsum(cdf, axis=2, out=cdf)
        part = np.abs(cdf[:, :, :-1])
        out[s : s + chunk] = np.einsum("ndk,dk->nd", part, g).mean(axis=1, dtype=np.float64)
    if rescale:
        out = out * (math.pi / 2)
    return make_result(
        out,
        [
            *unscored,
            (ma <= 0, NO_MASS_MAP),
            (mb <= 0, NO_MASS_REF),
        ],
    )
