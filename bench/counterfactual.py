"""Counterfactual edits on the demo models: does the prediction follow the anatomy and the finding?

Run: ``.venv/bin/python -m bench.counterfactual [--models sound shortcut ...] [--splits test shortcut ...]
[--roi automatic|true] [--fills] [--base-extension 0.1 --margin 0.015 --mirror base]``

Per model, split and true class (committed demo images, ``verification.demo``):

- ``acc``: accuracy on the unedited images;
- (a) outside neutralised (:func:`verification.counterfactual.neutralise_outside`): ``out_flip`` share of
  images whose predicted class changes, ``out_dp`` mean change of the probability of the originally predicted
  class;
- (b) inside neutralised (:func:`~verification.counterfactual.neutralise_inside`): ``in_surv`` share whose
  predicted class survives, ``in_p`` mean probability of the original prediction afterwards;
- (c) finding removed (:func:`~verification.counterfactual.remove_finding` on the lesion mask, filled from the
  lung fields; nodule and effusion images): ``rm_fall`` mean fall of the true class's probability, ``rm_keep``
  share still predicted as the true class. Where the demo has lesion-free twins (the same case rendered without
  its lesion: ``demo_twins``, else regenerated with ``assets.demo_world``), ``twin_fall`` and ``twin_keep`` are
  the true counterfactual, and the inpainting's mean absolute pixel error against the twin is printed.

The region of interest is the automatic lung region (``--roi automatic``, default, with the given
:class:`~verification.anatomy.LungParams`) or the demo's true lung masks (``--roi true``: ``DemoItem`` lung
masks, else regenerated with ``assets.make_demo.make_case`` and checked pixel-identical to the committed image).
``--fills`` also compares other fill choices for (a) and (b).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (python bench/x.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from verification.anatomy import LungParams, automatic_roi
from verification.counterfactual import (
    DEFAULT_FINDING_DILATION,
    dilate_mask,
    neutralise_inside,
    neutralise_outside,
    remove_finding,
)
from verification.demo import DemoItem, demo_images, demo_model_path, demo_splits
from verification.errors import VerificationError
from verification.io.images import load_image, to_tensor
from verification.io.models import load_model
from verification.io.records import LoadedImage, LoadedModel

SEED = 1234


@dataclasses.dataclass
class Case:
    item: DemoItem
    image: LoadedImage
    label: int
    lesion: np.ndarray | None
    roi: np.ndarray | None  # automatic region
    fields: np.ndarray | None  # the automatic method's aerated lung fields
    roi_true: np.ndarray | None
    twin: np.ndarray | None  # the same image without its lesion, float [0, 1]


def _index(item: DemoItem) -> int:
    return int(item.path.stem.split("_")[0])


def _regenerate(item: DemoItem, pixels_u8: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(true lung mask, lesion-free twin on the test split) from the generator; None when it does not
    reproduce the committed image."""
    try:
        from assets import demo_world as dw
        from assets.make_demo import case_rng, make_case
    except ImportError:
        return None, None
    try:
        case = make_case(SEED, item.split, _index(item))
    except (ValueError, KeyError):
        return None, None
    if not np.array_equal(case.image, pixels_u8):
        return None, None
    twin = None
    if item.split == "test" and case.label > 0:
        rng = case_rng(SEED, "test", _index(item))
        twin = dw.render_case(rng, case.label, lesion_strength=0.0).image.astype(np.float32) / 255.0
    return case.lung_mask, twin


def _mask(item: DemoItem, kind: str) -> np.ndarray | None:
    """The demo's own mask of ``kind`` (``DemoItem.load_mask`` where the demo has it, else the lesion PNG)."""
    loader = getattr(item, "load_mask", None)
    if loader is not None:
        m = loader(kind)
        return None if m is None else np.asarray(m, bool)
    if kind == "lesion" and item.lesion_mask is not None:
        return load_image(item.lesion_mask).pixels > 0.5
    return None


def _twins(split: str) -> dict[Path, np.ndarray]:
    try:
        from verification.demo import demo_twins
    except ImportError:
        return {}
    try:
        return {orig.path: load_image(twin.path).pixels for orig, twin in demo_twins(split)}
    except VerificationError:
        return {}


def load_cases(split: str, classes: Sequence[str], params: LungParams) -> list[Case]:
    cases = []
    twins = _twins(split)
    for item in demo_images(split):
        if item.label is None:
            continue
        img = load_image(item.path)
        rec = automatic_roi(img.pixels, params)
        roi_true = _mask(item, "lung")
        twin = twins.get(item.path)
        if roi_true is None or (twin is None and split == "test"):
            regen_roi, regen_twin = _regenerate(item, np.round(img.pixels * 255).astype(np.uint8))
            roi_true = roi_true if roi_true is not None else regen_roi
            twin = twin if twin is not None else regen_twin
        lesion = _mask(item, "lesion")
        label = classes.index(item.label)
        cases.append(Case(item, img, label, lesion, rec.mask, rec.fields, roi_true, twin))
    return cases


