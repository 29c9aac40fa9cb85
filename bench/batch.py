"""Throughput of ``python -m verification verify`` against the model's own forward+backward, and what the
verdict's counterfactual lines cost.

    .venv/bin/python -m bench.batch [--model PATH] [--n 128] [--batch-size 16] [--workers 1] [--threads 0]

The demo's test split (60 images) is replicated to ``--n`` files in a temporary folder, each copy a distinct
PNG (flipped / shifted / re-exposed), so decoding is real work and nothing is cached. The bundle is the demo's
sound reference bundle (with its calibration); labels are the class subfolders (``--labelled``). Then, in this
one process and on the same torch thread count, alternately ``--repeats`` times (best of each is compared: the
machine is shared):

* baseline: the model's own forward + backward (``loss.backward()`` of the predicted-class logits through all
  parameters) on preprocessed batches of ``--batch-size`` at the model's input size;
* verify, no counterfactuals: the whole ``verify`` command with ``--no-counterfactuals`` (decoding, the CAM's
  forward + backward, the E0 gate's early-feature forward, E1, E5, the verdict, the JSON written);
* verify: the default command, which adds the counterfactual lines — E3's two neutralised forwards and E4's
  inpainted forward per annotated image (with the anatomy found automatically per image) — and E6's
  deletion/insertion (4 × (steps + 1) forwards per image) when the bundle's calibration covers E6.

Prints images/s for each and the ratios. Run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python bench/x.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from PIL import Image


def _demo_model() -> Path:
    from verification.demo import demo_checkpoints, demo_model_path

    try:
        path = demo_model_path("sound")
        if path.is_file():
            return path
    except Exception as exc:  # the demo's models may not be built yet: fall back to its checkpoint series
        print(
            f"note: demo 'sound' model unavailable ({exc}); using the last demo checkpoint", file=sys.stderr
        )
    checkpoints = [p for p in demo_checkpoints() if p.is_file()]
    if not checkpoints:
        raise SystemExit(
            "no demo model or checkpoint found; build the demo (.venv/bin/python -m assets.make_demo)"
        )
    return checkpoints[-1]


def _replicate(sources: list[Path], n: int, out: Path) -> list[Path]:
    """``n`` distinct PNGs from ``sources``: copy k of source i is flipped (k odd), rolled and re-exposed."""
    out.mkdir(parents=True)
    paths = []
    for j in range(n):
        src = sources[j % len(sources)]
        k = j // len(sources)
        with Image.open(src) as im:
            arr = np.asarray(im).astype(np.float32)
        if k % 2:
            arr = arr[:, ::-1]
        arr = np.roll(arr, shift=(3 * k) % 17, axis=0)
        arr = np.clip(arr * (1.0 + 0.02 * (k % 5)), 0, 255 if arr.max() <= 255 else 65535)
        dtype = np.uint8 if arr.max() <= 255 else np.uint16
        path = out / f"{j:04d}_{src.stem}.png"
        Image.fromarray(arr.astype(dtype)).save(path)
        paths.append(path)
    return paths


def forward_backward_rate(model_path: Path, images: list[Path], batch_size: int, n: int) -> float:
    """Images/s of the model's own forward + backward on preprocessed batches (no I/O)."""
    from verification.io.images import load_image, to_tensor
    from verification.io.models import load_model

    model = load_model(model_path)
    module = model.module.eval()
    x = to_tensor([load_image(p) for p in images[:batch_size]], model)
    n_batches = max(1, n // batch_size)

    def step() -> None:
        module.zero_grad(set_to_none=True)
        out = module(x)
        out.gather(1, out.argmax(1, keepdim=True)).sum().backward()

    for _ in range(2):  # warm-up: allocator, oneDNN kernels
        step()
    start = time.perf_counter()
    for _ in range(n_batches):
        step()
    return n_batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="model file (default: the demo's sound model)")
    parser.add_argument("--n", type=int, default=128, help="images verified (128)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader decoding processes for verify (1)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating measurements of each (2)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from verification import cli
    from verification.demo import demo_images, demo_reference_bundle

    model_path = args.model or _demo_model()
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        root = Path(tmp)
        items = demo_images("test")
        images = _replicate([item.path for item in items], args.n, root / "images")
        labelled = root / "labelled"
        for k, path in enumerate(images):  # class subfolders for --labelled
            dest = labelled / str(items[k % len(items)].label) / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)
        bundle = demo_reference_bundle("sound")

        def argv(*extra: str) -> list[str]:
            return [
                "verify", str(model_path), str(labelled), "--labelled", "--bundle", str(bundle), "--json",
                str(root / "verify.json"), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                "--quiet", *extra,
            ]  # fmt: skip

        runs: dict[str, list[float]] = {
            "forward+backward": [],
            "verify, no counterfactuals": [],
            "verify": [],
        }
        verdict = ""
        for _ in range(args.repeats):
            runs["forward+backward"].append(
                forward_backward_rate(model_path, images, args.batch_size, args.n)
            )
            for name, extra in (("verify, no counterfactuals", ("--no-counterfactuals",)), ("verify", ())):
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()) as out:
                    code = cli.main(argv(*extra))
                if code not in (0, 3, 4):
                    raise SystemExit(f"verify failed (exit {code})")
                runs[name].append(args.n / (time.perf_counter() - start))
                verdict = out.getvalue().splitlines()[0]

    best = {name: max(v) for name, v in runs.items()}
    print(f"model            {model_path}")
    print(f"images           {args.n} at batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
          f"{args.workers} decoding worker(s), best of {args.repeats}")  # fmt: skip
    for name, rates in runs.items():
        print(f"{name:28s} {best[name]:7.2f} img/s  (runs: {', '.join(f'{v:.2f}' for v in rates)})")
    base = best["forward+backward"]
    print(
        f"ratio verify, no counterfactuals / forward+backward  {best['verify, no counterfactuals'] / base:6.2f}"
    )
    print(f"ratio verify / forward+backward                      {best['verify'] / base:6.2f}")
    print(
        f"cost of the counterfactual lines: verify takes {best['verify, no counterfactuals'] / best['verify']:.2f}"
        " × the time of verify without them"
    )
    print(f"verdict          {verdict}")


if __name__ == "__main__":
    main()
