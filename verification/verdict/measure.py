"""Per-image measurements behind the evidence lines (METHODS.md §3): one pass over a batch of model inputs.

For a batch ``x`` (N, C, H, W) of one model this computes, per image:

* the prediction (softmax; sigmoid for multi-label models) and the attention map of the predicted class (the
  bundle's method and layer) on the bundle's comparison grid;
* **E0** the input-validity gate: garbage class (the model's own, or a gate model's), early feature-map
  shift of
  the model under test against its own features on the bundle's stored reference images, and a model-free
  image-statistics shift; a gated image is *not assessable*;
* **E2** localisation gain: attention energy inside the annotated finding minus the best trivial baseline
  (a uniform map: the mask's area share; the run's mean map of the class, leave-one-out — filled in when the
  line is evaluated, as it needs every map);
* **E3** reliance outside the anatomy: attention energy outside the region of interest; the drop of the
  predicted
  class's probability when everything outside the region is neutralised; that probability when the region
  itself is neutralised ("survival"); its drop when only the fine texture inside the region is blurred away
  (a cue inside the anatomy: grain, a grating);
* **E4** finding counterfactual: the drop of the labelled class's probability when the annotated finding is
  inpainted from its surroundings;
* **E5** the seven metrics of the map against the bundle's reference of the predicted class;
* **E6** faithfulness gain: (insertion − deletion area) of the map minus that of a random pixel order.

Cost per image: one forward + backward (the map), 3 forwards (E3), 1 per annotated image (E4),
4 × (steps + 1) forwards for E6 (half for the map, half for the random order), 1 forward per gate model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from verification.io.records import LoadedModel
from verification.metrics import METRICS, compute_metrics
from verification.metrics.functional import Threshold

if TYPE_CHECKING:
    from verification.verdict.gate import InputGate

# ------------------------------------------------------------------------------------------- quantities


@dataclass(frozen=True)
class Quantity:
    """A per-image number of a line: direction, possible range, and whether its threshold is calibrated
    (on healthy variation) or stated (``stated``: a fixed edge such as "better than the baseline")."""

    key: str
    line: str
    higher_is_better: bool
    range: tuple[float, float]
    description: str
    stated: float | None = None


def _quantities() -> dict[str, Quantity]:
    q = [
        Quantity(
            "E2.localisation_gain",
            "E2",
            True,
            (-1.0, 1.0),
            "attention energy inside the annotated finding minus the best trivial baseline map",
            0.0,
        ),
        Quantity(
            "E3.outside_energy",
            "E3",
            False,
            (0.0, 1.0),
            "share of attention energy outside the anatomical region of interest",
        ),
        Quantity(
            "E3.outside_drop",
            "E3",
            False,
            (-1.0, 1.0),
            "fall of the predicted class's probability when everything outside the anatomy is neutralised",
        ),
        Quantity(
            "E3.inside_survival",
            "E3",
            False,
            (0.0, 1.0),
            "probability of the predicted class left when the anatomy itself is neutralised",
        ),
        Quantity(
            "E3.texture_drop",
            "E3",
            False,
            (-1.0, 1.0),
            "fall of the predicted class's probability when only the fine texture inside the anatomy is "
            "blurred away (findings keep their shape)",
        ),
        Quantity(
            "E4.finding_drop",
            "E4",
            True,
            (-1.0, 1.0),
            "fall of the labelled class's probability when the annotated finding is inpainted",
        ),
        Quantity(
            "E6.faithfulness_gain",
            "E6",
            True,
            (-1.0, 1.0),
            "insertion − deletion area of the map minus that of a random pixel order",
        ),
    ]
    for name, spec in METRICS.items():
        q.append(
            Quantity(
                f"E5.{name}",
                "E5",
                spec.higher_is_better,
                spec.range,
                f"{spec.label} of the map against the reference map of its class",
            )
        )
    return {x.key: x for x in q}


QUANTITIES: dict[str, Quantity] = _quantities()


# ------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ImageMeasurement:
    """One image's row of :class:`Measurements` (how a batch job's results cross process boundaries:
    numbers, strings and arrays only). ``label`` / ``predicted`` −1 when unknown; ``probs`` (K,);
    ``gate_reason`` "" when assessable; ``values`` / ``gate`` per quantity (NaN where not measured); ``map``
    and ``lesion`` (h, w) on the comparison grid."""

    name: str
    label: int
    predicted: int
    probs: np.ndarray
    assessable: bool
    gate_reason: str
    has_finding: bool
    values: dict[str, float]
    gate: dict[str, float]
    map: np.ndarray
    lesion: np.ndarray
    roi_method: str


@dataclass(frozen=True)
class Measurements:
    """Per-image measurements of one model on one image set (arrays of length N).

    ``labels`` / ``predicted`` index ``class_names`` (the bundle's classes; −1: unknown label, or a prediction
    outside them such as a garbage class); ``probs`` (N, K) over ``model_classes``; ``assessable`` the E0 gate
    and ``gate_reasons`` why not; ``has_finding`` an annotation exists; ``values[key]`` (N,) per quantity
    (NaN where not measured); ``maps`` (N, h, w) the attention maps on the comparison grid; ``lesions`` (N,
    h, w)
    the annotations on that grid (zeros without one).
    """

    names: tuple[str, ...]
    class_names: tuple[str, ...]
    model_classes: tuple[str, ...]
    labels: np.ndarray
    predicted: np.ndarray
    probs: np.ndarray
    assessable: np.ndarray
    gate_reasons: tuple[str | None, ...]
    has_finding: np.ndarray
    values: Mapping[str, np.ndarray]
    maps: np.ndarray
    lesions: np.ndarray
    roi_method: str = "none"
    gate_numbers: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def group(self) -> np.ndarray:
        """The class each image's evidence counts for: its label when known, else its prediction."""
        return np.where(self.labels >= 0, self.labels, self.predicted)

    @classmethod
    def concat(cls, parts: Sequence[Measurements]) -> Measurements:
        if not parts:
            raise ValueError("Measurements.concat needs at least one part")
        first = parts[0]
        keys = sorted({k for p in parts for k in p.values})
        gkeys = sorted({k for p in parts for k in p.gate_numbers})

        def col(p: Measurements, src: Mapping[str, np.ndarray], k: str) -> np.ndarray:
            return src.get(k, np.full(p.n, np.nan))

        return cls(
            names=tuple(n for p in parts for n in p.names),
            class_names=first.class_names,
            model_classes=first.model_classes,
            labels=np.concatenate([p.labels for p in parts]),
            predicted=np.concatenate([p.predicted for p in parts]),
            probs=np.concatenate([p.probs for p in parts]),
            assessable=np.concatenate([p.assessable for p in parts]),
            gate_reasons=tuple(r for p in parts for r in p.gate_reasons),
            has_finding=np.concatenate([p.has_finding for p in parts]),
            values={k: np.concatenate([col(p, p.values, k) for p in parts]) for k in keys},
            maps=np.concatenate([p.maps for p in parts]),
            lesions=np.concatenate([p.lesions for p in parts]),
            roi_method=", ".join(sorted({p.roi_method for p in parts})),
            gate_numbers={k: np.concatenate([col(p, p.gate_numbers, k) for p in parts]) for k in gkeys},
        )

    def rows(self) -> list[ImageMeasurement]:
        """One :class:`ImageMeasurement` per image (the inverse of :meth:`from_rows`)."""
        return [
            ImageMeasurement(
                name=self.names[i],
                label=int(self.labels[i]),
                predicted=int(self.predicted[i]),
                probs=self.probs[i].astype(np.float32),
                assessable=bool(self.assessable[i]),
                gate_reason=self.gate_reasons[i] or "",
                has_finding=bool(self.has_finding[i]),
                values={k: float(v[i]) for k, v in self.values.items()},
                gate={k: float(v[i]) for k, v in self.gate_numbers.items()},
                map=self.maps[i].astype(np.float32),
                lesion=self.lesions[i].astype(np.float32),
                roi_method=self.roi_method,
            )
            for i in range(self.n)
        ]

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[ImageMeasurement],
        class_names: Sequence[str],
        model_classes: Sequence[str],
        grid: tuple[int, int],
    ) -> Measurements:
        n = len(rows)
        keys = sorted({k for r in rows for k in r.values})
        gkeys = sorted({k for r in rows for k in r.gate})

        def arr(key: str, dtype: Any) -> np.ndarray:
            return np.array([getattr(r, key) for r in rows], dtype=dtype).reshape(n)

        def stack(key: str, shape: tuple[int, ...]) -> np.ndarray:
            if not n:
                return np.zeros((0, *shape), np.float32)
            return np.stack([np.asarray(getattr(r, key), np.float32) for r in rows])

        return cls(
            names=tuple(str(r.name) for r in rows),
            class_names=tuple(class_names),
            model_classes=tuple(model_classes),
            labels=arr("label", np.int64),
            predicted=arr("predicted", np.int64),
            probs=stack("probs", (len(model_classes),)),
            assessable=arr("assessable", bool),
            gate_reasons=tuple((str(r.gate_reason) or None) for r in rows),
            has_finding=arr("has_finding", bool),
            values={k: np.array([float(r.values.get(k, np.nan)) for r in rows]) for k in keys},
            maps=stack("map", grid),
            lesions=stack("lesion", grid),
            roi_method=", ".join(sorted({str(r.roi_method) for r in rows})) if rows else "none",
            gate_numbers={k: np.array([float(r.gate.get(k, np.nan)) for r in rows]) for k in gkeys},
        )