def _with(img: LoadedImage, pixels: np.ndarray) -> LoadedImage:
    px = np.asarray(pixels, np.float32)
    return dataclasses.replace(img, pixels=px, display=np.round(px * 255).astype(np.uint8))


def probs(model: LoadedModel, images: Sequence[LoadedImage], batch: int = 32) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = to_tensor(list(images[i : i + batch]), model)
            out.append(torch.softmax(model.module(x).float(), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.num_classes))


def _edit_all(
    cases: Sequence[Case], edit: Callable[[Case], np.ndarray | None]
) -> tuple[list[int], list[LoadedImage]]:
    idx, imgs = [], []
    for i, c in enumerate(cases):
        px = edit(c)
        if px is not None:
            idx.append(i)
            imgs.append(_with(c.image, px))
    return idx, imgs


@dataclasses.dataclass(frozen=True)
class Edits:
    """Precomputed edited images of one split (the same for every model)."""

    outside: tuple[list[int], list[LoadedImage]]
    inside: tuple[list[int], list[LoadedImage]]
    removed: tuple[list[int], list[LoadedImage]]
    twins: tuple[list[int], list[LoadedImage]]


def make_edits(
    cases: Sequence[Case], roi_kind: str, outside_kw: dict[str, Any], inside_kw: dict[str, Any]
) -> Edits:
    def roi(c: Case) -> np.ndarray | None:
        return c.roi_true if roi_kind == "true" else c.roi

    def outside(c: Case) -> np.ndarray | None:
        r = roi(c)
        return None if r is None else neutralise_outside(c.image.pixels, r, **outside_kw)

    def inside(c: Case) -> np.ndarray | None:
        r = roi(c)
        return None if r is None else neutralise_inside(c.image.pixels, r, **inside_kw)

    def removed(c: Case) -> np.ndarray | None:
        if c.lesion is None or not c.lesion.any():
            return None
        sources = c.roi_true if roi_kind == "true" else c.fields
        return remove_finding(c.image.pixels, c.lesion, sources=sources)

    return Edits(
        _edit_all(cases, outside),
        _edit_all(cases, inside),
        _edit_all(cases, removed),
        _edit_all(cases, lambda c: c.twin),
    )


def measure(model: LoadedModel, cases: Sequence[Case], edits: Edits) -> dict[int, dict[str, float]]:
    """Per true class: the numbers of the module docstring."""
    base = probs(model, [c.image for c in cases])
    pred = base.argmax(1)
    labels = np.array([c.label for c in cases])
    (oi, oimg), (ii, iimg), (ri, rimg), (ti, timg) = edits.outside, edits.inside, edits.removed, edits.twins
    po, pi, pr, pt = (probs(model, x) for x in (oimg, iimg, rimg, timg))
    rows: dict[int, dict[str, float]] = {}
    for k in sorted(set(labels.tolist())):
        sel = labels == k
        row: dict[str, float] = {"n": float(sel.sum()), "acc": float((pred[sel] == k).mean())}
        o = [j for j, i in enumerate(oi) if labels[i] == k]
        if o:
            src = np.array([oi[j] for j in o])
            row["out_flip"] = float((po[o].argmax(1) != pred[src]).mean())
            row["out_dp"] = float((po[o, pred[src]] - base[src, pred[src]]).mean())
        n = [j for j, i in enumerate(ii) if labels[i] == k]
        if n:
            src = np.array([ii[j] for j in n])
            row["in_surv"] = float((pi[n].argmax(1) == pred[src]).mean())
            row["in_p"] = float(pi[n, pred[src]].mean())
        r = [j for j, i in enumerate(ri) if labels[i] == k]
        if r and k > 0:
            src = np.array([ri[j] for j in r])
            row["rm_fall"] = float((base[src, k] - pr[r, k]).mean())
            row["rm_keep"] = float((pr[r].argmax(1) == k).mean())
        t = [j for j, i in enumerate(ti) if labels[i] == k]
        if t and k > 0:
            src = np.array([ti[j] for j in t])
            row["twin_fall"] = float((base[src, k] - pt[t, k]).mean())
            row["twin_keep"] = float((pt[t].argmax(1) == k).mean())
        rows[k] = row
    return rows


