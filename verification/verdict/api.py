"""The one verify path (issue #16): :func:`verify` for the Python API, the CLI (local and Ray engines, through
:class:`verification.batch.VerifyJob`, which calls :func:`measure_batch` and :func:`assemble` below) and the
dashboard; :func:`calibrate_bundle` attaches the verdict's calibration to a reference bundle."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from verification.errors import ImageLoadError, InputTooLargeError, InvalidInputError, VerificationError
from verification.io.images import ImageInput, as_image, to_tensor
from verification.io.records import LoadedImage, LoadedModel
from verification.verdict.calibration import calibrate
from verification.verdict.combine import accuracy, combine, image_why
from verification.verdict.lines import evaluate_lines
from verification.verdict.measure import Measurements, MeasureSpec, measure_batch
from verification.verdict.records import Example, ImageEvidence, VerdictConfig, VerificationReport

if TYPE_CHECKING:
    from verification.reference import ReferenceBundle

log = logging.getLogger(__name__)

Masks = Sequence[np.ndarray | None] | None
Annotation = np.ndarray | Mapping[str, np.ndarray] | None
"""One image's finding annotation: a mask (any size), ``{label: mask}`` for a multi-label model, or None."""
Progress = Callable[[int, int], None]
LabelInput = str | int | Sequence[str | int] | None
"""One image's label: a class name or index, or None (unknown); for a multi-label model its label set (names
or indices, empty: none of the labels; a name; a "|"-separated string; or None)."""


def class_mismatch(model: LoadedModel, bundle: ReferenceBundle) -> str | None:
    """Why the model's classes cannot be compared with the bundle's (None when they can): every bundle class
    must be a model class and every model class but the garbage class a bundle class."""
    own = [c for c in model.class_names if c != model.garbage_class]
    if set(own) != set(bundle.class_names):
        return (
            f"the bundle's classes {list(bundle.class_names)} do not match the model's {own}: a bundle built "
            "for this model's classes is needed"
        )
    return None


def layer_for(model: LoadedModel, bundle: ReferenceBundle) -> tuple[str | None, list[str]]:
    """The bundle's layer when the model has it, else None (the model's default target layer) with a
    warning."""
    from verification.cam.layers import list_layers

    if bundle.layer is None:
        return None, []
    names = {li.name for li in list_layers(model.module, (1, model.in_channels, *model.input_size))}
    if bundle.layer in names:
        return str(bundle.layer), []
    return None, [f"the model has no layer '{bundle.layer}' (the bundle's); its default target layer is used"]


def measure_spec(
    model: LoadedModel, bundle: ReferenceBundle, config: VerdictConfig, gate: LoadedModel | None = None
) -> tuple[MeasureSpec, list[str]]:
    """Everything a measurement pass of ``model`` against ``bundle`` needs, with the warnings found."""
    from verification.verdict.gate import build_gate

    layer, found = layer_for(model, bundle)
    input_gate = None
    if bundle.thumbnails is not None and len(bundle.thumbnails) >= 5:
        try:
            input_gate = build_gate(model, bundle.thumbnails)
        except VerificationError as exc:
            found.append(f"the early-feature gate could not be built for this model: {exc}")
    else:
        found.append("the bundle stores no reference images: the E0 feature/image-statistics gate is off")
    spec = MeasureSpec(
        class_names=tuple(bundle.class_names),
        references=np.asarray(bundle.references, np.float32),
        has_reference=np.asarray(bundle.counts) > 0,
        grid=bundle.grid,
        metrics=tuple(bundle.metrics),
        threshold=bundle.threshold,
        method=bundle.method or "gradcam",
        layer=layer,
        gate=input_gate,
        gate_model=gate,
        faithfulness=config.faithfulness and _calibrated(bundle, "E6."),
        e6_steps=config.e6_steps,
        counterfactuals=config.counterfactuals,
    )
    return spec, found


