"""Exact minimum-cost transport on a grid graph: a compiled (numba) primal network simplex.

The earth mover's distance between two mass maps on a grid, with the ground cost taken as the shortest-path
length in a grid graph (each cell joined to the cells at the offsets of :data:`OFFSETS`, each arc costing the
Euclidean length between the two cell centres), is a transshipment problem: supplies ``a − b`` (mass that
stays put costs nothing), uncapacitated arcs. It is solved exactly by the primal network simplex:

* spanning-tree bases held as in LEMON's network simplex (parent, tree arc and its direction, the preorder
  "thread" with its reverse, subtree sizes, each subtree's last node): a pivot costs the cycle's length plus
  the smaller side of the cut, whose potentials shift by one constant; that side is a stretch of the thread,
  walked from both ends at once (two independent pointer chains instead of one: 7–11 % less time);
* the first basis is a spanning tree of real arcs chosen along a "key" per cell (each cell hangs from its
  neighbour of higher key by the tightest arc; flows follow from subtree supplies, so it is always feasible,
  and zero-flow arcs point to the root, so it is strongly feasible); the key comes from the potentials of the
  same problem solved on a 2×2-pooled grid, recursively down to at most :data:`COARSEST` cells a side (a
  multi-scale start: about half the pivots on smooth maps). When 2×2 pooling cancels more than a quarter
  of Σ|supply| (noise-like maps: the coarse levels see little of the problem) there are no coarse solves:
  the key is the solution of the grid Poisson equation Δφ = supply (:func:`poisson_keys`, a DCT; its
  gradient field carries the supply from sources to sinks as transport does) and the first tree uses
  8-neighbour arcs only (median pivots on 40 noise pairs at 32² 3,458 → 2,145, time a pair 2.2 → 1.6–1.7
  ms at load 4–5.6; the optimal potentials themselves as keys took 2,117, on 10 pairs with the earlier
  pricing, so better keys have little left to give); on smooth maps Poisson keys took more pivots than the
  pyramid (2,492 against 2,386 attention-like, 2,935 against 2,364 two blobs);
* the leaving arc is the last blocking arc met when the cycle is walked from its apex in its own direction
  (Cunningham's rule), which keeps every basis strongly feasible and so excludes cycling on degenerate pivots;
  it is tracked while climbing to the apex instead of in a second walk over the two paths (6 rounds of 40
  pairs a family, best of each: 1.31 → 1.17, 1.46 → 1.25, 0.99 → 0.88 ms a pair, load ~3.9), and the
  climb is written with selects instead of branches (which side climbs is unpredictable: 1.19 → 1.09,
  1.34 → 1.15, 0.92 → 0.86 ms, load ~5.6);
* pricing by runs: the edges of one offset and one grid row (first cells consecutive, second cells at a
  fixed offset: :func:`grid_runs`) are priced together as ``cost − |π[first] − π[second]|`` (an edge's
  better direction) in one contiguous loop that numba vectorises; runs are scanned in turn from where the
  last search stopped and the most negative edge of the first run that has one enters (a run is one row of
  ≤ 32 edges at 32×32: 2,682 → 2,414 pivots attention-like, 3,882 → 3,394 noise, 2,458 → 2,348 two blobs
  against blocks of √arcs / 8 arcs; blocks of 32–128 edges took fewer pivots but more time). Pricing sees
  the 8-neighbour runs only (the first :data:`NEAR` offsets, a prefix) until they price out, then all
  runs: the same optimum, in fewer pivots (medians at 32×32 with the earlier blocks, noise 5,901 → 4,166,
  attention-like 2,887 → 2,686, two blobs 2,598 → 2,384);
* the main loop indexes arrays through unsigned integers (``_ix``), so numba drops its negative-index
  wraparound test (~25 % less time) — time shares here were each measured against the commit before, 20
  pairs a family, CPU time of one thread, at loads 2–4 on 2 cores (the solver's figures as they stand:
  :mod:`~verification.metrics.wasserstein`);
* masses are integers (each map scaled to :data:`MASS_UNITS` units, rounding residue put on its largest cell)
  and arc costs are integers (:data:`COST_UNITS` per unit length), so flows and potentials are exact; the
  returned cost is ``Σ flow × true arc length`` in float64. Rounding moves at most ``cells / MASS_UNITS`` of
  the mass and changes arc costs by at most ``0.5 / COST_UNITS``: relative effects below 1e-7 on grids up to
  128² cells.

Numba compiles the kernels on first use and caches the machine code on disk (``cache=True``, next to this
file or in ``NUMBA_CACHE_DIR``); this module is imported lazily by :mod:`verification.metrics.wasserstein`
so that importing the metrics costs no numba import.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np

# Undirected primitive offsets (di, dj); each gives two directed arcs. Consecutive directions are at most
# 18.43° apart and every consecutive pair spans a unimodular cone, so on an isotropic grid the path metric
# overestimates the Euclidean distance by at most 1 / cos(18.43° / 2) − 1 = 1.31 % (see grid_bound).
OFFSETS: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 0), (1, 1), (1, -1),
    (1, 2), (1, -2), (2, 1), (2, -1),
    (1, 3), (1, -3), (3, 1), (3, -1),
    (2, 3), (2, -3), (3, 2), (3, -2),
)  # fmt: skip
MASS_UNITS = 1 << 40  # integer units per unit of mass
COST_UNITS = 1 << 30  # integer cost units per unit of length ([0, 1] coordinates)
COARSEST = 8  # the multi-scale start: coarsest level at most this many cells a side
# poisson_keys' gradient in axis-step costs (median noise pivots at 32²: 0.5 → 2,295, 0.7 → 2,143,
# 1 → 2,199, 2 → 2,416)
POISSON_SCALE = 0.7
_KEY_CHUNK = 1 << 20  # cells of rows whose Poisson keys are computed at once (8 MB a float64 temporary)
NEAR = 4  # pricing sees the arcs of the first NEAR offsets (the 8-neighbour subgraph) first

_ix = np.uint64  # main-loop indices (never negative there): unsigned, so numba skips the wraparound test
_UP = 1  # the tree arc of a node points from the node to its parent
_DOWN = -1  # ... from the parent to the node


def grid_bound(ys: np.ndarray, xs: np.ndarray) -> float:
    """Worst ratio (path length in the graph) / (Euclidean distance) − 1 on a grid with uniform spacing
    ``ys[1] − ys[0]`` and ``xs[1] − xs[0]``: for cones of consecutive arc directions (unimodular, so every
    lattice vector in a cone is a whole-number sum of its two generators), 1 / cos(half the widest gap)
    − 1."""
    dy = float(ys[1] - ys[0]) if ys.size > 1 else 1.0
    dx = float(xs[1] - xs[0]) if xs.size > 1 else 1.0
    dirs = {(di, dj) for di, dj in OFFSETS} | {(-di, -dj) for di, dj in OFFSETS}
    angles = sorted(math.atan2(di * dy, dj * dx) for di, dj in dirs)
    gaps = [b - a for a, b in itertools.pairwise(angles)] + [angles[0] + 2 * math.pi - angles[-1]]
    return 1 / math.cos(max(gaps) / 2) - 1


def near_arcs(h: int, w: int) -> int:
    """Arcs of the first :data:`NEAR` offsets on an h×w grid: the first arcs of :func:`grid_graph`."""
    return 2 * sum(max(h - abs(di), 0) * max(w - abs(dj), 0) for di, dj in OFFSETS[:NEAR])


def grid_runs(h: int, w: int) -> tuple[np.ndarray, int]:
    """The edges of :func:`grid_graph` on an h×w grid (edge k: arcs 2k and 2k + 1) as runs, one per offset
    and row: (first edge, count, first cell, cell offset) — the edges' first cells are consecutive and each
    second cell is its first cell plus the offset. Also how many runs belong to the first :data:`NEAR`
    offsets (the 8-neighbour subgraph)."""
    rows: list[tuple[int, int, int, int]] = []
    near_runs = 0
    for k, (di, dj) in enumerate(OFFSETS):
        j0, j1 = max(0, -dj), min(w, w - dj)
        for i in range(max(0, -di), min(h, h - di)):
            if j1 > j0:
                rows.append((rows[-1][0] + rows[-1][1] if rows else 0, j1 - j0, i * w + j0, di * w + dj))
        if k == NEAR - 1:
            near_runs = len(rows)
    return np.array(rows, dtype=np.int64).reshape(-1, 4), near_runs


@lru_cache(maxsize=16)
def grid_graph(ys: tuple[float, ...], xs: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed arcs of the grid graph on cells at (ys[i], xs[j]) (cell index i·len(xs) + j): sources,
    targets (int64) and Euclidean lengths (float64). Arrays are shared: do not modify them."""
    y, x = np.asarray(ys), np.asarray(xs)
    h, w = y.size, x.size
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    src, dst, length = [], [], []
    for di, dj in OFFSETS:  # arcs 2k and 2k + 1 are the two directions of one edge
        ok = (ii + di >= 0) & (ii + di < h) & (jj + dj >= 0) & (jj + dj < w)
        a_i, a_j = ii[ok], jj[ok]
        b_i, b_j = a_i + di, a_j + dj
        fwd, bwd = a_i * w + a_j, b_i * w + b_j
        src.append(np.stack([fwd, bwd], axis=1).ravel())
        dst.append(np.stack([bwd, fwd], axis=1).ravel())
        length.append(np.repeat(np.hypot(y[b_i] - y[a_i], x[b_j] - x[a_j]), 2))
    s = np.concatenate(src).astype(np.int64)
    t = np.concatenate(dst).astype(np.int64)
    ln = np.concatenate(length).astype(np.float64)
    for arr in (s, t, ln):
        arr.setflags(write=False)
    return s, t, ln


