"""Benchmark: the seven similarity metrics on 1,000 map pairs at 224×224 on CPU, against per-pair peer loops.

Run: ``.venv/bin/python -m bench.metrics [--pairs 1000] [--loop-pairs 100] [--emd-pairs 12] [--threads 2]``

* Batched: ``compute_metrics`` on (1000, 224, 224) float32 maps, timed end to end (the resize to the default
  64×64 comparison grid included) and per metric; then the same at the native 224×224 grid (``size=None``).
* Peers: a per-pair Python loop over scipy / scikit-image / POT on the SAME prepared grid, giving the same
  numbers: ``scipy.spatial.distance.jaccard`` / ``dice`` (1 − value), ``skimage.metrics.structural_similarity``,
  ``scipy.spatial.distance.cosine``, ``scipy.stats.pearsonr``, ``scipy.stats.entropy`` and, for the spatial
  Wasserstein, POT's exact ``ot.emd2`` on the 32×32 grid the sliced distance sees. The loops run on a subset
  (``--loop-pairs``; ``--emd-pairs`` for the exact solver) and are extrapolated linearly to all pairs — stated in
  the output.
* Spatial Wasserstein error: sliced vs exact on the benchmark pairs (32×32 pooled grid) and on 16×16 blob pairs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python bench/x.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import ot
import torch
import torch.nn.functional as F
from scipy.spatial import distance
from scipy.stats import entropy, pearsonr
from skimage.metrics import structural_similarity

from verification.metrics import DEFAULT_METRICS, DEFAULT_SIZE, METRICS, compute_metrics, prepare
from verification.metrics.functional import binarize, shared_work
from verification.metrics.registry import _single_threaded_worker, chunk_rows
from verification.metrics.wasserstein import DEFAULT_GRID, pool_mass


def attention_like(n: int, size: int, seed: int) -> np.ndarray:
    """Grad-CAM-like maps: ReLU of a random 7×7 layer map, bilinearly upsampled to size×size, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.relu(torch.randn(n, 1, 7, 7, generator=g) + 0.3)
    up = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).squeeze(1)
    flat = up.reshape(n, -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).reshape(n, size, size).numpy()


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def exact_w1(a: np.ndarray, b: np.ndarray, pts: np.ndarray) -> float:
    return float(ot.emd2(a.ravel() / a.sum(), b.ravel() / b.sum(), ot.dist(pts, pts, metric="euclidean")))


