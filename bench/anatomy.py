"""The automatic lung region against the demo generator's true lung masks, and on a real chest CR.

Run: ``.venv/bin/python -m bench.anatomy [--n 60] [--splits test reference]``

Images ``0 .. n-1`` of each split are regenerated with ``assets.make_demo.make_case`` (seed 1234), which also
returns the true lung mask (the lung fields including the fluid of an effusion) and the lesion mask. Per class:
IoU of the automatic region with the true lungs (mean / minimum), the share of true lung pixels inside the region,
the share of lesion pixels inside it (mean / minimum), and which source was used. Then pydicom-data's
``RG1_UNCR.dcm`` (a real PA chest CR): source, region share, time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python bench/x.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from verification.anatomy import LungParams, automatic_roi


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--splits", nargs="+", default=["test", "reference"])
    ap.add_argument("--base-extension", type=float, default=LungParams().base_extension)
    ap.add_argument("--margin", type=float, default=LungParams().margin)
    ap.add_argument("--mirror", choices=["off", "base", "full"], default=LungParams().mirror)
    ap.add_argument("--no-match-base", action="store_true")
    args = ap.parse_args(argv)
    from assets import demo_world as dw
    from assets.make_demo import make_case

    params = LungParams(
        base_extension=args.base_extension,
        margin=args.margin,
        mirror=args.mirror,
        match_base=not args.no_match_base,
    )
    print(f"params: {params}")
    rows: list[tuple[int, float, float, float, str]] = []
    tokens: dict[int, list[float]] = {}
    t0 = time.perf_counter()
    for split in args.splits:
        for i in range(args.n):
            case = make_case(1234, split, i)
            rec = automatic_roi(case.image, params)
            if rec.mask is None:
                rows.append((case.label, 0.0, 0.0, 0.0 if case.lesion_mask.any() else np.nan, rec.source))
                continue
            m, lungs = rec.mask, case.lung_mask
            iou = float((m & lungs).sum() / (m | lungs).sum())
            lung_in = float(m[lungs].mean())
            cov = float(m[case.lesion_mask].mean()) if case.lesion_mask.any() else np.nan
            rows.append((case.label, iou, lung_in, cov, rec.source))
            if hasattr(dw, "token_cue"):  # a class-coded disc outside the lungs: must stay outside the region
                for cls in range(len(dw.CLASSES)):
                    _, disc, _ = dw.token_cue(case, cls, np.random.default_rng([i, cls]))
                    tokens.setdefault(cls, []).append(float(m[disc].mean()))
    dt = (time.perf_counter() - t0) / max(len(rows), 1)
    print(f"{len(rows)} images ({', '.join(args.splits)}), {1000 * dt:.0f} ms per image incl. generation")
    print(
        f"{'class':<10}{'n':>4}{'IoU mean':>10}{'IoU min':>9}{'lungs in':>10}{'lesion in':>11}{'min':>7}  sources"
    )
    for k, name in enumerate(dw.CLASSES):
        sel = [r for r in rows if r[0] == k]
        if not sel:
            continue
        iou = np.array([r[1] for r in sel])
        lung_in = np.array([r[2] for r in sel])
        cov = np.array([r[3] for r in sel])
        sources = {s: sum(r[4] == s for r in sel) for s in {r[4] for r in sel}}
        cov_txt = f"{np.nanmean(cov):>11.3f}{np.nanmin(cov):>7.3f}" if k > 0 else f"{'-':>11}{'-':>7}"
        print(
            f"{name:<10}{len(sel):>4}{iou.mean():>10.3f}{iou.min():>9.3f}{lung_in.mean():>10.3f}{cov_txt}  {sources}"
        )
    for cls, shares in tokens.items():
        inside = np.array(shares)
        print(
            f"token zone of {dw.CLASSES[cls]}: disc pixels inside the region mean {inside.mean():.3f}, "
            f"discs touching it {(inside > 0).mean():.2f}, over half inside {(inside > 0.5).mean():.2f}"
        )
    committed(params)
    path = dw.pydicom_data_path("RG1_UNCR.dcm")
    if path is None:
        print("RG1_UNCR.dcm: pydicom-data not installed")
        return
    from verification.io.images import load_image

    img = load_image(path)
    t1 = time.perf_counter()
    rec = automatic_roi(img, params)
    print(
        f"RG1_UNCR.dcm {img.size}: {rec.source}, region {rec.area_fraction:.2f} of the image, "
        f"{1000 * (time.perf_counter() - t1):.0f} ms; {rec.reason or 'ok'}"
    )


def committed(params: LungParams) -> None:
    """Every committed demo split that has lung masks (``DemoItem.load_mask("lung")``): sources used, IoU."""
    from verification.demo import demo_images, demo_splits
    from verification.io.images import load_image

    print(
        f"\n{'committed split':<26}{'n':>4}{'lungs':>7}{'body':>6}{'failed':>8}{'IoU mean':>10}{'IoU min':>9}"
    )
    for split in demo_splits():
        items = demo_images(split)
        if not items or not hasattr(items[0], "load_mask"):
            continue
        counts = {"automatic_lungs": 0, "automatic_body": 0, "failed": 0}
        ious = []
        for item in items:
            rec = automatic_roi(load_image(item.path), params)
            counts[rec.source] = counts.get(rec.source, 0) + 1
            lungs = item.load_mask("lung")
            if rec.mask is not None and lungs is not None and rec.source == "automatic_lungs":
                ious.append(float((rec.mask & lungs).sum() / (rec.mask | lungs).sum()))
        iou = f"{np.mean(ious):>10.3f}{np.min(ious):>9.3f}" if ious else f"{'-':>10}{'-':>9}"
        print(
            f"{split:<26}{len(items):>4}{counts['automatic_lungs']:>7}{counts['automatic_body']:>6}"
            f"{counts['failed']:>8}{iou}"
        )


if __name__ == "__main__":
    main()