def integer_masses(p: np.ndarray) -> np.ndarray:
    """(N, cells) finite nonnegative masses with positive row sums → int64 rows that each sum to exactly
    :data:`MASS_UNITS` (proportional rounding; the residue goes to the row's largest cell). A row whose sum
    is too small (about 1e-297 and below) or too large for float64 is first divided by its largest cell, so
    any positive finite row is scored; rows the solver could not take (negative, NaN) raise ValueError
    before they reach it."""
    p = np.asarray(p, dtype=np.float64)
    rows, top = np.arange(len(p)), p.argmax(axis=1)  # NaN fails p >= 0; +inf makes its row's largest cell
    largest = p[rows, top]
    if not ((p >= 0).all() and np.isfinite(largest).all() and (largest > 0).all()):
        raise ValueError("integer_masses needs finite nonnegative rows with a positive maximum")
    with np.errstate(divide="ignore", over="ignore"):
        total = p.sum(axis=1, keepdims=True)
        scale = MASS_UNITS / total
    odd = ~np.isfinite(scale[:, 0]) | ~np.isfinite(total[:, 0])
    if odd.any():  # a mass so small that MASS_UNITS / sum overflows, or a sum of finite cells that does:
        scaled = p[odd] / largest[odd, None]  # largest cell 1 (still at top), sum in [1, cells]
        p = p.copy()
        p[odd] = scaled
        total[odd] = scaled.sum(axis=1, keepdims=True)
        scale = MASS_UNITS / total
    q = np.rint(p * scale).astype(np.int64)
    q[rows, top] += MASS_UNITS - q.sum(axis=1)
    return q