def grid_points(h: int, w: int, in_h: int, in_w: int) -> np.ndarray:
    from verification.metrics.wasserstein import _cell_centres

    yy, xx = np.meshgrid(_cell_centres(in_h, h), _cell_centres(in_w, w), indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def peer_loops(
    a: np.ndarray, b: np.ndarray, fa: np.ndarray, fb: np.ndarray
) -> dict[str, Callable[[int], float]]:
    """Per-pair peers; each returns the loop time for the first k pairs."""

    def loop(body: Callable[[int], object]) -> Callable[[int], float]:
        def run(k: int) -> float:
            t0 = time.perf_counter()
            for i in range(k):
                body(i)
            return time.perf_counter() - t0

        return run

    ssim_kw = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 1.0}
    return {
        "iou": loop(lambda i: 1 - distance.jaccard(a[i].ravel() > 0.5, b[i].ravel() > 0.5)),
        "dice": loop(lambda i: 1 - distance.dice(a[i].ravel() > 0.5, b[i].ravel() > 0.5)),
        "ssim": loop(lambda i: structural_similarity(a[i], b[i], **ssim_kw)),
        "cosine": loop(lambda i: 1 - distance.cosine(a[i].ravel(), b[i].ravel())),
        "pearson": loop(lambda i: pearsonr(a[i].ravel(), b[i].ravel()).statistic),
        "kl": loop(lambda i: entropy(b[i].ravel() + 1e-8, a[i].ravel() + 1e-8)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--loop-pairs", type=int, default=100)
    ap.add_argument("--emd-pairs", type=int, default=20, help="exact solves per Wasserstein family (32×32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    ap.add_argument("--no-default-grid", action="store_true", help="skip the 64×64-grid section")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, s = args.pairs, args.size
    maps, refs = attention_like(n, s, 0), attention_like(n, s, 1)
    print(f"{n} pairs at {s}×{s}, float32, torch threads={args.threads}, load average {os.getloadavg()}")

    # Warm caches (projection plans) once, as a long-running process would have them.
    compute_metrics(maps[:2], refs[:2])
    compute_metrics(maps[:2], refs[:2], size=None)

    sections = [(f"native {s}×{s}", None)]
    if not args.no_default_grid:
        sections.insert(0, (f"{DEFAULT_SIZE[0]}×{DEFAULT_SIZE[1]} grid", DEFAULT_SIZE))
    for label, size in sections:
        total = timed(lambda size=size: compute_metrics(maps, refs, size=size), repeat=args.repeat)
        print(
            f"\nall seven, {label}: {total:.3f} s for {n} pairs ({1e3 * total / n:.3f} ms/pair), end to end"
        )
        with torch.inference_mode():
            a, b = prepare(maps, refs, size)
        na, nb = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
        peers = peer_loops(na, nb, na.reshape(n, -1), nb.reshape(n, -1))
        k = min(args.loop_pairs, n)
        print(f"  {'metric':12s} {'ours (s)':>9s} {'peer (s)':>9s} {'peer/ours':>9s}   peer, agreement")
        for name in DEFAULT_METRICS:
            # ours: the metric's own calls in compute_metrics' chunks (preparation excluded, as for the peers)
            spec, kw = METRICS[name], ({"threshold": 0.5} if METRICS[name].uses_threshold else {})
            with ThreadPoolExecutor(
                1, initializer=_single_threaded_worker
            ) as one:  # as compute_metrics' workers
                t = min(
                    one.submit(time_in_chunks, spec.fn, maps, refs, size, kw).result()
                    for _ in range(args.repeat)
                )
            ours = compute_metrics(maps[:20], refs[:20], [name], size=size)[name]
            if name == "wasserstein":
                ke = min(4, n)
                pa = pool_mass(a[:ke].to(torch.float64), DEFAULT_GRID).numpy()
                pb = pool_mass(b[:ke].to(torch.float64), DEFAULT_GRID).numpy()
                pts = grid_points(pa.shape[1], pa.shape[2], a.shape[1], a.shape[2])
                t0 = time.perf_counter()
                for x, y in zip(pa, pb):
                    exact_w1(x, y, pts)
                t_loop = (time.perf_counter() - t0) * n / ke
                note = (
                    f"POT exact emd2 on the {pa.shape[1]}×{pa.shape[2]} pooled grid, {ke} pairs extrapolated"
                )
            else:
                t_loop = peers[name](k) * n / k
                ref_vals = [peers_value(name, na[i], nb[i]) for i in range(20)]
                agree = np.nanmax(np.abs(ours - np.array(ref_vals)))
                note = f"loop on {k} pairs extrapolated; max |ours − peer| on 20 pairs {agree:.1e}"
            print(f"  {name:12s} {t:9.3f} {t_loop:9.2f} {t_loop / t:8.1f}×   ({note})")

    wasserstein_section(args.emd_pairs)


def wasserstein_section(k: int) -> None:
    """Spatial Wasserstein (the registered metric) against POT's exact emd2 on the grid it works on (32×32,
    coordinates in [0, 1], Euclidean ground cost), three families, relative error and time per pair."""
    g = DEFAULT_GRID
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:g, 0:g] / (g - 1)

    def blob(cx: float, cy: float, sd: float) -> np.ndarray:
        return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sd * sd))

    att_a = pool_mass(torch.from_numpy(attention_like(k, 224, 2)).double(), g).numpy()
    att_b = pool_mass(torch.from_numpy(attention_like(k, 224, 3)).double(), g).numpy()
    families = {
        "attention-like (224² pooled)": (att_a, att_b),
        "i.i.d. noise": (rng.random((k, g, g)), rng.random((k, g, g))),
        "two blobs vs one": (
            np.stack([blob(*rng.random(2), 0.1) + blob(*rng.random(2), 0.1) for _ in range(k)]),
            np.stack([blob(*rng.random(2), 0.15) for _ in range(k)]),
        ),
    }
    pts = grid_points(g, g, g, g)
    print(f"\nSpatial Wasserstein (registered metric) vs POT exact emd2 on {g}×{g}, {k} pairs per family:")
    for fam, (x, y) in families.items():
        t0 = time.perf_counter()
        ex = np.array([exact_w1(p, q, pts) for p, q in zip(x, y)])
        t_exact = (time.perf_counter() - t0) / k
        got = compute_metrics(x, y, ["wasserstein"], size=None, normalize=False)["wasserstein"]
        t_ours = (
            timed(lambda x=x, y=y: compute_metrics(x, y, ["wasserstein"], size=None, normalize=False)) / k
        )
        rel = np.abs(got - ex) / ex
        print(
            f"  {fam:30s} |rel. error| median {np.median(rel):.4f} p95 {np.percentile(rel, 95):.4f} "
            f"(signed mean {np.mean((got - ex) / ex):+.4f})  time/pair ours {1e3 * t_ours:.3f} ms, "
            f"emd2 {1e3 * t_exact:.1f} ms ({t_exact / t_ours:.0f}×)"
        )


def time_in_chunks(
    fn: Callable[..., object],
    maps: np.ndarray,
    refs: np.ndarray,
    size: tuple[int, int] | None,
    kw: dict[str, object],
) -> float:
    """Seconds one metric spends inside compute_metrics: the same chunks, each prepared first (untimed, as the
    peers get prepared maps) with its shared work (row checks, counts), then the metric's call timed."""
    grid = size or (int(maps.shape[-2]), int(maps.shape[-1]))
    rows = chunk_rows(grid, 4)
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(maps), rows):
            with shared_work():
                pa, pb = prepare(maps[s : s + rows], refs[s : s + rows], size)
                t0 = time.perf_counter()
                fn(pa, pb, **kw)
                total += time.perf_counter() - t0
    return total


def peers_value(name: str, x: np.ndarray, y: np.ndarray) -> float:
    if name in ("iou", "dice"):
        bx = binarize(torch.from_numpy(x)[None], 0.5).numpy().ravel()
        by = binarize(torch.from_numpy(y)[None], 0.5).numpy().ravel()
        if not bx.any() and not by.any():
            return 1.0
        return 1 - (distance.jaccard(bx, by) if name == "iou" else distance.dice(bx, by))
    if name == "ssim":
        return float(
            structural_similarity(
                x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
            )
        )
    if name == "cosine":
        return 1 - distance.cosine(x.ravel(), y.ravel())
    if name == "pearson":
        return float(pearsonr(x.ravel(), y.ravel()).statistic)
    return float(entropy(y.ravel() + 1e-8, x.ravel() + 1e-8))


if __name__ == "__main__":
    main()