def inpaint_error(cases: Sequence[Case], roi_kind: str) -> dict[str, float]:
    """Mean absolute grey-level error (0-255) inside the dilated mask against the lesion-free twin, per class:
    of the unedited image (what removal has to undo), of plain inpainting, and of inpainting from the lung
    fields (automatic) or the true lung mask."""
    out: dict[str, list[float]] = {}
    for c in cases:
        if c.twin is None or c.lesion is None or not c.lesion.any():
            continue
        grown = dilate_mask(c.lesion, max(round(DEFAULT_FINDING_DILATION * min(c.lesion.shape)), 1))
        twin = c.twin.astype(np.float64)
        sources = c.roi_true if roi_kind == "true" else c.fields
        for name, px in (
            ("lesion left in", c.image.pixels),
            ("inpainted, plain", remove_finding(c.image.pixels, c.lesion)),
            (f"inpainted from {roi_kind} lungs", remove_finding(c.image.pixels, c.lesion, sources=sources)),
        ):
            out.setdefault(f"class {c.label}: {name}", []).append(
                float(np.abs(px - twin)[grown].mean() * 255)
            )
    return {k: float(np.mean(v)) for k, v in out.items()}


COLUMNS = (
    "n",
    "acc",
    "out_flip",
    "out_dp",
    "in_surv",
    "in_p",
    "rm_fall",
    "rm_keep",
    "twin_fall",
    "twin_keep",
)


def print_table(title: str, table: dict[tuple[str, str, str], dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"{'model':<22}{'split':<24}{'class':<9}" + "".join(f"{c:>9}" for c in COLUMNS))
    for (m, s, k), row in table.items():
        cells = []
        for col in COLUMNS:
            v = row.get(col)
            cells.append(f"{'-':>9}" if v is None else (f"{int(v):>9d}" if col == "n" else f"{v:>9.2f}"))
        print(f"{m:<22}{s:<24}{k:<9}" + "".join(cells))


def main(argv: Sequence[str] | None = None) -> None:
    defaults = LungParams()
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["sound", "shortcut", "shortcut_token"])
    ap.add_argument(
        "--splits",
        nargs="+",
        default=["test", "shortcut", "shortcut_swapped", "cue_token", "cue_token_swapped"],
    )
    ap.add_argument("--roi", choices=["automatic", "true"], default="automatic")
    ap.add_argument("--fills", action="store_true", help="compare other fill choices of (a) and (b)")
    ap.add_argument("--base-extension", type=float, default=defaults.base_extension)
    ap.add_argument("--margin", type=float, default=defaults.margin)
    ap.add_argument("--mirror", choices=["off", "base", "full"], default=defaults.mirror)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    params = LungParams(base_extension=args.base_extension, margin=args.margin, mirror=args.mirror)
    models = {}
    for name in args.models:
        try:
            models[name] = load_model(demo_model_path(name), name=name)
        except VerificationError as exc:
            print(f"skip model {name}: {exc}")
    if not models:
        raise SystemExit("no demo model could be loaded")
    classes = next(iter(models.values())).class_names
    known = set(demo_splits())
    splits = [s for s in args.splits if s in known]
    cases = {s: load_cases(s, classes, params) for s in splits}
    n_all = sum(len(cs) for cs in cases.values())
    n_auto = sum(c.roi is not None for cs in cases.values() for c in cs)
    n_true = sum(c.roi_true is not None for cs in cases.values() for c in cs)
    n_twin = sum(c.twin is not None for cs in cases.values() for c in cs)
    print(f"params: {params}")
    print(
        f"{n_all} images ({', '.join(splits)}); automatic lung region on {n_auto}; true lung masks for {n_true}; "
        f"lesion-free twins for {n_twin}"
    )
    variants: list[tuple[str, dict[str, Any], dict[str, Any]]] = [("default fills", {}, {})]
    if args.fills:
        variants += [
            ("outside median / inside blur", {"fill": "median"}, {"fill": "blur"}),
            ("outside blur sigma 0.03 / inside mean", {"sigma": 0.03}, {"fill": "mean"}),
        ]
    for title, okw, ikw in variants:
        table = {}
        edits = {s: make_edits(cs, args.roi, okw, ikw) for s, cs in cases.items()}
        for mname, model in models.items():
            for split, cs in cases.items():
                for k, row in measure(model, cs, edits[split]).items():
                    table[(mname, split, classes[k])] = row
        print_table(
            f"{title} (roi: {args.roi}; outside {okw or 'default'}, inside {ikw or 'default'})", table
        )
    for split, cs in cases.items():
        err = inpaint_error(cs, args.roi)
        if err:
            print(f"\nremoval vs lesion-free twin ({split}; mean |error|, grey levels 0-255, dilated mask):")
            for k, v in sorted(err.items()):
                print(f"  {k:<40}{v:6.1f}")
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
