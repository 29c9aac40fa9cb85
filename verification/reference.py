"""Reference bundles: per-class reference maps, the seven-metric comparison (E5), the verdict's calibration.

A :class:`ReferenceBundle` holds one reference map per class — the mean normalised CAM over the correctly
classified images of a trusted reference set (or the mean annotation mask, or another model's maps) — together
with the per-image maps it came from and their leave-one-out metric values. Since schema 2 it also carries the
verdict's :class:`~verification.verdict.calibration.Calibration` (thresholds from healthy variation with their
power against known-bad references, METHODS.md §3) and small uint8 thumbnails of the reference images, from
which the input gate (E0) compares the early feature maps of the model under test. Schema-1 bundles still
load; they say they lack the calibration, and the lines that need it are not assessable.

The per-image leave-one-out values and bands (``calib_values``, ``bands_lo`` / ``bands_hi``,
:class:`VerdictParams`) are part of the schema-2 file format and are written and read with the bundle; no
verdict reads them. **The verdict is** :func:`verification.verify` (:mod:`verification.verdict`), from the
bundle's references and its calibration.

Bundles are saved as ``<stem>.npz`` (arrays) + ``<stem>.json`` (manifest with ``schema_version``, the model's
content hash, architecture, method, layer, preprocessing, class names, bands, parameters, calibration,
creation time); :func:`load_bundle_bytes` reads them from bytes (uploads).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from verification.errors import BundleError, ShapeError
from verification.io.records import LoadedImage, LoadedModel
from verification.metrics import DEFAULT_METRICS, DEFAULT_SIZE, METRICS, compute_metrics
from verification.metrics.functional import Threshold, as_batch, check_grid, normalize_maps, resize_maps
from verification.verdict.calibration import Calibration

log = logging.getLogger(__name__)

SCHEMA_NAME = "verification.reference.ReferenceBundle"
SCHEMA_VERSION = 2
READS_VERSIONS = (1, 2)
_ARRAYS = ("references", "counts", "maps", "calib_labels", "calib_values", "bands_lo", "bands_hi")
_OPTIONAL_ARRAYS = ("thumbnails", "thumb_labels")


@dataclass(frozen=True)
class VerdictParams:
    """The parameters of a bundle's leave-one-out bands, stored in its manifest (``"params"``).

    ``similarity_percentile`` / ``distance_percentile``: band edges of the leave-one-out spread;
    ``min_class_count``: classes with fewer calibration images use bands pooled over classes.
    ``min_flags`` / ``max_flagged_share`` / ``nan_flags`` are the first release's flag-share rule: no verdict
    reads them any more; they stay so that every schema-2 manifest reads back and is written unchanged.
    """

    similarity_percentile: float = 5.0
    distance_percentile: float = 95.0
    min_flags: int = 4
    max_flagged_share: float = 0.20
    nan_flags: bool = True
    min_class_count: int = 5


@dataclass(frozen=True)
class ReferenceBundle:
    """Per-class reference maps with their calibration bands.

    ``references`` (K, h, w) float32 in [0, 1] on the comparison grid (zeros where ``counts`` is 0);
    ``maps`` (M, h, w) the per-image maps behind them, ``calib_labels`` (M,) their class indices and
    ``calib_values`` (M, n_metrics) their leave-one-out metric values; ``bands_lo`` / ``bands_hi``
    (K, n_metrics) the in-distribution band per class and metric (−inf / +inf on the side a metric is not
    flagged); ``band_source[k]`` is "class" or "pooled". ``warnings`` lists mismatches found by
    :func:`load_bundle`.
    """

    class_names: tuple[str, ...]
    references: np.ndarray
    counts: np.ndarray
    maps: np.ndarray
    calib_labels: np.ndarray
    calib_values: np.ndarray
    bands_lo: np.ndarray
    bands_hi: np.ndarray
    band_source: tuple[str, ...]
    metrics: tuple[str, ...] = DEFAULT_METRICS
    threshold: Threshold = 0.5
    params: VerdictParams = field(default_factory=VerdictParams)
    source: str = "maps"
    method: str | None = None
    layer: str | None = None
    model_hash: str | None = None
    architecture: str | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    warnings: tuple[str, ...] = ()
    calibration: Calibration | None = None
    thumbnails: np.ndarray | None = None
    thumb_labels: np.ndarray | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def grid(self) -> tuple[int, int]:
        return (int(self.references.shape[1]), int(self.references.shape[2]))

    def band(self, class_name: str) -> dict[str, tuple[float, float]]:
        """``{metric: (lo, hi)}`` of one class."""
        k = self.class_names.index(class_name)
        return {
            m: (float(self.bands_lo[k, j]), float(self.bands_hi[k, j])) for j, m in enumerate(self.metrics)
        }

    def save(self, path: str | Path) -> Path:
        """Write ``<stem>.npz`` and ``<stem>.json``; returns the ``.npz`` path."""
        npz, manifest = _paths(path)
        npz.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {name: np.asarray(getattr(self, name)) for name in _ARRAYS}
        for name in _OPTIONAL_ARRAYS:
            if getattr(self, name) is not None:
                arrays[name] = np.asarray(getattr(self, name))
        np.savez_compressed(npz, **arrays)
        doc = {
            "schema": SCHEMA_NAME,
            "schema_version": SCHEMA_VERSION,
            "arrays": npz.name,
            "class_names": list(self.class_names),
            "metrics": list(self.metrics),
            "threshold": self.threshold,
            "params": asdict(self.params),
            "source": self.source,
            "method": self.method,
            "layer": self.layer,
            "model_hash": self.model_hash,
            "architecture": self.architecture,
            "preprocessing": self.preprocessing,
            "grid": list(self.grid),
            "counts": [int(c) for c in self.counts],
            "bands": {
                name: self.band(name) | {"source": self.band_source[k]}
                for k, name in enumerate(self.class_names)
            },
            "created": self.created,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "reference_images": 0 if self.thumbnails is None else len(self.thumbnails),
        }
        manifest.write_text(json.dumps(doc, indent=2, default=_json_default))
        return npz

    def with_calibration(
        self, calibration: Calibration | None, thumbnails: np.ndarray | None = None,
        thumb_labels: np.ndarray | None = None,
    ) -> ReferenceBundle:  # fmt: skip
        """The bundle with the verdict's calibration (and the E0 gate's reference thumbnails) attached."""
        return replace(
            self, calibration=calibration,
            thumbnails=self.thumbnails if thumbnails is None else np.asarray(thumbnails, np.uint8),
            thumb_labels=self.thumb_labels if thumb_labels is None else np.asarray(thumb_labels, np.int64),
            schema_version=SCHEMA_VERSION,
        )  # fmt: skip


def _json_default(o: object) -> object:
    if isinstance(o, tuple):
        return list(o)
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
    return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")


# ------------------------------------------------------------------------------------------------- building
def to_grid(maps: np.ndarray | torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """(N, H, W) | (H, W) maps -> (N, h, w) float32 in [0, 1] on the comparison grid (normalise, resize,
    normalise again: the same preparation :func:`compute_metrics` applies)."""
    t = normalize_maps(as_batch(maps).to(torch.float32))
    return normalize_maps(resize_maps(t, grid)).numpy()


def _class_indices(labels: Sequence[str | int] | np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    out = []
    for lab in labels:
        if isinstance(lab, str):
            if lab not in class_names:
                raise BundleError(f"label {lab!r} is not one of the classes {list(class_names)}")
            out.append(class_names.index(lab))
        else:
            i = int(lab)
            if not 0 <= i < len(class_names):
                raise BundleError(f"label index {i} is outside the {len(class_names)} classes")
            out.append(i)
    return np.asarray(out, dtype=np.int64)


def _directions(metrics: Sequence[str]) -> np.ndarray:
    return np.array([METRICS[m].higher_is_better for m in metrics], dtype=bool)


def compute_bands(
    values: np.ndarray, labels: np.ndarray, n_classes: int, metrics: Sequence[str], params: VerdictParams
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Per-class band (lo, hi) per metric from calibration ``values`` (M, n_metrics): the lower percentile for
    similarities (hi = +inf), the upper one for distances (lo = −inf); NaN values are ignored; classes with
    fewer than ``params.min_class_count`` finite values use the bands of all classes pooled."""
    up = _directions(metrics)
    m = len(metrics)

    def edges(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo = np.full(m, -np.inf)
        hi = np.full(m, np.inf)
        for j in range(m):  # m ≤ a handful of metrics
            col = v[:, j][np.isfinite(v[:, j])]
            if col.size == 0:
                lo[j] = hi[j] = np.nan
            elif up[j]:
                lo[j] = np.percentile(col, params.similarity_percentile)
            else:
                hi[j] = np.percentile(col, params.distance_percentile)
        return lo, hi

    pooled = edges(values)
    los, his, source = np.empty((n_classes, m)), np.empty((n_classes, m)), []
    for k in range(n_classes):
        own = values[labels == k]
        enough = np.isfinite(own).all(1).sum() >= max(params.min_class_count, 2)
        los[k], his[k] = edges(own) if enough else pooled
        source.append("class" if enough else "pooled")
    return los, his, tuple(source)


def _loo_values(
    maps: np.ndarray, labels: np.ndarray, n_classes: int, metrics: Sequence[str], threshold: Threshold
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class means and the leave-one-out metric values of each map against its class mean without it."""
    h, w = maps.shape[1:]
    sums = np.zeros((n_classes, h, w), dtype=np.float64)
    np.add.at(sums, labels, maps.astype(np.float64))
    counts = np.bincount(labels, minlength=n_classes)
    refs = np.where(counts[:, None, None] > 0, sums / np.maximum(counts, 1)[:, None, None], 0.0)
    n_own = counts[labels]
    loo = (sums[labels] - maps) / np.maximum(n_own - 1, 1)[:, None, None]
    values = np.full((len(maps), len(metrics)), np.nan)
    ok = n_own >= 2  # a class of one image has no leave-one-out reference
    if ok.any():
        res = compute_metrics(maps[ok], loo[ok], metrics, threshold=threshold, size=None)
        values[ok] = np.stack([res[m] for m in metrics], axis=1)
    return to_grid(refs, (h, w)) if len(refs) else refs.astype(np.float32), counts, values


def reference_from_maps(
    maps: np.ndarray,
    labels: Sequence[str | int] | np.ndarray,
    class_names: Sequence[str],
    *,
    grid: tuple[int, int] = DEFAULT_SIZE,
    metrics: Sequence[str] = DEFAULT_METRICS,
    threshold: Threshold = 0.5,
    params: VerdictParams | None = None,
    source: str = "maps",
    **provenance: Any,
) -> ReferenceBundle:
    """Bundle from precomputed maps (N, H, W) with class labels: per-class mean references and leave-one-out
    bands. Use it for another model's maps, or any maps already computed. ``provenance`` fills the bundle's
    method, layer, model_hash, architecture and preprocessing fields."""
    params = params or VerdictParams()
    names = tuple(class_names)
    idx = _class_indices(labels, names)
    g = to_grid(maps, grid)
    if len(g) != len(idx):
        raise ShapeError(f"{len(g)} maps but {len(idx)} labels")
    if len(g) < 2:
        raise BundleError("a reference set needs at least two images to calibrate")
    refs, counts, values = _loo_values(g, idx, len(names), metrics, threshold)
    lo, hi, band_source = compute_bands(values, idx, len(names), metrics, params)
    return ReferenceBundle(
        class_names=names,
        references=refs.astype(np.float32),
        counts=counts.astype(np.int64),
        maps=g.astype(np.float32),
        calib_labels=idx,
        calib_values=values,
        bands_lo=lo,
        bands_hi=hi,
        band_source=band_source,
        metrics=tuple(metrics),
        threshold=threshold,
        params=params,
        source=source,
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **provenance,
    )


def reference_from_annotations(
    masks: Sequence[np.ndarray | str | Path] | np.ndarray,
    labels: Sequence[str | int] | np.ndarray,
    class_names: Sequence[str],
    *,
    calibration_maps: np.ndarray | None = None,
    grid: tuple[int, int] = DEFAULT_SIZE,
    metrics: Sequence[str] = DEFAULT_METRICS,
    threshold: Threshold = 0.5,
    params: VerdictParams | None = None,
    **provenance: Any,
) -> ReferenceBundle:
    """Bundle whose references are the mean annotation (PNG mask paths, arrays, or masks from
    :func:`boxes_to_masks`) per class. With ``calibration_maps`` (the trusted model's maps on the same
    images), the bands are the spread of those maps against the annotation reference — the comparison a new
    map will face; without, masks are calibrated leave-one-out against each other."""
    params = params or VerdictParams()
    arrays = [load_mask(m) if isinstance(m, str | Path) else np.asarray(m, dtype=np.float32) for m in masks]
    g = np.concatenate([to_grid(a, grid) for a in arrays]) if arrays else np.zeros((0, *grid), np.float32)
    bundle = reference_from_maps(
        g, labels, class_names, grid=grid, metrics=metrics, threshold=threshold, params=params,
        source="annotation", **provenance,
    )  # fmt: skip
    if calibration_maps is None:
        return bundle
    cm = to_grid(calibration_maps, grid)
    if len(cm) != len(g):
        raise ShapeError(f"{len(cm)} calibration maps for {len(g)} annotations")
    res = compute_metrics(cm, bundle.references[bundle.calib_labels], metrics, threshold=threshold, size=None)
    values = np.stack([res[m] for m in metrics], axis=1)
    lo, hi, band_source = compute_bands(values, bundle.calib_labels, len(class_names), metrics, params)
    return replace(bundle, maps=cm, calib_values=values, bands_lo=lo, bands_hi=hi, band_source=band_source)


def load_mask(path: str | Path) -> np.ndarray:
    """A PNG (or any image) annotation as a (H, W) float32 mask in {0, 1} (foreground = value > 0.5)."""
    from verification.io.images import load_image

    img = load_image(path)
    px = img.pixels if img.pixels.ndim == 2 else img.pixels.max(axis=2)
    return (px > 0.5).astype(np.float32)


def boxes_to_masks(boxes: Sequence[Sequence[Sequence[float]]], image_size: tuple[int, int]) -> np.ndarray:
    """Per image, a list of (x0, y0, x1, y1) pixel boxes (x1, y1 exclusive) -> (N, H, W) float32 masks."""
    h, w = image_size
    out = np.zeros((len(boxes), h, w), dtype=np.float32)
    for i, image_boxes in enumerate(boxes):
        for box in image_boxes:
            if len(box) != 4:
                raise ShapeError(f"a box needs (x0, y0, x1, y1); got {list(box)}")
            x0, y0, x1, y1 = (round(float(v)) for v in box)
            out[i, max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)] = 1.0
    return out


def load_boxes_json(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """Read box annotations: ``{"image_size": [H, W], "images": [{"image": name, "label": class,
    "boxes": [[x0, y0, x1, y1], ...]}, ...]}`` -> (image names, labels, masks (N, H, W))."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        size = (int(doc["image_size"][0]), int(doc["image_size"][1]))
        entries = list(doc["images"])
        names = [str(e["image"]) for e in entries]
        labels = [str(e["label"]) for e in entries]
        boxes = [e.get("boxes", []) for e in entries]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, IndexError, ValueError) as exc:
        raise BundleError(
            f"cannot read box annotations from '{path}': {exc}; expected "
            '{"image_size": [H, W], "images": [{"image": ..., "label": ..., "boxes": [[x0, y0, x1, y1]]}]}'
        ) from exc
    return names, labels, boxes_to_masks(boxes, size)


def _model_maps(
    model: LoadedModel,
    images: Sequence[LoadedImage] | torch.Tensor,
    method: str,
    layer: str | None,
    batch_size: int,
    grid: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, str]:
    """CAMs of the predicted class for every image, on the comparison grid, with the predictions and layer."""
    from verification.cam import compute_cams
    from verification.io.images import to_tensor

    n = len(images)
    maps, preds, used_layer = [], [], layer
    for s in range(0, n, batch_size):
        chunk = images[s : s + batch_size]
        x = chunk if isinstance(chunk, torch.Tensor) else to_tensor(list(chunk), model)
        res = compute_cams(model, x, methods=(method,), layers=None if layer is None else [layer])[0]
        used_layer = res.layer
        maps.append(to_grid(res.maps, grid))
        preds.append(res.logits.argmax(1))
    return np.concatenate(maps), np.concatenate(preds), str(used_layer)


def preprocessing_of(model: LoadedModel) -> dict[str, Any]:
    """What a bundle records about the model's input pipeline."""
    return {
        "input_size": [int(v) for v in model.input_size],
        "mean": [float(v) for v in model.mean],
        "std": [float(v) for v in model.std],
        "channels": int(model.in_channels),
    }


def default_grid(
    model: LoadedModel, grid: tuple[int, int] | None, annotations: Sequence[object] | None = None
) -> tuple[int, int]:
    """The comparison grid: ``grid`` when given; else the model's input resolution where annotations are
    involved (a finding mask loses its edges on a coarser grid, and E2 measures the map inside it), else
    :data:`~verification.metrics.DEFAULT_SIZE` (64×64 keeps what a 7–28 px attention layer resolves)."""
    if grid is not None:
        return check_grid(grid)
    if annotations is not None and any(a is not None for a in annotations):
        return check_grid((int(model.input_size[0]), int(model.input_size[1])))
    return DEFAULT_SIZE


def build_reference(
    model: LoadedModel,
    images: Sequence[LoadedImage] | torch.Tensor,
    labels: Sequence[str | int] | np.ndarray,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    grid: tuple[int, int] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    threshold: Threshold = 0.5,
    params: VerdictParams | None = None,
    batch_size: int = 16,
    correct_only: bool = True,
    calibrate: bool = False,
    healthy: Mapping[str, LoadedModel] | None = None,
    bad: Mapping[str, LoadedModel] | None = None,
    annotations: Sequence[np.ndarray | None] | None = None,
    anatomy: Sequence[np.ndarray | None] | None = None,
    faithfulness: bool = False,
) -> ReferenceBundle:
    """Reference bundle from a trusted model on a labelled reference set: per class, the mean normalised CAM
    (of the true class) over the correctly classified images, with leave-one-out bands for the seven metrics.
    ``images``: LoadedImages or an already preprocessed (N, C, H, W) tensor.

    With ``calibrate``, the verdict's calibration is attached (:func:`verification.verdict.calibrate_bundle`):
    the healthy models are this model plus ``healthy`` (one model: a bootstrap over images), the known-bad
    ones the cascading-randomised model plus ``bad``; ``annotations`` / ``anatomy`` masks feed E2–E4;
    ``faithfulness`` also calibrates E6 (deletion/insertion: about 4 × 7 extra forwards per image and model;
    verify runs E6 only for a bundle calibrated with it). A multi-label model (``task == "multilabel"``) is
    built label by label (:func:`verification.multilabel.build_label_reference`): ``labels`` are then label
    sets per image. ``grid`` is the comparison grid of the references and of every map compared with them
    (E2, E5; :func:`default_grid`: the model's input resolution when ``annotations`` are given, else
    :data:`~verification.metrics.DEFAULT_SIZE`)."""
    grid = default_grid(model, grid, annotations)
    if model.task == "multilabel":  # label L's map over the images annotated with L, one label at a time
        from verification.io.images import to_tensor
        from verification.multilabel import build_label_reference

        x = images if isinstance(images, torch.Tensor) else to_tensor(list(images), model)
        built = build_label_reference(
            model, x, list(labels), method=method, layer=layer, grid=grid, batch_size=batch_size,
            metrics=metrics, threshold=threshold, params=params,
        )  # fmt: skip
        if not calibrate:
            return built
        from verification.verdict import VerdictConfig
        from verification.verdict.api import calibrate_bundle

        return calibrate_bundle(
            built, {model.name: model, **dict(healthy or {})}, x, list(labels), bad=bad,
            annotations=annotations, anatomy=anatomy, batch_size=batch_size,
            config=VerdictConfig(faithfulness=faithfulness),
        )  # fmt: skip
    idx = _class_indices(labels, model.class_names)
    if len(idx) != len(images):
        raise ShapeError(f"{len(images)} images but {len(idx)} labels")
    maps, preds, used_layer = _model_maps(model, images, method, layer, batch_size, grid)
    keep = preds == idx if correct_only else np.ones(len(idx), dtype=bool)
    log.info("reference set: %d of %d images correctly classified", int(keep.sum()), len(idx))
    if int(keep.sum()) < 2:
        raise BundleError(
            f"only {int(keep.sum())} of {len(idx)} reference images are usable"
            + (" (correctly classified)" if correct_only else "")
            + "; a reference set needs at least two"
        )
    bundle = reference_from_maps(
        maps[keep], idx[keep], model.class_names, grid=grid, metrics=metrics, threshold=threshold,
        params=params, source="model", method=method, layer=used_layer, model_hash=model.content_hash,
        architecture=model.architecture, preprocessing=preprocessing_of(model),
    )  # fmt: skip
    if not calibrate:
        return bundle
    from verification.verdict.api import calibrate_bundle

    names = [model.class_names[i] for i in idx]
    from verification.verdict import VerdictConfig

    return calibrate_bundle(
        bundle, {model.name: model, **dict(healthy or {})}, images, names, bad=bad,
        annotations=annotations, anatomy=anatomy, batch_size=batch_size,
        config=VerdictConfig(faithfulness=faithfulness),
    )  # fmt: skip


def build_reference_from_paths(
    model: LoadedModel,
    paths: Sequence[str | Path],
    labels: Sequence[int],
    *,
    method: str = "gradcam",
    layer: str | None = None,
    correct_only: bool = True,
    batch_size: int = 16,
    workers: int = 0,
    progress: bool = False,
    calibrate: bool = True,
    healthy: Mapping[str, LoadedModel] | None = None,
    bad: Mapping[str, LoadedModel] | None = None,
    annotation_dir: str | Path | None = None,
    anatomy_dir: str | Path | None = None,
    faithfulness: bool = False,
    grid: tuple[int, int] | None = None,
) -> tuple[ReferenceBundle, int, int]:
    """:func:`build_reference` over image files (the command line's path): unreadable files are skipped;
    masks are read from ``<stem>_lesion.png`` / ``<stem>_lung.png`` files in the two folders.
    Returns (bundle, images used for the references, images skipped)."""
    from verification.anatomy import MASK_SUFFIXES, _read_mask_file, find_mask_file
    from verification.batch import LESION_SUFFIXES
    from verification.errors import ImageLoadError, InputTooLargeError
    from verification.io.images import load_image

    loaded: list[LoadedImage] = []
    y: list[int] = []
    skipped = 0
    for path, lab in zip(paths, labels):
        try:
            loaded.append(load_image(path))
            y.append(int(lab))
        except (ImageLoadError, InputTooLargeError, OSError) as exc:
            log.warning("skipped %s: %s", path, exc)
            skipped += 1

    def masks(folder: str | Path | None, suffixes: Sequence[str]) -> list[np.ndarray | None] | None:
        if folder is None:
            return None
        found = [find_mask_file(folder, Path(img.name).name, suffixes) for img in loaded]
        return [None if f is None else np.asarray(_read_mask_file(f), np.float32) for f in found]

    bundle = build_reference(
        model, loaded, y, method=method, layer=layer, batch_size=batch_size, correct_only=correct_only,
        calibrate=calibrate, healthy=healthy, bad=bad, annotations=masks(annotation_dir, LESION_SUFFIXES),
        anatomy=masks(anatomy_dir, MASK_SUFFIXES),
        faithfulness=faithfulness, grid=grid,
    )  # fmt: skip
    return bundle, int(bundle.counts.sum()), skipped


# ------------------------------------------------------------------------------------------------- loading
def load_bundle(
    path: str | Path,
    *,
    model: LoadedModel | None = None,
    method: str | None = None,
    layer: str | None = None,
) -> ReferenceBundle:
    """Read a bundle written by :meth:`ReferenceBundle.save`. When ``model`` / ``method`` / ``layer`` are
    given and differ from the bundle's, each difference is reported with ``warnings.warn`` and listed in the
    returned bundle's ``warnings``; a missing file or another schema raises BundleError."""
    npz, manifest = _paths(path)
    if not manifest.is_file() or not npz.is_file():
        raise BundleError(f"a reference bundle needs both {npz.name} and {manifest.name} in {npz.parent}")
    try:
        text = manifest.read_text(encoding="utf-8")
        data = npz.read_bytes()
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest} is not a readable JSON manifest: {exc}") from exc
    return load_bundle_bytes(
        data, text, model=model, method=method, layer=layer, name=str(npz), manifest_name=str(manifest)
    )


