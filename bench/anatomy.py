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
import time
from collections.abc import Sequence

import numpy as np

from verification.anatomy import LungParams, automatic_roi


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--splits", nargs="+", default=["test", "reference"])
    ap.add_argument("--base-extension", type=float, default=LungParams().base_extension)
    ap.add_argument("--margin", type=float, default=LungParams().margin)
    ap.add_argument("--no-mirror", action="store_true")
    args = ap.parse_args(argv)
    from assets import demo_world as dw
    from assets.make_demo import make_case

    params = LungParams(base_extension=args.base_extension, margin=args.margin, mirror=not args.no_mirror)
    print(f"params: {params}")
    rows: list[tuple[int, float, float, float, str]] = []
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


if __name__ == "__main__":
    main()
