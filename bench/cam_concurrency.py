"""What the backend's per-model lock costs: T threads × R Grad-CAM calls on ONE shared model (the backend
serialises them, :mod:`verification.cam.concurrency`) against the same calls on T private copies of the model
(nothing to wait for), and against the same calls in sequence.

Run: ``.venv/bin/python -m bench.cam_concurrency [--threads 4] [--rounds 6] [--batch 4] [--repeats 3]``

Demo sound model (MobileNetV3-small, 1×224²). Prints the median wall time of each arrangement over the repeats.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python bench/x.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from verification.cam import compute_cams
from verification.io.models import load_model

SOUND = Path(__file__).resolve().parents[1] / "assets" / "demo" / "models" / "sound.safetensors"


def _threaded(models: Sequence[nn.Module], x: torch.Tensor, rounds: int) -> float:
    def work(model: nn.Module) -> None:
        for _ in range(rounds):
            compute_cams(model, x, methods=["gradcam"])

    threads = [threading.Thread(target=work, args=(m,)) for m in models]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    model = load_model(SOUND).module
    x = torch.randn(args.batch, 1, 224, 224, generator=torch.Generator().manual_seed(0))
    copies = [copy.deepcopy(model) for _ in range(args.threads)]
    for m in [model, *copies]:  # warm-up: layer scan, kernels
        compute_cams(m, x)
    times: dict[str, list[float]] = {"one shared model (locked)": [], "private copies": [], "in sequence": []}
    for _ in range(args.repeats):
        times["one shared model (locked)"].append(_threaded([model] * args.threads, x, args.rounds))
        times["private copies"].append(_threaded(copies, x, args.rounds))
        t0 = time.perf_counter()
        for _ in range(args.threads * args.rounds):
            compute_cams(model, x, methods=["gradcam"])
        times["in sequence"].append(time.perf_counter() - t0)
    calls = args.threads * args.rounds
    print(f"{calls} Grad-CAM calls, batch {args.batch}, torch intra-op threads {torch.get_num_threads()}")
    for name, ts in times.items():
        print(
            f"  {name:28s} median {statistics.median(ts):6.2f} s   runs {', '.join(f'{t:.2f}' for t in ts)}"
        )


if __name__ == "__main__":
    main()