@numba.njit(cache=True, nogil=True)
def _solve(
    supply: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    cost: np.ndarray,
    length: np.ndarray,
    key: np.ndarray,
    start_runs: int,
    ecost: np.ndarray,
    runs: np.ndarray,
    near_runs: int,
) -> tuple[float, int, np.ndarray]:  # pragma: no cover - compiled
    """Minimum of Σ length·flow over flows with divergence ``supply`` (int64, sums to 0), the number of
    pivots, and optimal potentials (int64, per cell). ``cost`` is the integer arc cost used for pivoting;
    arcs 2k and 2k + 1 must be the two directions of edge k, from its first cell to its second, and
    ``ecost[k]`` their cost; ``runs`` (R×4: first edge, count, first cell, cell offset) lists every edge
    once, as runs of consecutive edges whose first cells are consecutive and whose second cells are the
    first cells plus the run's offset (as :func:`grid_runs` gives them). ``key`` (int64 per cell, e.g.
    potentials of a coarser solve) shapes the first basis: each cell hangs from the neighbour of higher key
    (ties: higher index) whose arc is tightest, ``cost + key[cell] − key[neighbour]`` smallest; a cell
    without such a neighbour hangs from an artificial root; only the edges of runs ``0 … start_runs − 1``
    are considered. Pricing first sees only the edges of runs ``0 … near_runs − 1`` (a subgraph, e.g. the
    8-neighbour one) until none of them has a negative reduced cost, then all edges.

    The tree is held as in LEMON's network simplex: parent, tree arc and its direction, the preorder
    ("thread") with its reverse, subtree sizes and each subtree's last node in the preorder."""
    n = supply.size
    m = src.size
    root = n
    max_cost = 0
    for e in range(m):
        if cost[e] > max_cost:
            max_cost = cost[e]
    art = (max_cost + 1) * (n + 1)  # above any path's cost: artificial arcs end with no flow

    parent = np.empty(n + 1, np.int64)
    pred = np.full(n + 1, -1, np.int64)
    pdir = np.zeros(n + 1, np.int64)
    flow = np.zeros(n + 1, np.int64)  # the flow on each node's tree arc (other arcs carry none)
    pi = np.zeros(n + 1, np.int64)
    thread = np.empty(n + 1, np.int64)
    rev_thread = np.empty(n + 1, np.int64)
    succ_num = np.ones(n + 1, np.int64)
    last_succ = np.empty(n + 1, np.int64)
    dirty = np.empty(n + 2, np.int64)
    path_u = np.empty(n + 1, np.int64)
    path_v = np.empty(n + 1, np.int64)
    parent[root] = -1

    # --- first basis: a spanning tree along the keys, flows from subtree supplies (always feasible since
    # every edge has both directions); zero-flow arcs point to the root, so the tree is strongly feasible
    best_w = np.full(n, np.int64(1) << 62)
    up_arc = np.full(n, -1, np.int64)
    for r in range(start_runs):  # edge by edge (in arc order): exactly one of its two arcs points up the keys
        e0 = runs[r, 0]
        s0 = runs[r, 2]
        s1 = s0 + runs[r, 3]
        for t in range(runs[r, 1]):  # written with selects, not branches (key order is unpredictable)
            u = s0 + t
            v = s1 + t
            ku = key[_ix(u)]
            kv = key[_ix(v)]
            up = (kv > ku) | ((kv == ku) & (v > u))  # arc 2k (u → v) points up, else arc 2k + 1 (v → u)
            h = _ix(u if up else v)  # the end that would hang from the other
            w = ecost[_ix(e0 + t)] - abs(ku - kv)  # cost + key[lower] − key[higher]
            better = w < best_w[h]
            best_w[h] = w if better else best_w[h]
            up_arc[h] = 2 * (e0 + t) + (0 if up else 1) if better else up_arc[h]
    first = np.full(n + 1, -1, np.int64)
    nxt = np.full(n + 1, -1, np.int64)
    for u in range(n - 1, -1, -1):
        parent[u] = dst[up_arc[u]] if up_arc[u] >= 0 else root
        nxt[u] = first[parent[u]]
        first[parent[u]] = u
    order = np.empty(n + 1, np.int64)  # preorder from the root
    k = 0
    top = 1
    dirty[0] = root  # used as the DFS stack here
    while top > 0:
        top -= 1
        y = dirty[top]
        order[k] = y
        k += 1
        ch = first[y]
        while ch >= 0:
            dirty[top] = ch
            top += 1
            ch = nxt[ch]
    sub = np.zeros(n + 1, np.int64)
    sub[:n] = supply
    for i in range(n, 0, -1):
        y = order[i]
        sub[parent[y]] += sub[y]
        succ_num[parent[y]] += succ_num[y]
    for i in range(n + 1):
        y = order[i]
        z = order[i + 1] if i < n else root
        thread[y] = z
        rev_thread[z] = y
        last_succ[y] = order[i + succ_num[y] - 1]
    for i in range(1, n + 1):
        u = order[i]
        e = up_arc[u]
        if e < 0:  # artificial arc m + u (never priced): u → root costs 0, root → u costs art
            e = m + u
            ce = 0 if sub[u] >= 0 else art
        else:
            if sub[u] < 0:
                e = e ^ 1
            ce = cost[e]
        pred[u] = e
        if sub[u] >= 0:
            pdir[u] = _UP
            flow[u] = sub[u]
            pi[u] = pi[parent[u]] - ce
        else:
            pdir[u] = _DOWN
            flow[u] = -sub[u]
            pi[u] = pi[parent[u]] + ce

    n_runs = runs.shape[0]
    r_act = near_runs if 0 < near_runs < n_runs else n_runs  # the runs priced (first the subgraph, then all)
    next_run = 0
    pivots = 0
    while True:
        # --- pricing: runs in turn until one has an edge of negative reduced cost (tree arcs have exactly 0);
        # an edge's better direction has reduced cost ecost − |π[first] − π[second]|, and a run's minimum is
        # one contiguous loop (SIMD); the run's most negative edge enters
        in_arc = -1
        r = next_run
        scanned = 0
        while scanned < r_act and in_arc < 0:
            e0 = runs[_ix(r), 0]
            cnt = runs[_ix(r), 1]
            s0 = runs[_ix(r), 2]
            s1 = s0 + runs[_ix(r), 3]
            low = 0
            for t in range(cnt):
                low = min(low, ecost[_ix(e0 + t)] - abs(pi[_ix(s0 + t)] - pi[_ix(s1 + t)]))
            if low < 0:
                for t in range(cnt):
                    d = pi[_ix(s0 + t)] - pi[_ix(s1 + t)]
                    if ecost[_ix(e0 + t)] - abs(d) == low:  # arc 2k (first → second) has ecost + d
                        in_arc = 2 * (e0 + t) + (0 if d < 0 else 1)
                        break
            scanned += 1
            r = r + 1 if r + 1 < r_act else 0
        if in_arc < 0:
            if r_act < n_runs:  # optimal on the subgraph: now price every edge
                r_act = n_runs
                next_run = 0
                continue
            break
        next_run = r
        pivots += 1

        # --- the cycle's apex (join): climb from the end with the smaller subtree; the two paths (u … join
        # and v … join, join excluded) are recorded for the walks below. The leaving arc is found on the way:
        # flow goes join → … → u → v → … → join, blocking arcs are the tree arcs it runs against, and the
        # last one met from the apex wins (on u's side the first minimum from u, strict; on v's side the
        # last from v, non-strict; v's side on a tie)
        u = src[_ix(in_arc)]
        v = dst[_ix(in_arc)]
        a = u
        b = v
        nu = 0
        nv = 0
        du = np.int64(1) << 62
        dv = np.int64(1) << 62
        iu = -1
        iv = -1
        while a != b:  # with selects, not branches: which side climbs is unpredictable
            go_a = succ_num[_ix(a)] < succ_num[_ix(b)]
            x = a if go_a else b
            path_u[_ix(nu)] = a  # the side that does not climb is written again later (its count stays)
            path_v[_ix(nv)] = b
            f = flow[_ix(x)]
            pd = pdir[_ix(x)]
            cu = go_a and pd == _UP and f < du
            cv = (not go_a) and pd == _DOWN and f <= dv
            du = f if cu else du
            iu = nu if cu else iu
            dv = f if cv else dv
            iv = nv if cv else iv
            px = parent[_ix(x)]
            nu += 1 if go_a else 0
            nv += 0 if go_a else 1
            a = px if go_a else a
            b = b if go_a else px
        join = a
        if iv >= 0 and dv <= du:  # (some arc always blocks: a cycle of forward arcs only costs > 0)
            delta, side, i_out, u_out = dv, 2, iv, path_v[_ix(iv)]
        else:
            delta, side, i_out, u_out = du, 1, iu, path_u[_ix(iu)]
        if side == 1:
            u_in, v_in = u, v
            path_in, n_in, path_out, n_out = path_v, nv, path_u, nu
        else:
            u_in, v_in = v, u
            path_in, n_in, path_out, n_out = path_u, nu, path_v, nv

        # --- augment
        if delta > 0:
            for i in range(nu):
                x = path_u[_ix(i)]
                flow[_ix(x)] -= pdir[_ix(x)] * delta
            for i in range(nv):
                x = path_v[_ix(i)]
                flow[_ix(x)] += pdir[_ix(x)] * delta

        # --- re-hang the subtree of u_out under v_in: the stem u_in … u_out reverses
        old_rev_thread = rev_thread[_ix(u_out)]
        old_succ_num = succ_num[_ix(u_out)]
        old_last_succ = last_succ[_ix(u_out)]
        v_out = parent[_ix(u_out)]
        x = last_succ[_ix(u_in)]
        right = thread[_ix(x)]
        if old_rev_thread == v_in:
            last = thread[_ix(last_succ[_ix(u_out)])]
        else:
            last = thread[_ix(v_in)]
        thread[_ix(v_in)] = u_in
        stem = u_in
        par_stem = v_in
        dirty[_ix(0)] = v_in
        ndirty = 1
        while stem != u_out:
            new_stem = parent[_ix(stem)]
            thread[_ix(x)] = new_stem  # the next stem node follows the current stem's (remaining) subtree
            dirty[_ix(ndirty)] = x
            ndirty += 1
            w = rev_thread[_ix(stem)]  # cut the stem's subtree out of its old place in the thread
            thread[_ix(w)] = right
            rev_thread[_ix(right)] = w
            parent[_ix(stem)] = par_stem
            par_stem = stem
            stem = new_stem
            x = (
                rev_thread[_ix(par_stem)]
                if last_succ[_ix(stem)] == last_succ[_ix(par_stem)]
                else last_succ[_ix(stem)]
            )
            right = thread[_ix(x)]
        parent[_ix(u_out)] = par_stem
        thread[_ix(x)] = last
        rev_thread[_ix(last)] = x
        last_succ[_ix(u_out)] = x
        if old_rev_thread != v_in:
            thread[_ix(old_rev_thread)] = right
            rev_thread[_ix(right)] = old_rev_thread
        for i in range(ndirty):
            y = dirty[_ix(i)]
            rev_thread[_ix(thread[_ix(y)])] = y
        tmp_sc = 0
        tmp_ls = last_succ[_ix(u_out)]
        y = u_out
        while y != u_in:
            w = parent[_ix(y)]
            pred[_ix(y)] = pred[_ix(w)]
            flow[_ix(y)] = flow[_ix(w)]
            pdir[_ix(y)] = -pdir[_ix(w)]
            tmp_sc += succ_num[_ix(y)] - succ_num[_ix(w)]
            succ_num[_ix(y)] = tmp_sc
            last_succ[_ix(w)] = tmp_ls
            y = w
        pred[_ix(u_in)] = in_arc
        flow[_ix(u_in)] = delta  # the entering arc's flow (it had none)
        pdir[_ix(u_in)] = _UP if u_in == src[_ix(in_arc)] else _DOWN
        succ_num[_ix(u_in)] = old_succ_num
        up_limit_in = -1
        up_limit_out = -1
        if last_succ[_ix(join)] == v_in:
            up_limit_out = join
        else:
            up_limit_in = join
        y = v_in
        while y >= 0 and y != up_limit_in and last_succ[_ix(y)] == v_in:
            last_succ[_ix(y)] = last_succ[_ix(u_out)]
            y = parent[_ix(y)]
        new_last = (
            old_rev_thread if (join != old_rev_thread and v_in != old_rev_thread) else last_succ[_ix(u_out)]
        )
        y = v_out
        while y >= 0 and y != up_limit_out and last_succ[_ix(y)] == old_last_succ:
            last_succ[_ix(y)] = new_last
            y = parent[_ix(y)]
        for i in range(n_in):  # v_in … join: unchanged by the re-hang
            succ_num[_ix(path_in[_ix(i)])] += old_succ_num
        for i in range(i_out + 1, n_out):  # v_out … join, above u_out: unchanged too
            succ_num[_ix(path_out[_ix(i)])] -= old_succ_num

        # --- potentials: one shift for the whole re-hung subtree (a stretch of the thread), or the opposite
        # shift for everything else when that is smaller (reduced costs only see differences); the stretch is
        # walked from both ends at once (two independent pointer chains: about half the latency)
        sigma = pi[_ix(v_in)] - pi[_ix(u_in)] - pdir[_ix(u_in)] * cost[_ix(in_arc)]
        size = succ_num[_ix(u_in)]
        if 2 * size <= n + 1:  # the subtree: u_in … last_succ[u_in]
            y = u_in
            z = last_succ[_ix(u_in)]
        else:  # the rest: thread[last_succ[u_in]] … rev_thread[u_in], around the root
            sigma = -sigma
            y = thread[_ix(last_succ[_ix(u_in)])]
            z = rev_thread[_ix(u_in)]
            size = n + 1 - size
        for _ in range(size >> 1):
            pi[_ix(y)] += sigma
            pi[_ix(z)] += sigma
            y = thread[_ix(y)]
            z = rev_thread[_ix(z)]
        if size & 1:
            pi[_ix(y)] += sigma

    total = 0.0  # only tree arcs carry flow (and artificial ones none at the optimum)
    for x in range(n):
        e = pred[x]
        if e < m and flow[x] != 0:
            total += flow[x] * length[e]
    return total, pivots, pi[:n]