def load_bundle_bytes(
    arrays_npz: bytes,
    manifest_json: str | bytes,
    *,
    model: LoadedModel | None = None,
    method: str | None = None,
    layer: str | None = None,
    name: str = "uploaded bundle",
    manifest_name: str | None = None,
) -> ReferenceBundle:
    """A bundle from the bytes of its two files (an upload): no file is written, nothing is unpickled."""

    manifest = manifest_name or f"{name} manifest"
    npz = name
    doc = _read_manifest(manifest_json, manifest)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_NAME:
        raise BundleError(f"{manifest} is not a reference bundle manifest")
    version = doc.get("schema_version")
    if version not in READS_VERSIONS:
        raise BundleError(
            f"{manifest} has schema_version {version!r}; this version reads "
            f"{', '.join(map(str, READS_VERSIONS))}. Rebuild the bundle with this version."
        )
    members = _read_npz(arrays_npz, npz)
    try:
        arrays: dict[str, Any] = {name: members[name] for name in _ARRAYS}
        for name_ in _OPTIONAL_ARRAYS:
            if name_ in members:
                arrays[name_] = members[name_]
        cal_doc = doc.get("calibration")
        bundle = ReferenceBundle(
            class_names=tuple(doc["class_names"]),
            band_source=tuple(doc["bands"][c]["source"] for c in doc["class_names"]),
            metrics=tuple(doc["metrics"]),
            threshold=doc["threshold"],
            params=VerdictParams(**doc["params"]),
            source=str(doc["source"]),
            method=doc.get("method"),
            layer=doc.get("layer"),
            model_hash=doc.get("model_hash"),
            architecture=doc.get("architecture"),
            preprocessing=dict(doc.get("preprocessing") or {}),
            created=str(doc.get("created", "")),
            calibration=Calibration.from_dict(cal_doc) if isinstance(cal_doc, dict) else None,
            schema_version=int(version),
            **arrays,
        )
    except (OSError, KeyError, ValueError, TypeError, EOFError) as exc:
        raise BundleError(f"reference bundle {npz} is missing data or is corrupt: {str(exc)[:200]}") from exc
    _check_arrays(bundle, npz)
    unknown = [m for m in bundle.metrics if m not in METRICS]
    if unknown:
        raise BundleError(f"bundle {npz} uses metrics this version does not know: {unknown}")
    found = _mismatches(bundle, model, method, layer)
    if bundle.calibration is None:
        found.append(
            "the bundle carries no verdict calibration (built before schema 2, or without healthy models): "
            "lines that need calibrated thresholds (E3, E4, E5, E6) are not assessable"
        )
    for msg in found:
        warnings.warn(msg, UserWarning, stacklevel=2)
    return replace(bundle, warnings=tuple(found))


