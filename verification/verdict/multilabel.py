"""One verdict per label for a multi-label model (issue #15; METHODS.md §3 applied label by label).

A multi-label model answers one yes/no question per label, so it is verified one question at a time: label
L's verdict is built by the *same* lines and the same combiner as a single-label class, on L's binary task —
the model seen through :func:`verification.multilabel.label_view` (logits ``(z_L, 0)``: softmax =
``(σ(z_L), 1 − σ(z_L))``, predicted "L" iff σ ≥ 0.5, the map that of ``z_L``), the images annotated with L as
its positives and every other labelled image as its negatives, L's finding masks, L's reference map and L's
calibrated edges. Nothing is pooled across labels:

* a label with fewer than ``min_images`` assessable positives is CANNOT VERIFY (E0), whatever the others do;
  so is every label (short of one that clearly fails) when the input gate removed more than
  ``max_not_assessable`` of the images, or of the label's positives;
* an informative E5/E6 that is inconclusive for a label blocks its SUITABLE, as for a class;
* a label borrows no reliance evidence from another label (each label is a finding of its own), and with
  ``require_findings`` it needs finding annotations *of its own* (E2/E4), not another label's;
* the model's verdict is its worst label's.

The result is one :class:`~verification.verdict.records.VerificationReport` with ``task = "multilabel"`` whose
``classes`` are the labels (each with its positives as ``n_images``) and whose lines hold, per label, that
label's line result: the JSON document, the HTML report and the dashboard show one verdict per label.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from verification.errors import ShapeError
from verification.io.records import LoadedModel
from verification.multilabel import label_probabilities, label_view, not_label, parse_label_set
from verification.verdict.combine import class_verdict, image_why, model_verdict
from verification.verdict.lines import evaluate_lines, overall_status
from verification.verdict.measure import Measurements, MeasureSpec, measure_batch
from verification.verdict.records import (
    ClassLine,
    ClassVerdict,
    Example,
    ImageEvidence,
    LineResult,
    VerdictConfig,
    VerificationReport,
)
from verification.verdict.stats import wilson

if TYPE_CHECKING:
    from verification.io.images import ImageInput
    from verification.reference import ReferenceBundle
    from verification.verdict.api import Annotation, LabelInput

Progress = Callable[[int, int], None]
LABEL_SCHEME = "per label, on each label's binary task"
"""Marks a calibration made label by label (:func:`calibrate_labels`); only such edges judge a multi-label
model."""
SINGLE_LABEL_CALIBRATION = (
    "the bundle's calibration was made with single-label models (a softmax over the classes), so its edges "
    "do not apply to independent labels: E3–E6 are not assessable; calibrate the bundle with multi-label "
    "models (calibrate_bundle, or reference build with the healthy multi-label models)"
)
NO_LABEL = "(none of the labels)"
"""An image known to carry none of the labels (an empty label set), as shown in the per-image table."""


def _mask_for(annotation: Annotation, name: str, positive: bool) -> np.ndarray | None:
    """Label ``name``'s finding mask on one image: ``{label: mask}`` per label, or one mask that stands for
    every label the image is annotated with (``positive``)."""
    if annotation is None:
        return None
    if isinstance(annotation, Mapping):
        m = annotation.get(name)
        return None if m is None else np.asarray(m)
    return np.asarray(annotation) if positive else None


def _binary_task(bundle: ReferenceBundle, k: int) -> dict[str, Any]:
    """Label ``k``'s binary task as the bundle's fields: the classes ``(k, not k)`` and their reference maps
    (label k's; all zero for "not k")."""
    name = bundle.class_names[k]
    ref = np.asarray(bundle.references, np.float32)[k]
    return {"class_names": (name, not_label(name)), "references": np.stack([ref, np.zeros_like(ref)])}


def label_spec(spec: MeasureSpec, bundle: ReferenceBundle, k: int) -> MeasureSpec:
    """``spec`` (built once for the model: layer, gate, grid, metrics) for label ``k``'s binary task."""
    return dataclasses.replace(
        spec, **_binary_task(bundle, k), has_reference=np.array([int(bundle.counts[k]) > 0, False])
    )


def label_bundle(bundle: ReferenceBundle, k: int) -> ReferenceBundle:
    """The bundle seen for label ``k``'s binary task (its reference map; no reference for "not k")."""
    return dataclasses.replace(bundle, **_binary_task(bundle, k), counts=np.array([int(bundle.counts[k]), 0]))


def binary_labels(sets: Sequence[tuple[int, ...] | None], k: int) -> np.ndarray:
    """Per image 0 (annotated with label k), 1 (labelled, without k) or −1 (labels unknown)."""
    return np.array([-1 if s is None else (0 if k in s else 1) for s in sets], dtype=np.int64)


def label_verdict(m: Measurements, lines: Sequence[LineResult], config: VerdictConfig) -> ClassVerdict:
    """The verdict of label ``m.class_names[0]`` from its binary run: the combiner's per-class rule, with the
    label's own findings only and no evidence borrowed from other labels."""
    name = m.class_names[0]
    by_key = {ln.key: ln for ln in lines}
    pos = m.group == 0
    own_findings = bool((m.has_finding & pos & m.assessable).any())
    return class_verdict(
        name,
        int(pos.sum()),
        int((pos & m.assessable).sum()),
        by_key,
        bool((m.labels >= 0).any()),
        own_findings,
        m,
        0,
        config,
        False,
    )


def _merge_lines(names: Sequence[str], runs: Sequence[tuple[LineResult, ...]]) -> tuple[LineResult, ...]:
    out = []
    for j, first in enumerate(runs[0]):
        per = []
        for name, lines in zip(names, runs):
            c = lines[j].for_class(name)
            per.append(c if c is not None else ClassLine(name, "not_assessable", reason="not measured"))
        seps = [lines[j].separation for lines in runs if lines[j].separation is not None]
        image_level = first.key == "E0"
        out.append(
            LineResult(
                key=first.key,
                name=first.name,
                status=overall_status([c.status for c in per]),
                decisive=any(lines[j].decisive for lines in runs),
                per_class=tuple(per),
                calibration=first.calibration,
                separation=min(seps) if seps else None,  # type: ignore[type-var]
                numbers=dict(first.numbers) if image_level else {},
                sentence=first.sentence
                if image_level
                else "; ".join(f"{c.class_name}: {c.status}" for c in per),
            )
        )
    return tuple(out)


def verify_labels(
    model: LoadedModel,
    bundle: ReferenceBundle,
    images: Sequence[ImageInput] | Tensor,
    labels: Sequence[LabelInput] | None = None,
    *,
    annotations: Sequence[Annotation] | None = None,
    anatomy: Sequence[np.ndarray | None] | None = None,
    gate: LoadedModel | None = None,
    config: VerdictConfig | None = None,
    batch_size: int = 16,
    progress: Progress | None = None,
    names: Sequence[str] | None = None,
    examples: int = 8,
    warnings: Sequence[str] = (),
) -> VerificationReport:
    """:func:`verification.verify` for a multi-label model: one verdict per label (module docstring).

    ``labels[i]``: image i's label set — names or indices, a list (empty: none of the labels), a name, a
    "|"-separated string, or None (unknown); ``annotations[i]``: one finding mask (it stands for each of the
    image's labels) or ``{label: mask}``."""
    from verification.verdict.api import cannot_verify, measure_spec, read_images

    config = config or VerdictConfig()
    n = len(images)
    warns = list(warnings)
    classes = tuple(bundle.class_names)
    sets_all = [parse_label_set(v, classes) for v in labels] if labels is not None else [None] * n
    if len(sets_all) != n:
        raise ShapeError(f"{len(sets_all)} label sets for {n} images: give one per image (None: unknown)")
    cal = getattr(bundle, "calibration", None)
    if cal is not None and LABEL_SCHEME not in cal.scheme:  # softmax edges never judge sigmoid labels
        warns.append(SINGLE_LABEL_CALIBRATION)
        bundle = dataclasses.replace(bundle, calibration=None)
    spec0, found = measure_spec(model, bundle, config, gate)
    warns += found

    x, ok, shown, errors = read_images(images, model, names)
    if not ok:
        why = "none of the images could be read" if n else "no images were given"
        return dataclasses.replace(
            cannot_verify(model, bundle, config, why, n, warns, errors), task="multilabel"
        )
    sets = [sets_all[i] for i in ok]
    ann = [annotations[i] for i in ok] if annotations is not None else [None] * len(ok)
    roi = [anatomy[i] for i in ok] if anatomy is not None else None

    runs: list[tuple[Measurements, tuple[LineResult, ...], ClassVerdict]] = []
    total, done = len(classes) * len(ok), 0
    for k, name in enumerate(classes):
        view = label_view(model, model.class_names.index(name))
        spec = label_spec(spec0, bundle, k)
        lab = binary_labels(sets, k)
        lesions = [_mask_for(a, name, s is not None and k in s) for a, s in zip(ann, sets)]
        parts = []
        for s in range(0, len(ok), batch_size):
            sl = slice(s, s + batch_size)
            parts.append(
                measure_batch(
                    view,
                    spec,
                    x[sl],
                    names=shown[sl],
                    labels=lab[sl],
                    lesions=lesions[sl],
                    anatomy=roi[sl] if roi is not None else None,
                )
            )
            done += len(shown[sl])
            if progress is not None:
                progress(done, total)
        m = Measurements.concat(parts)
        lines = evaluate_lines(m, bundle.calibration, config, bundle.metrics, False)
        runs.append((m, lines, label_verdict(m, lines, config)))
    return _report(model, bundle, config, x, sets, runs, warns, errors, examples)


def _report(
    model: LoadedModel,
    bundle: ReferenceBundle,
    config: VerdictConfig,
    x: Tensor,
    sets: Sequence[tuple[int, ...] | None],
    runs: Sequence[tuple[Measurements, tuple[LineResult, ...], ClassVerdict]],
    warns: Sequence[str],
    errors: Sequence[tuple[str, str]],
    examples: int,
) -> VerificationReport:
    from verification.verdict.api import provenance, reference_maps

    classes = tuple(bundle.class_names)
    m0 = runs[0][0]
    verdicts = tuple(v for _, _, v in runs)
    lines = _merge_lines(classes, [ln for _, ln, _ in runs])
    probs = label_probabilities(model, x)  # (N, model outputs): σ per label
    col = [model.class_names.index(c) for c in classes]
    said = probs[:, col] >= 0.5
    images = []
    for i in range(m0.n):
        given = sets[i]
        shown_for = list(given) if given is not None else [k for k in range(len(classes)) if said[i, k]]
        values: dict[str, float | None] = {}
        for k in shown_for:
            for key, v in runs[k][0].values.items():
                values[f"{key} [{classes[k]}]"] = float(v[i]) if np.isfinite(v[i]) else None
        positive = [classes[k] for k in range(len(classes)) if said[i, k]]
        label = None if given is None else (", ".join(classes[k] for k in given) or NO_LABEL)
        why = (
            f"not assessable: {m0.gate_reasons[i]}"
            if not m0.assessable[i]
            else "; ".join(f"{classes[k]}: {image_why(runs[k][0], i)}" for k in shown_for)
            or "no label at p ≥ 0.5"
        )
        images.append(
            ImageEvidence(
                name=m0.names[i],
                label=label,
                predicted=", ".join(positive) or NO_LABEL,
                probabilities=tuple(float(p) for p in probs[i]),
                assessable=bool(m0.assessable[i]),
                not_assessable_reason=m0.gate_reasons[i],
                values=values,
                why=why,
            )
        )
    # exact match over the labelled assessable images: every label right (images are independent: Wilson)
    known = [i for i in range(m0.n) if sets[i] is not None and m0.assessable[i]]
    acc = acc_ci = None
    if known:
        hits = sum(set(np.flatnonzero(said[i]).tolist()) == set(sets[i] or ()) for i in known)
        p, lo, hi = wilson(int(hits), len(known), config.confidence)
        acc, acc_ci = float(p), (lo, hi)
    ex = _examples(runs, examples)
    missing = tuple(dict.fromkeys(w for c in verdicts for w in c.missing))
    deciding: str | None
    if not m0.assessable.any():
        verdict, deciding = "cannot_verify", "E0"
        reason = "no image could be assessed: a verdict needs measurements"
    else:
        verdict, deciding, reason = model_verdict(verdicts, "label")
    roi = ", ".join(sorted({r.roi_method for r, _, _ in runs}))
    return VerificationReport(
        verdict=verdict,  # type: ignore[arg-type]
        deciding_line=deciding,
        reason=reason,
        class_names=classes,
        classes=verdicts,
        lines=lines,
        images=tuple(images),
        accuracy=acc,
        accuracy_interval=acc_ci,
        n_images=m0.n + len(errors),
        n_not_assessable=int((~m0.assessable).sum()),
        config=config,
        errors=tuple(errors),
        warnings=tuple(dict.fromkeys(warns)),
        missing=missing,
        examples=ex,
        references=reference_maps(bundle),
        provenance=provenance(model, bundle, roi),
        task="multilabel",
    )


def _examples(
    runs: Sequence[tuple[Measurements, tuple[LineResult, ...], ClassVerdict]], cap: int
) -> tuple[Example, ...]:
    """Up to ``cap`` maps, taken in turn from each label: its positives predicted positive, most attention
    outside the anatomy first."""
    queues = []
    for m, _, _ in runs:
        sel = np.flatnonzero((m.group == 0) & (m.predicted == 0) & m.assessable)
        outside = np.nan_to_num(m.values.get("E3.outside_energy", np.zeros(m.n))[sel], nan=-1.0)
        queues.append([int(i) for i in sel[np.argsort(-outside, kind="stable")]])
    out: list[Example] = []
    while len(out) < cap and any(queues):
        for (m, _, _), q in zip(runs, queues):
            if q and len(out) < cap:
                i = q.pop(0)
                out.append(Example(m.names[i], m.class_names[0], m.maps[i], note=image_why(m, i)))
    return tuple(out)


# ------------------------------------------------------------------------------------------ calibration


def calibrate_labels(
    bundle: ReferenceBundle,
    healthy: Mapping[str, LoadedModel],
    images: Sequence[ImageInput] | Tensor,
    labels: Sequence[LabelInput],
    *,
    bad: Mapping[str, LoadedModel] | None = None,
    annotations: Sequence[Annotation] | None = None,
    anatomy: Sequence[np.ndarray | None] | None = None,
    config: VerdictConfig | None = None,
    randomised: bool = True,
    batch_size: int = 16,
    max_thumbnails: int = 64,
) -> ReferenceBundle:
    """:func:`verification.verdict.calibrate_bundle` for multi-label models: each label's edges from its
    binary task (the healthy and known-bad models seen through :func:`label_view`), on the images annotated
    with it as positives. The edges of the "not L" classes are dropped."""
    from verification.io.images import as_image, to_tensor
    from verification.verdict.api import known_bad, measure_all, stratified
    from verification.verdict.calibration import calibrate
    from verification.verdict.gate import thumbnails

    config = config or VerdictConfig()
    first = next(iter(healthy.values()))
    bad_models = known_bad(first, bad, randomised)
    classes = tuple(bundle.class_names)
    sets = [parse_label_set(v, classes) for v in labels]
    x = images.float() if isinstance(images, Tensor) else to_tensor([as_image(im) for im in images], first)
    if len(sets) != len(x):
        raise ShapeError(f"{len(sets)} label sets for {len(x)} calibration images: give one per image")
    edges = []
    cal = None
    for k, name in enumerate(classes):
        view_bundle = label_bundle(bundle, k)
        lab = [int(v) if v >= 0 else None for v in binary_labels(sets, k)]
        les = None
        if annotations is not None:
            les = [_mask_for(a, name, s is not None and k in s) for a, s in zip(annotations, sets)]
        kw: dict[str, Any] = dict(annotations=les, anatomy=anatomy, config=config, batch_size=batch_size)

        h = {}
        for nm, mod in healthy.items():
            h[nm] = measure_all(label_view(mod, mod.class_names.index(name)), view_bundle, x, lab, **kw)
        b_ = {}
        for nm, mod in bad_models.items():
            b_[nm] = measure_all(label_view(mod, mod.class_names.index(name)), view_bundle, x, lab, **kw)
        cal = calibrate(h, b_, min_separation=config.min_separation)
        edges += [e for e in cal.edges if e.class_name == name]
    assert cal is not None
    merged = dataclasses.replace(cal, edges=tuple(edges), scheme=f"{cal.scheme}; {LABEL_SCHEME}")
    first_label = np.array([s[0] if s else -1 for s in sets], dtype=np.int64)
    keep = stratified(first_label, max_thumbnails)
    return bundle.with_calibration(merged, thumbnails(first, x[keep]), first_label[keep])
