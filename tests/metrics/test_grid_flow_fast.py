"""grid_flow's speed-ups keep the solver exact: its value equals POT's exact ``ot.emd2`` with the grid graph's
own shortest-path ground cost (scipy's csgraph, independent of the solver) on small grids, smooth and noisy
masses, several pyramid depths; the 8-neighbour pricing phase is a prefix of the arc list and is followed by
pricing every arc (a move along a long arc costs its own length, not an 8-neighbour detour)."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path

from verification.metrics import grid_flow as gf


def centres(n: int) -> tuple[float, ...]:
    return tuple(((np.arange(n) + 0.5) / n).tolist())


def graph_emd(a: np.ndarray, b: np.ndarray, ys: tuple[float, ...], xs: tuple[float, ...]) -> float:
    """ot.emd2 on the all-pairs shortest-path lengths of the grid graph."""
    s, t, ln = gf.grid_graph(ys, xs)
    n = len(ys) * len(xs)
    dist = shortest_path(coo_matrix((ln, (s, t)), shape=(n, n)).tocsr(), directed=True)
    return float(ot.emd2(a / a.sum(), b / b.sum(), dist))


def smooth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = np.zeros((h, w))
    for _ in range(2):
        cy, cx = rng.random(2)
        out += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)
    return out.ravel()


@pytest.mark.parametrize(("h", "w", "coarsest"), [(9, 11, 8), (16, 16, 4), (13, 10, 3)])
def test_exact_against_emd2_on_graph_costs(h: int, w: int, coarsest: int) -> None:
    rng = np.random.default_rng(h * 100 + w)
    ys, xs = centres(h), centres(w)
    pairs = [(rng.random(h * w), rng.random(h * w)) for _ in range(3)]
    pairs += [(smooth(rng, h, w), smooth(rng, h, w)) for _ in range(3)]
    a = np.stack([p for p, _ in pairs])
    b = np.stack([q for _, q in pairs])
    got = gf.graph_transport(a, b, ys, xs, coarsest)
    want = np.array([graph_emd(p, q, ys, xs) for p, q in pairs])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert all(gf.pivot_count(p, q, ys, xs, coarsest) > 0 for p, q in pairs)


def test_near_arcs_are_the_8_neighbour_prefix() -> None:
    ys, xs = centres(7), centres(5)
    s, t, _ = gf.grid_graph(ys, xs)
    near = gf.near_arcs(7, 5)
    di, dj = np.abs(t // 5 - s // 5), np.abs(t % 5 - s % 5)
    assert near == 2 * (7 * 4 + 6 * 5 + 2 * 6 * 4)  # (0, 1), (1, 0), (1, ±1), both directions
    assert (np.maximum(di[:near], dj[:near]) == 1).all()
    assert (np.maximum(di[near:], dj[near:]) >= 2).all()


@pytest.mark.parametrize(("di", "dj"), [(1, 2), (3, 2), (2, -3)])
def test_long_arc_moves_cost_their_length(di: int, dj: int) -> None:
    n = 8
    ys = xs = centres(n)
    a, b = np.zeros(n * n), np.zeros(n * n)
    a[2 * n + 3] = 1.0
    b[(2 + di) * n + 3 + dj] = 1.0
    got = gf.graph_transport(a[None], b[None], ys, xs)[0]
    assert got == pytest.approx(math.hypot(di, dj) / n, rel=1e-7)


@pytest.mark.parametrize(("h", "w"), [(7, 5), (1, 6), (4, 1), (2, 2), (32, 32)])
def test_runs_list_every_edge_once(h: int, w: int) -> None:
    """Pricing walks runs (first edge, count, first cell, offset): they must be exactly grid_graph's edges,
    in order, each edge k being arcs 2k (first → second cell) and 2k + 1, the 8-neighbour runs first."""
    s, t, _ = gf.grid_graph(centres(h), centres(w))
    runs, near_runs = gf.grid_runs(h, w)
    first = np.concatenate([np.arange(c0, c0 + c) for _, c, c0, _ in runs])
    second = np.concatenate([np.arange(c0, c0 + c) + o for _, c, c0, o in runs])
    np.testing.assert_array_equal(runs[:, 0], np.concatenate([[0], np.cumsum(runs[:-1, 1])]))
    np.testing.assert_array_equal(first, s[0::2])
    np.testing.assert_array_equal(second, t[0::2])
    np.testing.assert_array_equal(s[1::2], t[0::2])
    np.testing.assert_array_equal(t[1::2], s[0::2])
    assert 2 * runs[:near_runs, 1].sum() == gf.near_arcs(h, w)


def test_noise_like_rows_start_from_poisson_keys() -> None:
    """Noise-like rows (2×2 pooling cancels their supply) start level 0 from keys solving the grid Poisson
    equation Δφ = supply (reflecting borders; sources at minima, so the start's flows run uphill to the
    sinks); smooth rows keep the pyramid. Either way the value is the graph optimum."""
    rng = np.random.default_rng(5)
    h, w = 12, 10
    ys, xs = centres(h), centres(w)
    a = np.stack([rng.random(h * w), smooth(rng, h, w)])
    b = np.stack([rng.random(h * w), smooth(rng, h, w)])
    supply = gf.integer_masses(a) - gf.integer_masses(b)
    keys, key_row = gf._start(supply, gf.pyramid(ys, xs), ys, xs)
    assert key_row.tolist() == [0, -1]
    phi = np.pad(keys[0].reshape(h, w).astype(np.float64), 1, mode="edge")  # reflecting border: zero flux
    lap = phi[:-2, 1:-1] + phi[2:, 1:-1] + phi[1:-1, :-2] + phi[1:-1, 2:] - 4 * phi[1:-1, 1:-1]
    ratio = lap.ravel() / supply[0]
    big = np.abs(supply[0]) > 0.2 * np.abs(supply[0]).max()  # away from rounding of tiny supplies
    assert (ratio[big] > 0).all()
    np.testing.assert_allclose(ratio[big], np.median(ratio[big]), rtol=1e-3)
    got = gf.graph_transport(a, b, ys, xs)
    np.testing.assert_allclose(got, [graph_emd(p, q, ys, xs) for p, q in zip(a, b)], rtol=1e-6)
