"""Counterfactual edits on the demo models: does the prediction follow the anatomy and the finding?

Run: ``.venv/bin/python -m bench.counterfactual [--models sound shortcut] [--splits test shortcut shortcut_swapped]
[--fills] [--roi automatic|true]``

Per model, split and true class (committed demo images, ``verification.demo``):

- ``acc``: accuracy on the unedited images;
- (a) outside neutralised (:func:`verification.counterfactual.neutralise_outside`): ``out_flip`` share of
  images whose predicted class changes, ``out_dp`` mean change of the probability of the originally predicted
  class;
- (b) inside neutralised (:func:`~verification.counterfactual.neutralise_inside`): ``in_surv`` share whose
  predicted class survives, ``in_p`` mean probability of the original prediction afterwards;
- (c) finding removed (:func:`~verification.counterfactual.remove_finding` on the lesion mask; nodule and
  effusion images): ``rm_fall`` mean fall of the true class's probability, ``rm_keep`` share still predicted as
  the true class. On the ``test`` split the same image regenerated without its lesion
  (``assets.demo_world.render_case(..., lesion_strength=0)``) gives the true counterfactual: ``twin_fall``,
  ``twin_keep``, and the inpainting's mean absolute pixel error against it inside the dilated mask.

The region of interest is the automatic lung region (``--roi automatic``, default) or the generator's true lung
masks (``--roi true``, regenerated with ``assets.make_demo.make_case`` and checked pixel-identical to the
committed image). ``--fills`` also compares the fill choices of (a) and (b).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from verification.anatomy import automatic_roi
from verification.counterfactual import neutralise_inside, neutralise_outside, remove_finding
from verification.demo import DemoItem, demo_images, demo_model_path
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
    roi: np.ndarray | None
    roi_true: np.ndarray | None
    twin: np.ndarray | None  # the same image without its lesion (test split only)


def _index(item: DemoItem) -> int:
    return int(item.path.stem.split("_")[0])


def _regenerate(item: DemoItem, pixels_u8: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(true lung mask, lesion-free twin) from the generator, None when it does not reproduce the image."""
    try:
        from assets import demo_world as dw
        from assets.make_demo import case_rng, make_case
    except ImportError:
        return None, None
    case = make_case(SEED, item.split, _index(item))
    if not np.array_equal(case.image, pixels_u8):
        return None, None
    twin = None
    if item.split == "test" and case.label > 0:
        twin = dw.render_case(case_rng(SEED, "test", _index(item)), case.label, lesion_strength=0.0).image
    return case.lung_mask, twin


def load_cases(split: str, classes: Sequence[str]) -> list[Case]:
    cases = []
    for item in demo_images(split):
        if item.label is None:
            continue
        img = load_image(item.path)
        lesion = None
        if item.lesion_mask is not None:
            lesion = load_image(item.lesion_mask).pixels > 0.5
        roi_rec = automatic_roi(img.pixels)
        u8 = np.round(img.pixels * 255).astype(np.uint8)
        roi_true, twin = _regenerate(item, u8)
        cases.append(Case(item, img, classes.index(item.label), lesion, roi_rec.mask, roi_true, twin))
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


def measure(
    model: LoadedModel,
    cases: Sequence[Case],
    roi_kind: str,
    outside_kw: dict[str, Any],
    inside_kw: dict[str, Any],
) -> dict[int, dict[str, float]]:
    """Per true class: the numbers of the module docstring."""

    def roi(c: Case) -> np.ndarray | None:
        return c.roi_true if roi_kind == "true" else c.roi

    base = probs(model, [c.image for c in cases])
    pred = base.argmax(1)
    labels = np.array([c.label for c in cases])
    oi, oimg = _edit_all(
        cases, lambda c: None if roi(c) is None else neutralise_outside(c.image.pixels, roi(c), **outside_kw)
    )
    ii, iimg = _edit_all(
        cases, lambda c: None if roi(c) is None else neutralise_inside(c.image.pixels, roi(c), **inside_kw)
    )
    ri, rimg = _edit_all(
        cases, lambda c: None if c.lesion is None else remove_finding(c.image.pixels, c.lesion)
    )
    ti, timg = _edit_all(cases, lambda c: None if c.twin is None else c.twin.astype(np.float32) / 255.0)
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


def inpaint_error(cases: Sequence[Case]) -> dict[str, float]:
    """Mean absolute grey-level error (0-255) of the inpainted pixels against the lesion-free twin, and of the
    unedited image against the twin (what removal has to undo), inside the dilated mask, per class."""
    from verification.counterfactual import DEFAULT_FINDING_DILATION, dilate_mask

    out: dict[str, list[float]] = {}
    for c in cases:
        if c.twin is None or c.lesion is None:
            continue
        grown = dilate_mask(c.lesion, max(round(DEFAULT_FINDING_DILATION * min(c.lesion.shape)), 1))
        edited = remove_finding(c.image.pixels, c.lesion)
        twin = c.twin.astype(np.float64) / 255.0
        out.setdefault(f"inpaint_err_{c.label}", []).append(float(np.abs(edited - twin)[grown].mean() * 255))
        out.setdefault(f"lesion_err_{c.label}", []).append(
            float(np.abs(c.image.pixels - twin)[grown].mean() * 255)
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
    print(f"{'model':<18}{'split':<18}{'class':<10}" + "".join(f"{c:>10}" for c in COLUMNS))
    for (m, s, k), row in table.items():
        cells = []
        for col in COLUMNS:
            v = row.get(col)
            cells.append(f"{'-':>10}" if v is None else (f"{int(v):>10d}" if col == "n" else f"{v:>10.2f}"))
        print(f"{m:<18}{s:<18}{k:<10}" + "".join(cells))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["sound", "shortcut"])
    ap.add_argument("--splits", nargs="+", default=["test", "shortcut", "shortcut_swapped"])
    ap.add_argument("--roi", choices=["automatic", "true"], default="automatic")
    ap.add_argument("--fills", action="store_true", help="compare the fill choices of (a) and (b)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    models = {}
    for name in args.models:
        try:
            models[name] = load_model(demo_model_path(name), name=name)
        except VerificationError as exc:
            print(f"skip model {name}: {exc}")
    classes = next(iter(models.values())).class_names
    cases = {s: load_cases(s, classes) for s in args.splits}
    n_auto = sum(c.roi is not None for cs in cases.values() for c in cs)
    n_true = sum(c.roi_true is not None for cs in cases.values() for c in cs)
    n_all = sum(len(cs) for cs in cases.values())
    print(f"{n_all} images; automatic lung ROI found on {n_auto}; true lung masks regenerated for {n_true}")
    variants: list[tuple[str, dict[str, Any], dict[str, Any]]] = [("default fills", {}, {})]
    if args.fills:
        variants += [
            ("outside median / inside blur", {"fill": "median"}, {"fill": "blur"}),
            ("outside blur sigma 0.03 / inside mean", {"sigma": 0.03}, {"fill": "mean"}),
        ]
    for title, okw, ikw in variants:
        table = {}
        for mname, model in models.items():
            for split, cs in cases.items():
                for k, row in measure(model, cs, args.roi, okw, ikw).items():
                    table[(mname, split, classes[k])] = row
        print_table(
            f"{title} (roi: {args.roi}; outside {okw or 'default'}, inside {ikw or 'default'})", table
        )
    if "test" in cases:
        err = inpaint_error(cases["test"])
        print(
            "\ninpainting vs lesion-free twin (test split, mean |error| in grey levels 0-255, dilated mask):"
        )
        for k, v in sorted(err.items()):
            print(f"  {k:<18}{v:6.1f}")
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
