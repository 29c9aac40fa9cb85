"""The truth matrix: every demo model on every relevant split → verdict, expected verdict, deciding line.

Run: ``.venv/bin/python -m bench.verdicts [--models sound shortcut ...] [--faithfulness] [--threads 2]``

1. The bundle is the demo's sound reference bundle (``assets/demo/references``), as a user gets it. When it
   carries no verdict calibration (a schema-1 bundle), one is made here with the same recipe as
   ``.venv/bin/python -m assets.make_demo --stage calibrate`` would (healthy demo models, shortcut models
   and the cascading-randomised model on the "reference" split) and the fact is printed.
2. Each model is verified (:func:`verification.verify`, the one verify path) on its relevant splits — healthy
   and garbage models: clean test, strongly shifted, OOD; each shortcut model: clean test, its cue split and
   the cue-swapped split — with labels (except on OOD), the demo's lesion masks (``--no-annotations``: none)
   and the anatomy found automatically (``--lung-masks``: the demo's lung masks). Printed per run: accuracy, verdict, expected verdict (``demo.demo_expected_verdicts()``, else the
   demo's ground truth rule), the deciding line, and per class the verdict with E1's Youden J, E3's survival
   with the anatomy removed and E4's drop when the finding is removed.
3. The summary counts verdicts that match and lists the ones that do not.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python bench/x.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from verification import demo
from verification.io.models import load_model
from verification.io.records import LoadedModel
from verification.reference import ReferenceBundle, load_bundle
from verification.verdict import VerdictConfig, VerificationReport, calibrate_bundle, verify

SHIFTS = ("shifted_inverted", "shifted_rotation", "shifted_exposure", "shifted_noise", "shifted_blur")


def relevant_splits(kind: str, available: set[str]) -> list[str]:
    if kind.startswith("shortcut"):
        cue = kind.split(":", 1)[1] if ":" in kind else "marker"
        own = ["shortcut", "shortcut_swapped"] if cue == "marker" else [f"cue_{cue}", f"cue_{cue}_swapped"]
        wanted = ["test", *own]
    else:
        wanted = ["test", *SHIFTS, "ood"]
    return [s for s in wanted if s in available]


def ground_truth(kind: str, split: str) -> str:
    """The demo's rule when the manifest has no expected verdict: what the ground truth supports."""
    sk = demo.split_kind(split) if hasattr(demo, "split_kind") else split
    if split == "ood" or sk.startswith("shifted"):
        return "CANNOT VERIFY"
    if kind.startswith("shortcut"):
        return "UNSUITABLE"
    if kind in ("healthy", "garbage") and split == "test":
        return "SUITABLE"
    return "CANNOT VERIFY"


def split_data(
    split: str,
) -> tuple[list[str], list[str | None], list[np.ndarray | None], list[np.ndarray | None]]:
    items = demo.demo_images(split)
    return (
        [str(it.path) for it in items],
        [it.label for it in items],
        [_mask(it, "lesion") for it in items],
        [_mask(it, "lung") for it in items],
    )


def _mask(item: demo.DemoItem, kind: str) -> np.ndarray | None:
    load = getattr(item, "load_mask", None)
    if load is not None:
        return load(kind)
    if kind == "lesion" and item.lesion_mask is not None:
        from verification.reference import load_mask

        return load_mask(item.lesion_mask)
    return None


def the_bundle(
    models: dict[str, LoadedModel],
    kinds: dict[str, str],
    config: VerdictConfig,
    path: str | None,
    save: str | None,
    recalibrate: bool = False,
) -> ReferenceBundle:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = load_bundle(path or demo.demo_reference_bundle("sound"))
    if path is not None and bundle.calibration is not None and not recalibrate:
        print(
            f"bundle: {path}, calibrated: {bundle.calibration.scheme}; known-bad: {', '.join(bundle.calibration.bad)}"
        )
        return bundle
    if bundle.calibration is not None and not recalibrate:
        print(f"bundle: the demo's sound bundle, calibrated: {bundle.calibration.scheme}")
        print(f"        known-bad references: {', '.join(bundle.calibration.bad)}")
        return bundle
    healthy = {n: m for n, m in models.items() if kinds[n] == "healthy"}
    bad = {n: m for n, m in models.items() if kinds[n].startswith("shortcut")}
    paths, labels, lesions, _ = split_data("reference")
    t = time.perf_counter()
    # Anatomy found automatically, as a user without lung masks will have it at verify time.
    bundle = calibrate_bundle(bundle, healthy, paths, labels, bad=bad, annotations=lesions, config=config)
    assert bundle.calibration is not None
    if save:
        bundle.save(save)
    print(
        "bundle: calibrated here on "
        f"the 'reference' split in {time.perf_counter() - t:.0f} s: {bundle.calibration.scheme}; known-bad: "
        f"{', '.join(bundle.calibration.bad)}"
    )
    return bundle


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if v is None else fmt.format(v)