MAX_MANIFEST_BYTES = 8 << 20


def _read_manifest(text: str | bytes, what: str) -> Any:
    """The manifest's JSON, bounded: at most ``MAX_MANIFEST_BYTES``, numbers of at most 40 characters, no NaN
    (±Infinity is how open band edges are written); any failure, deep nesting included, is a BundleError."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{what} is {len(text):,} bytes; a bundle manifest is at most {MAX_MANIFEST_BYTES:,}"
        )

    def number(kind: type) -> Any:
        def parse(token: str) -> Any:
            if len(token) > 40:
                raise ValueError(f"a number of {len(token)} characters")
            return kind(token)

        return parse

    def constant(token: str) -> float:
        if token == "NaN":
            raise ValueError("NaN")
        return float(token)

    try:
        raw = text.decode("utf-8") if isinstance(text, bytes) else text
        return json.loads(raw, parse_int=number(int), parse_float=number(float), parse_constant=constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{what} is not a readable JSON manifest: {str(exc)[:160]}") from exc


MAX_BUNDLE_BYTES = 512 << 20


def _read_npz(data: bytes, what: str) -> dict[str, np.ndarray]:
    """The arrays of a bundle's ``.npz`` read without trusting it: a zip checked for entry count, sizes and
    inflation (:mod:`verification.io.archive`), each ``.npy`` header's shape × item size compared with the
    member's real size before anything is allocated, no pickle."""
    import zipfile

    from verification.io.archive import ZipLimits, check_entries, open_zip, read_entry

    zf = open_zip(data, f"reference bundle {what}", BundleError)
    out: dict[str, np.ndarray] = {}
    with zf:
        infos = check_entries(
            zf, f"reference bundle {what}", ZipLimits(64, MAX_BUNDLE_BYTES, 200), BundleError
        )
        for info in infos:
            name = info.filename.removesuffix(".npy")
            if name not in _ARRAYS and name not in _OPTIONAL_ARRAYS:
                continue
            raw = read_entry(zf, info, MAX_BUNDLE_BYTES, f"reference bundle {what}", BundleError)
            buf = io.BytesIO(raw)
            try:
                version = np.lib.format.read_magic(buf)
                header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = header(buf)
                if dtype.hasobject:
                    raise BundleError(
                        f"reference bundle {what}: array '{name}' holds Python objects; refused"
                    )
                need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                if need > len(raw):
                    raise BundleError(
                        f"reference bundle {what}: array '{name}' declares shape {tuple(shape)} "
                        f"({need:,} bytes) but holds {len(raw):,} bytes; the file is corrupt"
                    )
                buf.seek(0)
                out[name] = np.asarray(np.load(buf, allow_pickle=False))
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise BundleError(
                    f"reference bundle {what}: array '{name}' cannot be read: {str(exc)[:160]}"
                ) from exc
    return out


