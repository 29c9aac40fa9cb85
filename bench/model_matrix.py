"""The model matrix's pass table: family × format × capability (tests/models/matrix.py), printed and saved.

Run: ``.venv/bin/python bench/model_matrix.py [--ci] [--families resnet18,vgg11_bn] [--formats pt2_static]``
(or ``.venv/bin/python -m bench.model_matrix``). Default: every family in every format (about 10 minutes on
a loaded 2-core machine); ``--ci`` only the cells CI runs. Writes test-artifacts/model-matrix.md (the table, the
failures with their error, seconds per cell, the load average before and after). Exit status 1 when a cell
fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python bench/x.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from tests.models import matrix

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ci", action="store_true", help="only the cells CI runs")
    ap.add_argument("--families", help="comma-separated family names (default: all)")
    ap.add_argument("--formats", help=f"comma-separated formats (default: {','.join(matrix.FORMATS)})")
    ap.add_argument("--out", default=str(ROOT / "test-artifacts" / "model-matrix.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    families = args.families.split(",") if args.families else list(matrix.FAMILIES)
    formats = args.formats.split(",") if args.formats else list(matrix.FORMATS)
    unknown = [f for f in families if f not in matrix.FAMILIES] + [
        f for f in formats if f not in matrix.FORMATS
    ]
    if unknown:
        ap.error(f"unknown families/formats: {unknown}")
    load_before = os.getloadavg()
    started = time.perf_counter()
    cells: list[matrix.Cell] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in families:
            family = matrix.FAMILIES[name]
            wanted = [f for f in formats if not args.ci or (name, f) in matrix.CI_CELLS]
            if not wanted:
                continue
            module = matrix.build(family)
            for fmt in wanted:
                t0 = time.perf_counter()
                path = matrix.write(family, fmt, module, Path(tmp))
                cell = matrix.run_cell(family, fmt, path, fixed_expected=matrix.expected_fixed(fmt))
                cells.append(cell)
                status = "pass" if cell.ok else "FAIL"
                print(
                    f"{name:22s} {fmt:12s} {status}  ({time.perf_counter() - t0:.1f} s with writing)",
                    flush=True,
                )
                _save(args, cells, started, load_before, final=False)  # a partial table survives an interrupt
    text = _save(args, cells, started, load_before, final=True)
    print()
    print(text)
    print(f"saved {args.out}")
    return 0 if all(c.ok for c in cells) else 1


def _save(
    args: argparse.Namespace,
    cells: list[matrix.Cell],
    started: float,
    load_before: tuple[float, float, float],
    *,
    final: bool,
) -> str:
    elapsed = time.perf_counter() - started
    partial = "" if final else f" (PARTIAL: {len(cells)} cells so far)"
    text = (
        f"# Model matrix{partial}\n\n"
        f"Command: `.venv/bin/python bench/model_matrix.py{' --ci' if args.ci else ''}`; "
        f"torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); {elapsed:.0f} s in all (exports included); load average "
        f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} now (2 cores, shared).\n\n"
        f"Inputs: a batch of {matrix.N_IMAGES} random images with one target per image (64×64; the "
        "torchxrayvision DenseNet at 224×224); random weights, nothing downloaded. pt2_static: "
        "`torch.export.export(model, (x,))` with a batch of 1; pt2_dynamic: `Dim('batch', min=1, max=64)`. "
        "Seconds: the capabilities of the cell (not the export).\n\n" + matrix.table(cells)
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    raise SystemExit(main())