def _calibrated(bundle: ReferenceBundle, prefix: str) -> bool:
    cal = getattr(bundle, "calibration", None)
    return cal is not None and any(e.key.startswith(prefix) and e.threshold is not None for e in cal.edges)


def label_indices(labels: Sequence[LabelInput] | None, class_names: Sequence[str], n: int) -> np.ndarray:
    """Labels (names, indices or None) → indices into ``class_names`` (−1: unknown or not a bundle class);
    InvalidInputError for a label set (a single-label model takes one class per image)."""
    out = np.full(n, -1, dtype=np.int64)
    if labels is None:
        return out
    for i, lab in enumerate(labels):
        if lab is None:
            continue
        if isinstance(lab, str):
            out[i] = list(class_names).index(lab) if lab in class_names else -1
        elif isinstance(lab, Sequence):
            raise InvalidInputError(
                f"image {i}'s label is a set of {len(lab)}: a single-label model takes one class per image"
            )
        else:
            out[i] = int(lab) if 0 <= int(lab) < len(class_names) else -1
    return out


def input_name(item: ImageInput, given: str | None = None) -> str:
    """How an image is named in the report: ``given``, a LoadedImage's name, the path, or "uploaded image"."""
    if given is not None:
        return given
    if isinstance(item, LoadedImage):
        return item.name
    return "uploaded image" if isinstance(item, bytes) else str(item)


def read_images(
    images: Sequence[ImageInput] | Tensor,
    model: LoadedModel,
    names: Sequence[str] | None = None,
    start: int = 0,
    stop: int | None = None,
) -> tuple[Tensor, list[int], list[str], list[tuple[str, str]]]:
    """Images ``start:stop`` as ``model``'s input batch: ``(x, the indices read, their names, (name, why) of
    each image that could not be read)``. A tensor is taken as already preprocessed; a file that cannot be
    read is skipped with its reason rather than stopping the run."""
    stop = len(images) if stop is None else stop
    idx = range(start, stop)
    if isinstance(images, Tensor):
        return images[start:stop].float(), list(idx), [names[i] if names else f"image {i}" for i in idx], []
    loaded, ok, errors = [], [], []
    for i in idx:
        given = names[i] if names else None
        try:
            loaded.append(as_image(images[i], given))
            ok.append(i)
        except (ImageLoadError, InputTooLargeError, OSError) as exc:
            errors.append((input_name(images[i], given), str(exc)))
    shown = [input_name(images[i], names[i] if names else None) for i in ok]
    return (to_tensor(loaded, model) if loaded else torch.empty(0)), ok, shown, errors


def _take(masks: Sequence[Any] | None, idx: Sequence[int]) -> list[Any] | None:
    """The masks of images ``idx`` (None when none were given)."""
    return [masks[i] for i in idx] if masks is not None else None


