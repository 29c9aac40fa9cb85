"""The demo checkpoint table: AUC, accuracy and C-Score per method and class over the demo's checkpoints.

    .venv/bin/python bench/checkpoint_table.py [--methods gradcam hirescam layercam] [--out artifacts/checkpoint_table.csv]

Runs :func:`verification.consistency.track_checkpoints` on ``verification.demo.demo_checkpoints()`` with the
demo ``test`` split, prints the wide table and the early warnings, and writes the long table as CSV (and the
record as JSON beside it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from verification.consistency import track_checkpoints
from verification.demo import demo_checkpoints, demo_images
from verification.io.models import load_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["gradcam", "gradcampp", "hirescam", "layercam"])
    ap.add_argument("--split", default="test")
    ap.add_argument("--tau", type=float, default=0.9)
    ap.add_argument("--drop", type=float, default=0.1)
    ap.add_argument("--auc-tolerance", type=float, default=0.02)
    ap.add_argument("--out", type=Path, default=Path("artifacts/checkpoint_table.csv"))
    args = ap.parse_args()
    torch.manual_seed(0)

    paths = demo_checkpoints()
    if not paths:
        print("the demo has no checkpoint series yet (assets/demo/manifest.json lists none)", file=sys.stderr)
        return 1
    models = [load_model(p) for p in paths]
    items = demo_images(args.split)
    names = models[0].class_names
    unknown = sorted({it.label for it in items} - set(names))
    if unknown:
        print(f"labels {unknown} are not classes of the checkpoints {list(names)}", file=sys.stderr)
        return 1
    labels = [names.index(it.label) for it in items]
    t0 = time.perf_counter()
    series = track_checkpoints(
        models,
        [it.path for it in items],
        labels,
        methods=args.methods,
        names=[p.stem for p in paths],
        tau=args.tau,
        drop=args.drop,
        auc_tolerance=args.auc_tolerance,
    )
    elapsed = time.perf_counter() - t0
    table = series.table()
    with pd.option_context("display.width", 250, "display.max_columns", 100, "display.precision", 3):
        print(table.drop(columns=[c for c in table.columns if c.startswith("|G|")]).to_string(index=False))
        print()
        print("gold-list sizes |G_c| per method/class:")
        print(
            table[["checkpoint", *[c for c in table.columns if c.startswith("|G|")]]].to_string(index=False)
        )
    print()
    print(
        f"{len(paths)} checkpoints, {len(items)} '{args.split}' images, methods {args.methods}, "
        f"τ = {args.tau}, drop > {args.drop}, AUC tolerance {args.auc_tolerance}; {elapsed:.1f} s"
    )
    if series.warnings:
        print("early warnings:")
        for w in series.warnings:
            print("  " + w.message())
    else:
        print("early warnings: none")
    path = series.to_csv(args.out)
    series.to_json(args.out.with_suffix(".json"))
    print(f"wrote {path} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
