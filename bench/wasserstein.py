"""Benchmark: the registered spatial ``wasserstein`` (exact transport on the 32-neighbour grid graph) against
POT's exact ``ot.emd2`` (Euclidean ground cost, coordinates in [0, 1]) in the same run.

Run: ``.venv/bin/python bench/wasserstein.py [--pairs 20] [--batch 1000] [--grid 32]``

* Error: per family (attention-like 224² maps area-pooled to the grid, i.i.d. noise, two blobs against one)
  the median and 95th percentile of |ours − emd2| / emd2, the signed mean and the worst, on the metric's grid;
  the median number of network simplex pivots a pair (every level solved); the median signed
  error of the unregistered ``sliced_wasserstein(rescale=True)``.
* Speed: time a pair, ours (``wasserstein`` on the family's pairs as one batch) and ``ot.emd2`` (one call a
  pair, cost matrix built once, untimed), both single-threaded, in CPU seconds of the calling thread (robust
  to a busy machine) and in wall seconds; the ratio emd2 / ours.
* Batch: 1,000 attention-like pairs at 224² through ``compute_metrics(..., ["wasserstein"], size=None)``
  (all torch threads), wall time.
* Grid: the pooled grid against a finer one (the same solver at 64², its own 1.31 % bound) on attention-like
  pairs: what pooling to the grid changes.
* Compile: numba's first call in a fresh process with an empty cache (``NUMBA_CACHE_DIR`` a new folder), and
  the first call of a second process loading that cache.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python bench/x.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import ot
import torch

from bench.metrics import attention_like, euclidean_cost
from verification.metrics import compute_metrics
from verification.metrics import grid_flow as gf
from verification.metrics.wasserstein import cell_centres, pool_mass, sliced_wasserstein, wasserstein

ROOT = Path(__file__).resolve().parents[1]


def families(k: int, g: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:g, 0:g] / (g - 1)

    def blob(sd: float) -> np.ndarray:
        cx, cy = rng.random(2)
        return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sd * sd))

    return {
        "attention-like (224² pooled)": (
            pool_mass(torch.from_numpy(attention_like(k, 224, 2)).double(), g).numpy(),
            pool_mass(torch.from_numpy(attention_like(k, 224, 3)).double(), g).numpy(),
        ),
        "i.i.d. noise": (rng.random((k, g, g)), rng.random((k, g, g))),
        "two blobs vs one": (
            np.stack([blob(0.1) + blob(0.1) for _ in range(k)]),
            np.stack([blob(0.15) for _ in range(k)]),
        ),
    }


def clocks() -> tuple[float, float]:
    return time.thread_time(), time.perf_counter()


def since(t: tuple[float, float]) -> tuple[float, float]:
    return time.thread_time() - t[0], time.perf_counter() - t[1]


def error_and_speed(k: int, g: int) -> None:
    ax = cell_centres(g, g)
    axis = tuple(ax.tolist())
    cost = euclidean_cost(ax, ax)
    print(
        f"Error and speed on the {g}×{g} grid, {k} pairs per family (ours: exact on the 32-neighbour graph):"
    )
    ratios = []
    for fam, (x, y) in families(k, g).items():
        t = clocks()
        ex = np.array([ot.emd2(p.ravel() / p.sum(), q.ravel() / q.sum(), cost) for p, q in zip(x, y)])
        cpu_e, wall_e = since(t)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        wasserstein(xt[:1], yt[:1], grid=g)  # compiled / loaded before timing
        t = clocks()
        got = wasserstein(xt, yt, grid=g).values
        cpu_o, wall_o = since(t)
        rel = (got - ex) / ex
        ratios.append(cpu_e / cpu_o)
        pivots = np.median([gf.pivot_count(p.ravel(), q.ravel(), axis, axis) for p, q in zip(x, y)])
        sliced = sliced_wasserstein(xt, yt, grid=g, rescale=True).values
        print(
            f"  {fam:29s} |rel. error| median {np.median(np.abs(rel)):.4f} p95 "
            f"{np.percentile(np.abs(rel), 95):.4f} worst {np.abs(rel).max():.4f} (signed mean {rel.mean():+.4f});"
            f" pivots a pair, median {pivots:.0f}"
        )
        print(
            f"  {'':29s} sliced_wasserstein(rescale=True), not registered: signed rel. error median "
            f"{np.median((sliced - ex) / ex):+.3f}"
        )
        print(
            f"  {'':29s} a pair: ours {1e3 * cpu_o / k:.2f} ms CPU ({1e3 * wall_o / k:.2f} wall), emd2 "
            f"{1e3 * cpu_e / k:.1f} ms CPU ({1e3 * wall_e / k:.1f} wall): {cpu_e / cpu_o:.0f}× by CPU time, "
            f"{wall_e / wall_o:.0f}× by wall time"
        )
    print(f"  speed ratio (CPU) over the three families: min {min(ratios):.0f}×")


def batch(n: int) -> None:
    maps = attention_like(n, 224, 4)
    refs = attention_like(n, 224, 5)
    compute_metrics(maps[:2], refs[:2], ["wasserstein"], size=None)
    t0, c0 = time.perf_counter(), time.process_time()
    out = compute_metrics(maps, refs, ["wasserstein"], size=None)["wasserstein"]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"\nBatch: {n} attention-like pairs at 224² through compute_metrics(..., ['wasserstein'], size=None), "
        f"{torch.get_num_threads()} torch threads: {wall:.2f} s wall ({1e3 * wall / n:.2f} ms a pair), "
        f"{cpu:.2f} s CPU (all threads); "
        f"values {np.nanmin(out):.4f}–{np.nanmax(out):.4f}, {int(np.isnan(out).sum())} NaN"
    )


def grid_effect(k: int, g: int, fine: int = 64) -> None:
    maps = torch.from_numpy(attention_like(k, 224, 6)).double()
    refs = torch.from_numpy(attention_like(k, 224, 7)).double()
    t = clocks()
    at_fine = wasserstein(maps, refs, grid=fine).values
    cpu_f, _ = since(t)
    coarse = wasserstein(maps, refs, grid=g).values
    rel = (coarse - at_fine) / at_fine
    print(
        f"\nGrid: attention-like 224² pairs ({k}), pooled to {g}² vs {fine}² (same solver): |rel. difference| "
        f"median {np.median(np.abs(rel)):.4f} p95 {np.percentile(np.abs(rel), 95):.4f} "
        f"(signed mean {rel.mean():+.4f}); {fine}² costs {1e3 * cpu_f / k:.1f} ms CPU a pair"
    )


def compile_times() -> None:
    code = (
        "import time, numpy as np, torch; t0 = time.perf_counter(); "
        "from verification.metrics.wasserstein import wasserstein; "
        "wasserstein(torch.rand(1, 32, 32), torch.rand(1, 32, 32)); "
        "print(f'{time.perf_counter() - t0:.2f}')"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        cold = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        warm = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
    print(
        f"\nCompile: first call in a fresh process, empty numba cache {cold} s; "
        f"next process, cache on disk {warm} s (import of the solver + first pair)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=20, help="pairs per family for the exact comparison")
    ap.add_argument("--batch", type=int, default=1000, help="attention-like pairs for the batch timing")
    ap.add_argument("--grid", type=int, default=32, help="the metric's grid (its default is 32)")
    ap.add_argument("--no-compile", action="store_true", help="skip the cold-compile measurement")
    args = ap.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")
    print(
        f"graph bound (square grid): {100 * gf.grid_bound(np.arange(2.0), np.arange(2.0)):.2f} % above Euclidean"
    )
    error_and_speed(args.pairs, args.grid)
    batch(args.batch)
    grid_effect(min(args.pairs, 10), args.grid)
    if not args.no_compile:
        compile_times()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")


if __name__ == "__main__":
    main()