def _check_arrays(bundle: ReferenceBundle, what: str) -> None:
    """Shapes and values a bundle must have for its numbers to mean anything."""
    k = len(bundle.class_names)
    refs = np.asarray(bundle.references)
    problems = []
    if refs.ndim != 3 or refs.shape[0] != k:
        problems.append(f"references have shape {refs.shape}, expected ({k}, h, w) for {k} classes")
    elif not np.isfinite(refs).all():
        problems.append("references contain NaN or infinite values")
    if np.asarray(bundle.counts).shape != (k,):
        problems.append(f"counts have shape {np.asarray(bundle.counts).shape}, expected ({k},)")
    thr = bundle.threshold
    if not (
        thr == "otsu" or (isinstance(thr, int | float) and np.isfinite(thr) and 0.0 <= float(thr) <= 1.0)
    ):
        problems.append(f"threshold {thr!r} is neither 'otsu' nor a number in [0, 1]")
    if bundle.thumbnails is not None and (bundle.thumbnails.ndim != 3 or bundle.thumbnails.dtype != np.uint8):
        problems.append("reference thumbnails must be (N, s, s) uint8")
    if problems:
        raise BundleError(f"reference bundle {what} is corrupt: {'; '.join(problems)}")


def _mismatches(
    bundle: ReferenceBundle, model: LoadedModel | None, method: str | None, layer: str | None
) -> list[str]:
    out = []
    if model is not None:
        if bundle.model_hash and model.content_hash != bundle.model_hash:
            out.append(
                f"the model '{model.name}' (hash {model.content_hash[:12]}) is not the model this reference "
                f"bundle was built with (hash {bundle.model_hash[:12]}): its maps are compared with another "
                "model's references"
            )
        if bundle.architecture and model.architecture and model.architecture != bundle.architecture:
            out.append(f"architecture differs: bundle {bundle.architecture}, model {model.architecture}")
        if bundle.preprocessing and preprocessing_of(model) != bundle.preprocessing:
            out.append(
                f"preprocessing differs: bundle {bundle.preprocessing}, model {preprocessing_of(model)}; "
                "the bands may not apply"
            )
        if list(model.class_names) != list(bundle.class_names):
            out.append(
                f"class names differ: bundle {list(bundle.class_names)}, model {list(model.class_names)}"
            )
    if method is not None and bundle.method is not None and method != bundle.method:
        out.append(f"method differs: bundle {bundle.method}, requested {method}; bands were calibrated on it")
    if layer is not None and bundle.layer is not None and layer != bundle.layer:
        out.append(f"layer differs: bundle {bundle.layer}, requested {layer}")
    return out
