"""C-Score benchmark: a 500-map gold list at 224×224 (124,750 pairs), vectorised vs a naive pairwise loop.

    .venv/bin/python bench/consistency.py [--n 500] [--size 224] [--threads 2] [--naive-pairs 300] [--no-compiled]

The naive loop (one numpy min/max/sum per pair, float64, as a reader would write it from METHODS.md §4) is
timed on the first ``--naive-pairs`` pairs of the same gold list in the same run and extrapolated linearly to
all pairs — the script says so in its output. Wall time and process CPU time are both printed: on a shared
machine the wall time includes waiting for a core. The torch.compile backend's one-off compile is timed
separately (``--no-compiled`` skips that backend).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from verification.consistency import c_score, prepare_maps


def naive_pairs(x: np.ndarray, p: np.ndarray, n_pairs: int, eps: float = 1e-8) -> tuple[float, float, int]:
    """Σ w·IoU and Σ w over the first ``n_pairs`` pairs (i < j, row-major) with a plain Python loop."""
    num = den = 0.0
    done = 0
    n = x.shape[0]
    for i in range(n):
        a = x[i].astype(np.float64)
        for j in range(i + 1, n):
            b = x[j].astype(np.float64)
            iou = np.minimum(a, b).sum() / (np.maximum(a, b).sum() + eps)
            num += p[i] * p[j] * iou
            den += p[i] * p[j]
            done += 1
            if done == n_pairs:
                return num, den, done
    return num, den, done


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--naive-pairs", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-compiled", action="store_true", help="skip the torch.compile backend")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    # CAM-like maps: a few Gaussian blobs per map at random places, plus low noise
    yy, xx = np.mgrid[0 : args.size, 0 : args.size] / args.size
    maps = np.empty((args.n, args.size, args.size), np.float32)
    for k in range(args.n):
        m = 0.05 * rng.random((args.size, args.size))
        for _ in range(3):
            cy, cx, s = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
            m += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        maps[k] = m
    p = rng.uniform(0.9, 1.0, args.n)
    total_pairs = args.n * (args.n - 1) // 2

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load avg {load}")
    print(f"torch {torch.__version__}, threads {args.threads}")
    print(
        f"gold list: {args.n} maps of {args.size}x{args.size}, {total_pairs:,} pairs, γ = 2, τ n/a (all kept)"
    )

    results = {}
    backends = ["scipy"] + ([] if args.no_compiled else ["compiled"])
    for backend in backends:
        if backend == "compiled":
            from verification.consistency import compiled_available

            ok, cw, _ = timed(compiled_available)
            print(f"  compiled backend: compile/load of the kernel {cw:.2f} s wall (once per process)")
            if not ok:
                print("  compiled backend unavailable here (no working C++ compiler); skipped")
                continue
        runs = [timed(c_score, maps, p, backend=backend, n_threads=args.threads) for _ in range(args.repeats)]
        best = min(runs, key=lambda r: r[1])
        results[backend] = (best[1], best[2])
        walls = ", ".join(f"{r[1]:.2f}" for r in runs)
        print(
            f"  vectorised [{backend}]: C-Score {best[0].score:.6f}; wall {walls} s (best {best[1]:.2f} s, "
            f"CPU {best[2]:.2f} s)  target < 2 s: {'met' if best[1] < 2 else 'NOT met'}"
        )

    x = prepare_maps(maps)
    (_, _, done), nw, nc = timed(naive_pairs, x, p, args.naive_pairs)
    per_pair = nw / done
    naive_total = per_pair * total_pairs
    print(
        f"  naive loop: {done} pairs in {nw:.2f} s wall ({per_pair * 1e3:.2f} ms/pair, CPU {nc:.2f} s) → "
        f"extrapolated to {total_pairs:,} pairs: {naive_total:.0f} s  (measured on a subset, extrapolated)"
    )
    # correctness on the subset: the vectorised per-pair values give the same partial mean
    k = 12
    fast_sub = c_score(maps[:k], p[:k]).score
    ref_num, ref_den, _ = naive_pairs(x[:k], p[:k], k * (k - 1) // 2)
    print(f"  check on {k} maps: vectorised {fast_sub:.9f} vs naive {ref_num / ref_den:.9f}")
    naive_cpu = nc / done * total_pairs
    for backend, (wall, cpu) in results.items():
        print(
            f"  speedup over the naive loop [{backend}]: {naive_total / wall:.1f}x wall, "
            f"{naive_cpu / cpu:.1f}x CPU time (naive CPU extrapolated {naive_cpu:.1f} s; same run)"
        )


if __name__ == "__main__":
    main()