def verify(
    model: LoadedModel,
    bundle: ReferenceBundle,
    images: Sequence[ImageInput] | Tensor,
    labels: Sequence[LabelInput] | None = None,
    *,
    annotations: Sequence[Annotation] | None = None,
    anatomy: Masks = None,
    gate: LoadedModel | None = None,
    config: VerdictConfig | None = None,
    batch_size: int = 16,
    progress: Progress | None = None,
    names: Sequence[str] | None = None,
    examples: int = 8,
) -> VerificationReport:
    """Verify ``model`` on ``images`` against a reference ``bundle``: the evidence lines E0–E6 and the
    verdict.

    ``images``: LoadedImages, paths (read lazily; an unreadable file becomes an entry of ``errors``) or an
    already preprocessed (N, C, H, W) tensor; ``labels`` per image (class name, index or None);
    ``annotations`` per image a finding mask (lesion; any size; None = none annotated); ``anatomy`` per
    image a
    region-of-interest mask (None = automatic); ``gate`` a model with a garbage class that screens the inputs;
    ``names`` per image (required for bytes); ``examples`` maps kept for the report;
    ``progress(done, total)`` after each batch.
    E6 runs only when ``config.faithfulness`` and the bundle's calibration covers it (else it could not vote).

    A multi-label model (``model.task == "multilabel"``) gets one verdict per label
    (:func:`verification.verdict.multilabel.verify_labels`): ``labels[i]`` is then image i's label set (a list
    of names, a name, or None) and ``annotations[i]`` one mask or ``{label: mask}``.
    """
    config = config or VerdictConfig()
    n = len(images)
    warns: list[str] = list(getattr(bundle, "warnings", ()))
    mismatch = class_mismatch(model, bundle)
    if mismatch is not None:
        report = cannot_verify(model, bundle, config, mismatch, n, warns)
        return dataclasses.replace(report, task=model.task) if model.task == "multilabel" else report
    if model.task == "multilabel":  # one verdict per label, each on its binary task
        from verification.verdict.multilabel import verify_labels

        return verify_labels(
            model,
            bundle,
            images,
            labels,
            annotations=annotations,
            anatomy=anatomy,
            gate=gate,
            config=config,
            batch_size=batch_size,
            progress=progress,
            names=names,
            examples=examples,
            warnings=warns,
        )
    spec, found = measure_spec(model, bundle, config, gate)
    warns += found
    lab = label_indices(labels, bundle.class_names, n)
    parts: list[Measurements] = []
    errors: list[tuple[str, str]] = []
    done = 0
    for s in range(0, n, batch_size):
        x, ok, chunk_names, unread = read_images(images, model, names, s, min(s + batch_size, n))
        errors += unread
        if ok:
            lesions, roi = _take(annotations, ok), _take(anatomy, ok)
            parts.append(
                measure_batch(model, spec, x, names=chunk_names, labels=lab[ok], lesions=lesions, anatomy=roi)
            )
        done += min(s + batch_size, n) - s
        if progress is not None:
            progress(done, n)
    if not parts:
        why = "none of the images could be read" if n else "no images were given"
        return cannot_verify(model, bundle, config, why, n, warns, errors)
    m = Measurements.concat(parts)
    return assemble(m, model, bundle, config, warnings=warns, errors=errors, examples=examples)


def cannot_verify(
    model: LoadedModel,
    bundle: ReferenceBundle,
    config: VerdictConfig,
    why: str,
    n: int,
    warns: Sequence[str],
    errors: Sequence[tuple[str, str]] = (),
) -> VerificationReport:
    """A CANNOT VERIFY report without measurements, saying what is missing."""
    from verification.verdict.records import ClassVerdict

    classes = tuple(ClassVerdict(c, "cannot_verify", None, why, 0, 0, (why,)) for c in bundle.class_names)
    return VerificationReport(
        verdict="cannot_verify",
        deciding_line=None,
        reason=why,
        class_names=tuple(bundle.class_names),
        classes=classes,
        lines=(),
        images=(),
        accuracy=None,
        n_images=n,
        n_not_assessable=0,
        config=config,
        errors=tuple(errors),
        warnings=tuple(warns),
        missing=(why,),
        provenance=provenance(model, bundle),
    )


def reference_maps(bundle: ReferenceBundle) -> dict[str, np.ndarray]:
    """The bundle's reference map of each class that has one (a report shows them beside the maps)."""
    return {
        c: np.asarray(bundle.references[k]) for k, c in enumerate(bundle.class_names) if bundle.counts[k] > 0
    }


def provenance(model: LoadedModel, bundle: ReferenceBundle, roi: str | None = None) -> dict[str, Any]:
    from verification.cam.records import base_provenance

    return {
        "model": {
            "name": model.name,
            "content_hash": model.content_hash,
            "architecture": model.architecture,
            "class_names": list(model.class_names),
            "task": model.task,
            "input_size": list(model.input_size),
        },
        "bundle": {
            "method": bundle.method,
            "layer": bundle.layer,
            "grid": list(bundle.grid),
            "created": bundle.created,
            "model_hash": bundle.model_hash,
            "counts": [int(c) for c in bundle.counts],
            "schema_version": getattr(bundle, "schema_version", None),
            "calibration": None if bundle.calibration is None else bundle.calibration.scheme,
        },
        "anatomy": roi,
        **base_provenance(),
    }