def describe(rep: VerificationReport) -> list[str]:
    out = []
    e1, e3, e4 = rep.line("E1"), rep.line("E3"), rep.line("E4")
    for c in rep.classes:
        j = e1.for_class(c.class_name) if e1 else None
        s = e3.for_class(c.class_name) if e3 else None
        d = e4.for_class(c.class_name) if e4 else None
        surv = s.numbers.get("E3.inside_survival") if s else None
        out.append(
            f"      {c.class_name:9s} {c.label:13s} [{c.deciding_line or '-'}] n={c.n_assessable}/{c.n_images} "
            f"J={_num(j.value if j else None)} E3:{s.status if s else '-'} survival={_num(surv)} "
            f"E4:{d.status if d else '-'} drop={_num(d.value if d else None)}"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", help="demo models (default: every classifier in the demo)")
    ap.add_argument("--faithfulness", action="store_true", help="run E6 too (about 9 × slower)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet-classes", action="store_true", help="no per-class lines")
    ap.add_argument("--bundle", help="use this (calibrated) bundle instead of the demo's")
    ap.add_argument("--save-bundle", help="when calibrating here, save the calibrated bundle to this stem")
    ap.add_argument("--calibrate-only", action="store_true", help="stop after the bundle")
    ap.add_argument(
        "--recalibrate", action="store_true", help="calibrate here even if the bundle is calibrated"
    )
    ap.add_argument(
        "--lung-masks", action="store_true", help="give the demo's lung masks (default: automatic)"
    )
    ap.add_argument("--no-annotations", action="store_true", help="no lesion masks: labels only (E2/E4 off)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    info = demo.demo_models()
    kinds = {n: str(v.get("kind", "")) for n, v in info.items() if v.get("kind") != "segmentation"}
    names = args.models or list(kinds)
    models = {
        n: load_model(demo.demo_model_path(n), name=n) for n in kinds if n in names or kinds[n] != "garbage"
    }
    config = VerdictConfig(faithfulness=args.faithfulness)
    bundle = the_bundle(models, kinds, config, args.bundle, args.save_bundle, args.recalibrate)
    if args.calibrate_only:
        return
    try:
        expected = demo.demo_expected_verdicts(min_images_per_class=config.min_images)
    except (AttributeError, demo.DemoAssetsError):
        expected = {}
    available = set(demo.demo_splits())
    rows: list[tuple[str, str, str, str, str | None, float | None, float]] = []
    print(
        f"\n{'model':20s} {'kind':22s} {'split':26s} {'n':>4s} {'acc':>6s}  {'verdict':13s} {'expected':13s} decided by"
    )
    for name in names:
        kind = kinds[name]
        for split in relevant_splits(kind, available):
            paths, labels, lesions, lungs = split_data(split)
            t = time.perf_counter()
            rep = verify(
                models[name], bundle, paths, None if split == "ood" else labels,
                annotations=None if args.no_annotations else lesions, anatomy=lungs if args.lung_masks else None,
                config=config,
            )  # fmt: skip
            dt = time.perf_counter() - t
            exp = expected.get((name, split)) or ground_truth(kind, split)
            if args.no_annotations and config.require_findings and exp == "SUITABLE":
                exp = "CANNOT VERIFY"  # labels alone cannot exclude a cue inside the anatomy
            acc = "  n/a" if rep.accuracy is None else f"{100 * rep.accuracy:5.1f}%"
            mark = "" if rep.label == exp else "   <-- MISMATCH"
            print(
                f"{name:20s} {kind:22s} {split:26s} {rep.n_images:4d} {acc:>6s}  {rep.label:13s} {exp:13s} "
                f"{rep.deciding_line or '-'} ({rep.n_not_assessable} not assessable; {dt:.0f} s){mark}",
                flush=True,
            )
            if not args.quiet_classes:
                print("\n".join(describe(rep)), flush=True)
            rows.append((name, split, rep.label, exp, rep.deciding_line, rep.accuracy, dt))
    ok = [r for r in rows if r[2] == r[3]]
    print(f"\n{len(ok)} of {len(rows)} verdicts as expected")
    for r in rows:
        if r[2] != r[3]:
            print(f"  mismatch: {r[0]} on {r[1]}: {r[2]} (expected {r[3]}, decided by {r[4]})")
    worst = [r for r in rows if {r[2], r[3]} == {"SUITABLE", "UNSUITABLE"}]
    print(f"worst defects (SUITABLE ↔ UNSUITABLE): {len(worst)}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