@dataclass(frozen=True)
class Pyramid:
    """Grid graphs from the given grid (level 0) to a coarse one (each level pools 2×2 cells), flattened for
    the compiled solver: level ``k`` owns cells ``cell_off[k]:cell_off[k+1]`` and arcs
    ``arc_off[k]:arc_off[k+1]`` (cell indices local to the level). ``agg`` maps each cell of levels
    0 … L−2 to its cell in the next level; ``nbr``/``wt`` interpolate the next level's potentials bilinearly
    at the cell's centre. ``ecost``: each edge's cost (its two arcs'); level ``k``'s edges form the runs
    ``runs[run_off[k]:run_off[k+1]]`` of :func:`grid_runs` (edge and cell indices local to the level), whose
    first ``near_runs[k]`` (the 8-neighbour subgraph) are priced first."""

    cell_off: np.ndarray
    arc_off: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    cost: np.ndarray
    length: np.ndarray
    agg: np.ndarray
    nbr: np.ndarray
    wt: np.ndarray
    ecost: np.ndarray
    runs: np.ndarray
    run_off: np.ndarray
    near_runs: np.ndarray


def _coarser(c: np.ndarray) -> np.ndarray:
    """Centres of the 2-cell groups of a sorted coordinate axis (a last odd cell stays alone)."""
    return np.array([c[i : i + 2].mean() for i in range(0, c.size, 2)])