def assemble(
    m: Measurements,
    model: LoadedModel,
    bundle: ReferenceBundle,
    config: VerdictConfig,
    *,
    warnings: Sequence[str] = (),
    errors: Sequence[tuple[str, str]] = (),
    examples: int = 8,
) -> VerificationReport:
    """The report of one run from its measurements: lines, combiner, per-image evidence."""
    lines = evaluate_lines(m, bundle.calibration, config, bundle.metrics, model.task == "multilabel")
    classes, verdict, deciding, reason, missing = combine(m, lines, config)
    acc, acc_ci = accuracy(m, config.confidence)
    images = []
    for i in range(m.n):
        images.append(
            ImageEvidence(
                name=m.names[i],
                label=m.class_names[m.labels[i]] if m.labels[i] >= 0 else None,
                predicted=m.model_classes[int(m.probs[i].argmax())] if m.probs.size else None,
                probabilities=tuple(float(p) for p in m.probs[i]),
                assessable=bool(m.assessable[i]),
                not_assessable_reason=m.gate_reasons[i],
                values={k: (float(v[i]) if np.isfinite(v[i]) else None) for k, v in m.values.items()},
                why=image_why(m, i),
            )
        )
    outside = m.values.get("E3.outside_energy", np.zeros(m.n))
    order = np.argsort(-np.nan_to_num(outside, nan=-1.0))[:examples]
    ex = tuple(
        Example(
            m.names[i],
            m.class_names[m.predicted[i]] if m.predicted[i] >= 0 else None,
            m.maps[i],
            note=images[i].why,
        )
        for i in order.tolist()
    )
    return VerificationReport(
        verdict=verdict,  # type: ignore[arg-type]
        deciding_line=deciding,
        reason=reason,
        class_names=tuple(m.class_names),
        classes=classes,
        lines=lines,
        images=tuple(images),
        accuracy=acc,
        accuracy_interval=acc_ci,
        n_images=m.n + len(errors),
        n_not_assessable=int((~m.assessable).sum()),
        config=config,
        errors=tuple(errors),
        warnings=tuple(dict.fromkeys(warnings)),
        missing=missing,
        examples=ex,
        references=reference_maps(bundle),
        provenance=provenance(model, bundle, m.roi_method),
    )


# ------------------------------------------------------------------------------------------ calibration


def randomised_model(model: LoadedModel, seed: int = 0) -> LoadedModel:
    """The cascading-randomised model (Adebayo et al. 2018), all steps applied: every parameter group of a
    deep copy re-initialised (:func:`verification.faithfulness.parameter_groups`); the known-bad reference
    every calibration has."""
    from verification.faithfulness import parameter_groups, reinit

    clone = copy.deepcopy(model.module)
    named = dict(clone.named_modules())
    gen = torch.Generator().manual_seed(seed)
    for g in parameter_groups(clone, 2):
        reinit(named[g], gen)
    return dataclasses.replace(
        model,
        module=clone.eval(),
        name=f"{model.name} (randomised)",
        content_hash=f"randomised:{model.content_hash}",
    )


def known_bad(
    first: LoadedModel, bad: Mapping[str, LoadedModel] | None, randomised: bool
) -> dict[str, LoadedModel]:
    """The known-bad references of a calibration: ``bad``, plus the cascading-randomised copy of the first
    healthy model when ``randomised``."""
    out = dict(bad or {})
    if randomised:
        out["randomised"] = randomised_model(first)
    return out