# ------------------------------------------------------------------------------------------- helpers


def probabilities(model: LoadedModel, logits: Tensor | np.ndarray) -> np.ndarray:
    """Softmax over classes, or per-label sigmoid for a multi-label model."""
    t = torch.as_tensor(np.asarray(logits), dtype=torch.float32)
    p = torch.sigmoid(t) if model.task == "multilabel" else t.softmax(1)
    return p.numpy()


def forward_probs(model: LoadedModel, x: Tensor, chunk: int = 64) -> np.ndarray:
    """:func:`probabilities` of ``model`` on ``x`` (N, C, H, W), forwarded in eval mode ``chunk`` rows at a
    time (each in batch sizes the model accepts); (0, K) for an empty batch."""
    from verification.cam.chunking import run_chunked
    from verification.cam.layers import eval_mode

    out = []
    with eval_mode(model.module), torch.inference_mode():
        for s in range(0, len(x), chunk):  # run_chunked: in batch sizes the model accepts
            out.append(run_chunked(model, x[s : s + chunk], model.module).float())
    return probabilities(model, torch.cat(out)) if out else np.zeros((0, model.num_classes), np.float32)


def masks_to_size(masks: Sequence[np.ndarray | None], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-image masks of any size (None: absent) → (N, H, W) float32 in {0, 1} at ``size`` (nearest) and
    a (N,) flag of which were given (and non-empty)."""
    out = np.zeros((len(masks), *size), np.float32)
    given = np.zeros(len(masks), bool)
    for i, m in enumerate(masks):
        if m is None:
            continue
        a = np.asarray(m, dtype=np.float32)
        if a.ndim == 3:
            a = a.max(axis=2)
        t = torch.from_numpy((a > 0.5).astype(np.float32))[None, None]
        r = F.interpolate(t, size=size, mode="nearest")[0, 0].numpy()
        out[i] = r
        given[i] = bool(r.any())
    return out, given


def energy_share(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Σ map·mask / Σ map per image (NaN for an all-zero map); maps and masks (N, H, W) on one grid."""
    total = maps.reshape(len(maps), -1).sum(1)
    inside = (maps * masks).reshape(len(maps), -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.maximum(total, 1e-12), np.nan)


def to_grid(maps: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    from verification.reference import to_grid as _tg

    if len(maps) == 0:
        return np.zeros((0, *grid), np.float32)
    return _tg(maps, grid)


def mask_grid(masks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    if len(masks) == 0:
        return np.zeros((0, *grid), np.float32)
    t = torch.from_numpy(masks.astype(np.float32))[:, None]
    return F.interpolate(t, size=grid, mode="area")[:, 0].numpy()


# ------------------------------------------------------------------------------------------- counterfactuals


def region_masks(
    model: LoadedModel, x: Tensor, provided: Sequence[np.ndarray | None]
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Anatomical region of interest per image at the input size: (masks (N, H, W) float32, ok (N,), sources,
    aerated lung fields (N, H, W): the pixels a finding is refilled from, zeros where the method has none).

    A provided mask is used as given; otherwise :func:`verification.anatomy.anatomy_roi` finds one (lung
    fields, else the body) and says which method it used; a failure leaves the image without a region (E3 is
    then not measured on it)."""
    from verification.anatomy import anatomy_roi
    from verification.verdict.gate import unit_images

    grey = unit_images(model, x)[:, 0].numpy()
    size = (int(model.input_size[0]), int(model.input_size[1]))
    out = np.zeros((len(x), *size), np.float32)
    fields = np.zeros((len(x), *size), np.float32)
    ok = np.zeros(len(x), bool)
    sources: list[str] = []
    for i in range(len(x)):
        roi = anatomy_roi(grey[i], mask=None if provided[i] is None else np.asarray(provided[i]) > 0.5)
        sources.append(roi.source)
        if roi.ok and roi.mask is not None:
            m, _ = masks_to_size([roi.mask.astype(np.float32)], size)
            out[i] = m[0]
            ok[i] = bool(0 < m[0].mean() < 1)
            aerated = getattr(roi, "fields", None)
            if aerated is not None:
                fields[i] = masks_to_size([np.asarray(aerated, np.float32)], size)[0][0]
    return out, ok, sources, fields


def _pixel_edit(model: LoadedModel, x: Tensor, edit: Any) -> Tensor:
    """Apply ``edit(plane (H, W) in [0, 1], i) -> plane`` to every channel of every image in pixel space (the
    model's normalisation undone, then redone)."""
    mean = torch.tensor(model.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(model.std, dtype=x.dtype).view(1, -1, 1, 1)
    unit = (x * std + mean).numpy().astype(np.float64)
    out = np.empty_like(unit)
    for i in range(len(unit)):
        for c in range(unit.shape[1]):
            out[i, c] = edit(unit[i, c], i)
    return (torch.from_numpy(out.astype(np.float32)) - mean) / std


TEXTURE_SIGMA = 0.02
"""σ of the mild blur inside the anatomy (× the shorter side: 4.5 px at 224): fine texture (a grating, grain)
goes, a nodule or an effusion keeps its shape; healthy demo models keep their accuracy on blurred films."""


def _blur_inside(model: LoadedModel, x: Tensor, roi: np.ndarray) -> Tensor:
    """``x`` with the anatomy's fine texture blurred away (a Gaussian of ``TEXTURE_SIGMA`` × side over the
    region's own pixels, :func:`verification.counterfactual.neutralise_inside`); outside unchanged."""
    from verification.counterfactual import neutralise_inside

    keep = roi > 0.5
    return _pixel_edit(model, x, lambda p, i: neutralise_inside(p, keep[i], fill="blur", sigma=TEXTURE_SIGMA))


def _neutralise(model: LoadedModel, x: Tensor, roi: np.ndarray, *, inside: bool) -> Tensor:
    """``x`` with the anatomy (``inside``) or everything outside it neutralised by
    :mod:`verification.counterfactual`, with its defaults: outside → a Gaussian blur of the outside's own
    pixels (σ = 0.08 × side: a token or text there is smeared away, nothing new is added; a flat fill would
    itself shift healthy models — measured by ``python -m bench.counterfactual``); inside → the region's own
    median. Kept pixels are unchanged."""
    from verification.counterfactual import neutralise_inside, neutralise_outside

    keep = roi > 0.5
    if inside:
        return _pixel_edit(model, x, lambda p, i: neutralise_inside(p, keep[i]))
    return _pixel_edit(model, x, lambda p, i: neutralise_outside(p, keep[i]))


def _inpaint(model: LoadedModel, x: Tensor, lesion: np.ndarray, roi: np.ndarray | None = None) -> Tensor:
    """``x`` with the annotated finding inpainted from its surroundings
    (:func:`verification.counterfactual.remove_finding`, drawn from the anatomy when it is known)."""
    from verification.counterfactual import remove_finding

    les = lesion > 0.5
    src = None if roi is None else roi > 0.5

    def edit(p: np.ndarray, i: int) -> np.ndarray:
        s = None if src is None or not src[i].any() else src[i]
        return np.asarray(remove_finding(p, les[i], sources=s))

    return _pixel_edit(model, x, edit)


# ------------------------------------------------------------------------------------------- the batch


@dataclass(frozen=True)
class MeasureSpec:
    """What a measurement pass needs besides the images: the bundle's classes, references, grid, method and
    layer, the E0 gate, an optional gate model, and whether to run E6."""

    class_names: tuple[str, ...]
    references: np.ndarray  # (K, h, w), zeros where the bundle has no reference
    has_reference: np.ndarray  # (K,) bool
    grid: tuple[int, int]
    metrics: tuple[str, ...]
    threshold: Threshold
    method: str = "gradcam"
    layer: str | None = None
    gate: InputGate | None = None
    gate_model: LoadedModel | None = None
    faithfulness: bool = True
    e6_steps: int = 6
    counterfactuals: bool = True
    seed: int = 0


def measure_batch(
    model: LoadedModel,
    spec: MeasureSpec,
    x: Tensor,
    *,
    names: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    lesions: Sequence[np.ndarray | None] | None = None,
    anatomy: Sequence[np.ndarray | None] | None = None,
) -> Measurements:
    """Every per-image quantity of the lines for the batch ``x`` (N, C, H, W); ``labels`` index
    ``spec.class_names`` (−1 unknown); ``lesions`` / ``anatomy`` per-image masks (None: absent /
    automatic)."""
    from verification.cam import compute_cams
    from verification.verdict.gate import apply_gate

    n = len(x)
    size = (int(model.input_size[0]), int(model.input_size[1]))
    lab = np.asarray(labels, dtype=np.int64).reshape(n)
    res = compute_cams(model, x, methods=(spec.method,), layers=None if spec.layer is None else [spec.layer])[
        0
    ]
    probs = probabilities(model, res.logits)
    model_pred = probs.argmax(1)
    by_name = {c: k for k, c in enumerate(spec.class_names)}
    pred = np.array([by_name.get(model.class_names[p], -1) for p in model_pred], dtype=np.int64)
    assessable, reasons, gate_numbers = apply_gate(spec.gate, model, x, probs, spec.gate_model)
    maps_full = np.asarray(res.maps, np.float32)
    values: dict[str, np.ndarray] = {}

    # E3: attention outside the anatomy and the two neutralisations.
    roi, roi_ok, sources, fields = region_masks(
        model, x, list(anatomy) if anatomy is not None else [None] * n
    )
    roi_ok = roi_ok & assessable  # gated images (E0) are never evidence: no counterfactuals for them
    outside = energy_share(maps_full, 1.0 - roi)
    values["E3.outside_energy"] = np.where(roi_ok, outside, np.nan)
    p_pred = probs[np.arange(n), model_pred]
    if roi_ok.any() and spec.counterfactuals:
        ok_idx = np.nonzero(roi_ok)[0]
        p_out = np.full_like(probs, np.nan)
        p_in = np.full_like(probs, np.nan)
        p_out[ok_idx] = forward_probs(model, _neutralise(model, x[ok_idx], roi[ok_idx], inside=False))
        p_in[ok_idx] = forward_probs(model, _neutralise(model, x[ok_idx], roi[ok_idx], inside=True))
        values["E3.outside_drop"] = np.where(roi_ok, p_pred - p_out[np.arange(n), model_pred], np.nan)
        values["E3.inside_survival"] = np.where(roi_ok, p_in[np.arange(n), model_pred], np.nan)
        p_tex = np.full_like(probs, np.nan)
        p_tex[ok_idx] = forward_probs(model, _blur_inside(model, x[ok_idx], roi[ok_idx]))
        values["E3.texture_drop"] = np.where(roi_ok, p_pred - p_tex[np.arange(n), model_pred], np.nan)
    else:
        values["E3.outside_drop"] = np.full(n, np.nan)
        values["E3.inside_survival"] = np.full(n, np.nan)
        values["E3.texture_drop"] = np.full(n, np.nan)

    # E4: inpaint the annotated finding; the labelled class's probability should fall.
    les_full, has = masks_to_size(list(lesions) if lesions is not None else [None] * n, size)
    values["E4.finding_drop"] = np.full(n, np.nan)
    model_lab = np.array(
        [model.class_names.index(spec.class_names[k]) if k >= 0 else -1 for k in lab], dtype=np.int64
    )
    use = has & (model_lab >= 0) & spec.counterfactuals & assessable
    if use.any():
        idx = np.nonzero(use)[0]
        src = fields[idx]  # the aerated lung fields (an effusion is refilled from the lung above it)
        p_f = forward_probs(model, _inpaint(model, x[idx], les_full[idx], src))
        values["E4.finding_drop"][idx] = probs[idx, model_lab[idx]] - p_f[np.arange(len(idx)), model_lab[idx]]

    # E2 (raw energies; the baselines are applied when the line is evaluated).
    grid = to_grid(maps_full, spec.grid)
    les_grid = mask_grid(les_full, spec.grid)
    values["E2.energy_inside"] = np.where(has, energy_share(grid, les_grid), np.nan)

    # E5: the seven metrics against the reference of the predicted class.
    ref_ok = (pred >= 0) & spec.has_reference[np.maximum(pred, 0)]
    for m in spec.metrics:
        values[f"E5.{m}"] = np.full(n, np.nan)
    if ref_ok.any():
        idx = np.nonzero(ref_ok)[0]
        got = compute_metrics(
            grid[idx], spec.references[pred[idx]], spec.metrics, threshold=spec.threshold, size=None
        )
        for m in spec.metrics:
            values[f"E5.{m}"][idx] = np.asarray(got[m], np.float64)

    # E6: deletion/insertion of the map against a random pixel order.
    if spec.faithfulness:
        from verification.faithfulness import deletion_insertion

        tgt = [int(t) for t in model_pred]
        cur = deletion_insertion(model, x, maps_full, target=tgt, steps=spec.e6_steps)
        # One fixed random pixel order (seeded) for every image, so the numbers do not depend on batching.
        gen = torch.Generator().manual_seed(spec.seed)
        rnd = np.repeat(torch.rand(size, generator=gen).numpy()[None], n, axis=0)
        base = deletion_insertion(model, x, rnd, target=tgt, steps=spec.e6_steps)
        gain = (cur.insertion_auc - cur.deletion_auc) - (base.insertion_auc - base.deletion_auc)
        values["E6.faithfulness_gain"] = gain.astype(np.float64)

    return Measurements(
        names=tuple(names),
        class_names=spec.class_names,
        model_classes=tuple(model.class_names),
        labels=lab,
        predicted=pred,
        probs=probs.astype(np.float32),
        assessable=assessable,
        gate_reasons=tuple(reasons),
        has_finding=has,
        values=values,
        maps=grid.astype(np.float32),
        lesions=les_grid.astype(np.float32),
        roi_method=", ".join(sorted(set(sources))),
        gate_numbers=gate_numbers,
    )