def _interp(fine: np.ndarray, coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation weights on an axis (constant beyond the ends): lower, upper index and weight."""
    hi = np.clip(np.searchsorted(coarse, fine), 1, max(coarse.size - 1, 1))
    lo = hi - 1
    if coarse.size == 1:
        return np.zeros_like(hi), np.zeros_like(hi), np.zeros(fine.size)
    t = np.clip((fine - coarse[lo]) / (coarse[hi] - coarse[lo]), 0.0, 1.0)
    return lo, hi, t


@lru_cache(maxsize=16)
def pyramid(ys: tuple[float, ...], xs: tuple[float, ...], coarsest: int = COARSEST) -> Pyramid:
    """The :class:`Pyramid` of the grid on cells at (ys[i], xs[j]), down to ``coarsest`` cells a side."""
    axes = [(np.asarray(ys, dtype=np.float64), np.asarray(xs, dtype=np.float64))]
    while max(axes[-1][0].size, axes[-1][1].size) > coarsest:
        y, x = axes[-1]
        axes.append((_coarser(y) if y.size > 1 else y, _coarser(x) if x.size > 1 else x))
    graphs = [grid_graph(tuple(y.tolist()), tuple(x.tolist())) for y, x in axes]
    cell_off = np.cumsum([0] + [y.size * x.size for y, x in axes]).astype(np.int64)
    arc_off = np.cumsum([0] + [g[0].size for g in graphs]).astype(np.int64)
    agg, nbr, wt = [], [], []
    for (y, x), (yc, xc) in itertools.pairwise(axes):
        ii, jj = np.meshgrid(np.arange(y.size), np.arange(x.size), indexing="ij")
        agg.append(((ii // 2) * xc.size + (jj // 2)).ravel())
        ylo, yhi, ty = _interp(y, yc)
        xlo, xhi, tx = _interp(x, xc)
        a_lo, a_hi, a_t = ylo[ii.ravel()], yhi[ii.ravel()], ty[ii.ravel()]
        b_lo, b_hi, b_t = xlo[jj.ravel()], xhi[jj.ravel()], tx[jj.ravel()]
        nbr.append(
            np.stack(
                [a_lo * xc.size + b_lo, a_lo * xc.size + b_hi, a_hi * xc.size + b_lo, a_hi * xc.size + b_hi],
                1,
            )
        )
        wt.append(np.stack([(1 - a_t) * (1 - b_t), (1 - a_t) * b_t, a_t * (1 - b_t), a_t * b_t], 1))
    length = np.concatenate([g[2] for g in graphs])
    cost = np.rint(length * COST_UNITS).astype(np.int64)
    runs = [grid_runs(y.size, x.size) for y, x in axes]
    return Pyramid(
        cell_off=cell_off,
        arc_off=arc_off,
        src=np.concatenate([g[0] for g in graphs]),
        dst=np.concatenate([g[1] for g in graphs]),
        cost=cost,
        length=length,
        agg=np.concatenate(agg).astype(np.int64) if agg else np.zeros(0, np.int64),
        nbr=np.concatenate(nbr).astype(np.int64) if nbr else np.zeros((0, 4), np.int64),
        wt=np.concatenate(wt) if wt else np.zeros((0, 4)),
        ecost=np.ascontiguousarray(cost[::2]),
        runs=np.concatenate([r for r, _ in runs]),
        run_off=np.cumsum([0] + [r.shape[0] for r, _ in runs]).astype(np.int64),
        near_runs=np.array([nr for _, nr in runs], dtype=np.int64),
    )


@numba.njit(cache=True, nogil=True)
def _solve_pyramid(
    supply: np.ndarray, pyr: tuple[np.ndarray, ...], key0: np.ndarray
) -> tuple[float, int]:  # pragma: no cover - compiled
    """Exact cost on level 0 for ``supply`` (int64 per level-0 cell) on the pyramid ``pyr`` (the arrays of a
    :class:`Pyramid`, in field order), and the total number of pivots. With ``key0`` (int64
    per level-0 cell, e.g. :func:`poisson_keys`) level 0 alone is solved, its first basis along ``key0`` on
    8-neighbour arcs; with an empty ``key0`` each coarser level is solved first and its potentials,
    interpolated, shape the next level's first basis (on all arcs)."""
    cell_off, arc_off, src, dst, cost, length, agg, nbr, wt, ecost, runs, run_off, near_runs = pyr
    levels = cell_off.size - 1
    sup = np.zeros(cell_off[levels], np.int64)
    sup[: supply.size] = supply
    start = run_off[1:] - run_off[:-1]  # the runs the first basis may use
    if key0.size > 0:  # level 0 alone, from key0, on 8-neighbour arcs
        key = key0
        start[0] = near_runs[0]
        levels = 1
    else:
        for k in range(levels - 1):
            for i in range(cell_off[k + 1] - cell_off[k]):
                sup[cell_off[k + 1] + agg[cell_off[k] + i]] += sup[cell_off[k] + i]
        key = np.zeros(cell_off[levels] - cell_off[levels - 1], np.int64)
    total = 0.0
    pivots = 0
    for k in range(levels - 1, -1, -1):
        c0, c1, a0, a1 = cell_off[k], cell_off[k + 1], arc_off[k], arc_off[k + 1]
        total, piv, pi = _solve(
            sup[c0:c1],
            src[a0:a1],
            dst[a0:a1],
            cost[a0:a1],
            length[a0:a1],
            key,
            start[k],
            ecost[a0 // 2 : a1 // 2],
            runs[run_off[k] : run_off[k + 1]],
            near_runs[k],
        )
        pivots += piv
        if k > 0:
            f0 = cell_off[k - 1]
            nf = c0 - f0
            key = np.empty(nf, np.int64)
            for i in range(nf):
                v = 0.0
                for q in range(4):
                    v += wt[f0 + i, q] * pi[nbr[f0 + i, q]]
                key[i] = np.int64(np.floor(v))
    return total, pivots


@numba.njit(cache=True, nogil=True)
def _solve_rows(
    supply: np.ndarray, pyr: tuple[np.ndarray, ...], keys: np.ndarray, key_row: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    out = np.empty(supply.shape[0], np.float64)
    none = np.zeros(0, np.int64)
    for i in range(supply.shape[0]):
        if not supply[i].any():  # the same masses: nothing moves
            out[i] = 0.0
            continue
        out[i] = _solve_pyramid(supply[i], pyr, keys[key_row[i]] if key_row[i] >= 0 else none)[0]
    return out


@numba.njit(cache=True, nogil=True)
def _cancelling(supply: np.ndarray, agg: np.ndarray, n1: int) -> np.ndarray:  # pragma: no cover - compiled
    """Rows whose supply 2×2 pooling (``agg``: each cell's pooled cell, of ``n1``) cancels by more than a
    quarter: 4 · Σ|pooled| < 3 · Σ|supply| (noise-like maps)."""
    out = np.zeros(supply.shape[0], np.bool_)
    pooled = np.zeros(n1, np.int64)
    for i in range(supply.shape[0]):
        pooled[:] = 0
        total = 0
        for c in range(supply.shape[1]):
            pooled[agg[c]] += supply[i, c]
            total += abs(supply[i, c])
        out[i] = 4 * np.abs(pooled).sum() < 3 * total
    return out


@lru_cache(maxsize=8)
def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal type-II DCT as an n×n matrix (its inverse is its transpose)."""
    k, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    c = np.sqrt(2 / n) * np.cos(np.pi * (2 * j + 1) * k / (2 * n))
    c[0] /= np.sqrt(2)
    return c


def poisson_keys(supply: np.ndarray, ys: tuple[float, ...], xs: tuple[float, ...]) -> np.ndarray:
    """Start keys for :func:`_solve_pyramid`: per row of ``supply`` ((N, len(ys)·len(xs))), the solution φ of
    the grid Poisson equation Δφ = supply (5-point Laplacian in cell steps, reflecting borders; by the type-II
    DCT, as matrices), scaled so that its root-mean-square difference between axis neighbours is
    :data:`POISSON_SCALE` times the cost of one axis step — the H⁻¹ flow ∇φ runs from sources to sinks, as
    transport does. Any keys give the exact optimum; these only make a shorter start on noise-like maps."""
    h, w = len(ys), len(xs)
    s = np.asarray(supply, dtype=np.float64).reshape(-1, h, w)
    ch, cw = _dct_matrix(h), _dct_matrix(w)
    lam = (2 * np.cos(np.pi * np.arange(h) / h) - 2)[:, None] + (2 * np.cos(np.pi * np.arange(w) / w) - 2)
    lam[0, 0] = 1.0
    ph = (ch @ s @ cw.T) / lam
    ph[:, 0, 0] = 0.0
    phi = ch.T @ ph @ cw
    sq = np.square(np.diff(phi, axis=1)).sum((1, 2)) + np.square(np.diff(phi, axis=2)).sum((1, 2))
    rms = np.sqrt(sq / max(h * (w - 1) + w * (h - 1), 1))
    steps = [(c[-1] - c[0]) / (len(c) - 1) for c in (ys, xs) if len(c) > 1]
    step = COST_UNITS * float(np.mean(steps)) if steps else float(COST_UNITS)
    scale = POISSON_SCALE * step / np.where(rms > 0, rms, 1.0)
    return np.rint(phi * scale[:, None, None]).astype(np.int64).reshape(s.shape[0], h * w)


def _start(
    supply: np.ndarray, p: Pyramid, ys: tuple[float, ...], xs: tuple[float, ...]
) -> tuple[np.ndarray, ...]:
    """Keys and each row's index among them (−1: the pyramid's start) for :func:`_solve_rows`: noise-like
    rows (see :func:`_cancelling`; grids with a coarser level only) start from :func:`poisson_keys`, computed
    a chunk of rows at a time (its float64 temporaries stay near :data:`_KEY_CHUNK` cells)."""
    n, cells = supply.shape
    key_row = np.full(n, -1, np.int64)
    if p.cell_off.size <= 2:
        return np.zeros((0, cells), np.int64), key_row
    rows = np.flatnonzero(_cancelling(supply, p.agg[: p.cell_off[1]], int(p.cell_off[2] - p.cell_off[1])))
    key_row[rows] = np.arange(rows.size)
    keys = np.empty((rows.size, cells), np.int64)
    step = max(1, _KEY_CHUNK // cells)
    for i in range(0, rows.size, step):
        keys[i : i + step] = poisson_keys(supply[rows[i : i + step]], ys, xs)
    return keys, key_row


def _args(p: Pyramid) -> tuple[np.ndarray, ...]:
    return (
        p.cell_off,
        p.arc_off,
        p.src,
        p.dst,
        p.cost,
        p.length,
        p.agg,
        p.nbr,
        p.wt,
        p.ecost,
        p.runs,
        p.run_off,
        p.near_runs,
    )


def graph_transport(
    a: np.ndarray, b: np.ndarray, ys: tuple[float, ...], xs: tuple[float, ...], coarsest: int = COARSEST
) -> np.ndarray:
    """Exact transport cost on the grid graph between rows of ``a`` and ``b`` ((N, len(ys)·len(xs)), masses
    ≥ 0 with positive row sums, each row normalised to unit mass), in the units of the coordinates."""
    supply = integer_masses(a) - integer_masses(b)
    p = pyramid(ys, xs, coarsest)
    return _solve_rows(supply, _args(p), *_start(supply, p, ys, xs)) / MASS_UNITS


def pivot_count(
    a: np.ndarray, b: np.ndarray, ys: tuple[float, ...], xs: tuple[float, ...], coarsest: int = COARSEST
) -> int:
    """Network simplex pivots, all levels, for one pair (a diagnostic for the benchmark)."""
    supply = integer_masses(a[None]) - integer_masses(b[None])
    p = pyramid(ys, xs, coarsest)
    keys, key_row = _start(supply, p, ys, xs)
    return int(_solve_pyramid(supply[0], _args(p), keys[0] if key_row[0] >= 0 else keys[:0, 0])[1])