def measure_all(
    model: LoadedModel,
    bundle: ReferenceBundle,
    images: Sequence[ImageInput] | Tensor,
    labels: Sequence[LabelInput],
    *,
    annotations: Masks = None,
    anatomy: Masks = None,
    config: VerdictConfig | None = None,
    batch_size: int = 16,
) -> Measurements:
    """Measurements of one model on labelled images (the calibration pass; no gate: reference data)."""
    config = config or VerdictConfig()
    spec, _ = measure_spec(model, bundle, config)
    spec = dataclasses.replace(spec, gate=None, faithfulness=config.faithfulness)
    lab = label_indices(labels, bundle.class_names, len(images))
    parts = []
    for s in range(0, len(images), batch_size):
        idx = list(range(s, min(s + batch_size, len(images))))
        if isinstance(images, Tensor):
            x, nm = images[s : s + batch_size].float(), [f"image {i}" for i in idx]
        else:  # reference data: an unreadable image stops the calibration
            loaded = [as_image(images[i]) for i in idx]
            x, nm = to_tensor(loaded, model), [im.name for im in loaded]
        lesions, roi = _take(annotations, idx), _take(anatomy, idx)
        parts.append(measure_batch(model, spec, x, names=nm, labels=lab[idx], lesions=lesions, anatomy=roi))
    return Measurements.concat(parts)


def calibrate_bundle(
    bundle: ReferenceBundle,
    healthy: Mapping[str, LoadedModel],
    images: Sequence[ImageInput] | Tensor,
    labels: Sequence[LabelInput],
    *,
    bad: Mapping[str, LoadedModel] | None = None,
    annotations: Masks = None,
    anatomy: Masks = None,
    config: VerdictConfig | None = None,
    randomised: bool = True,
    batch_size: int = 16,
    max_thumbnails: int = 64,
) -> ReferenceBundle:
    """The bundle with the verdict's calibration attached (and the E0 gate's reference thumbnails).

    ``healthy``: trusted models of the same task (several: their spread; one: a bootstrap over images);
    ``bad``: known-bad references (shortcut models, ...); ``randomised`` adds the cascading-randomised copy of
    the first healthy model. ``images`` / ``labels`` (and ``annotations`` / ``anatomy`` masks): a labelled
    calibration set, ideally not the set the verdict will be run on. At most ``max_thumbnails`` of its images
    (taken in turn from each class, in order) are stored as the E0 gate's 128-px reference thumbnails."""
    from verification.verdict.gate import thumbnails

    config = config or VerdictConfig()
    first = next(iter(healthy.values()))
    if first.task == "multilabel":  # each label's edges from its binary task
        from verification.verdict.multilabel import calibrate_labels

        return calibrate_labels(
            bundle,
            healthy,
            images,
            labels,
            bad=bad,
            annotations=annotations,
            anatomy=anatomy,
            config=config,
            randomised=randomised,
            batch_size=batch_size,
            max_thumbnails=max_thumbnails,
        )
    bad_models = known_bad(first, bad, randomised)
    kw = dict(annotations=annotations, anatomy=anatomy, config=config, batch_size=batch_size)
    h = {name: measure_all(mod, bundle, images, labels, **kw) for name, mod in healthy.items()}  # type: ignore[arg-type]
    b = {name: measure_all(mod, bundle, images, labels, **kw) for name, mod in bad_models.items()}  # type: ignore[arg-type]
    cal = calibrate(h, b, min_separation=config.min_separation)
    lab = label_indices(labels, bundle.class_names, len(images))
    keep = stratified(lab, max_thumbnails)
    x = (
        images[keep].float()
        if isinstance(images, Tensor)
        else to_tensor([as_image(images[i]) for i in keep], first)
    )
    return bundle.with_calibration(cal, thumbnails(first, x), lab[keep])


def stratified(labels: np.ndarray, cap: int) -> list[int]:
    """Up to ``cap`` indices, taken in turn from each label's images (in order)."""
    groups = [list(np.nonzero(labels == k)[0]) for k in sorted(set(labels.tolist()))]
    out: list[int] = []
    while len(out) < cap and any(groups):
        for g in groups:
            if g and len(out) < cap:
                out.append(int(g.pop(0)))
    return sorted(out)
