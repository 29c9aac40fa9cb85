"""Building reference bundles: from a trusted model on a labelled reference set, from precomputed maps, or
from annotation masks; the comparison grid; the leave-one-out values and bands a bundle stores.

A bundle's reference of a class is the mean normalised map over the correctly classified images of that
class (or the mean annotation mask, or another model's maps). With ``calibrate``, :func:`build_reference`
attaches the verdict's calibration (:func:`verification.verdict.calibrate_bundle`, METHODS.md §3).
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from verification.errors import BundleError, ShapeError
from verification.io.budget import DEFAULT_LIMITS, Budget, MiB, ResourceLimits
from verification.io.records import LoadedImage, LoadedModel
from verification.metrics import DEFAULT_METRICS, DEFAULT_SIZE, METRICS, compute_metrics
from verification.metrics.functional import Threshold, as_batch, check_grid, normalize_maps, resize_maps
from verification.reference.bundle import ReferenceBundle, VerdictParams, preprocessing_of
from verification.reference.masks import load_mask

log = logging.getLogger(__name__)


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


def reference_from_model_maps(
    model: LoadedModel,
    maps: np.ndarray,
    labels: Sequence[str | int] | np.ndarray,
    *,
    method: str,
    layer: str | None,
    grid: tuple[int, int],
    **kwargs: Any,
) -> ReferenceBundle:
    """:func:`reference_from_maps` of maps computed by ``model`` (its classes), with the model's provenance:
    ``method`` and ``layer`` that made the maps, content hash, architecture, preprocessing. ``kwargs``:
    metrics, threshold, params."""
    return reference_from_maps(
        maps, labels, model.class_names, grid=grid, source="model", method=method, layer=layer,
        model_hash=model.content_hash, architecture=model.architecture, preprocessing=preprocessing_of(model),
        **kwargs,
    )  # fmt: skip


def reference_from_annotations(
    masks: Sequence[np.ndarray | str | Path] | np.ndarray,
    labels: Sequence[str | int] | np.ndarray,
    class_names: Sequence[str],
    *,
    calibration_maps: np.ndarray | None = None,
    grid: tuple[int, int] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    threshold: Threshold = 0.5,
    params: VerdictParams | None = None,
    **provenance: Any,
) -> ReferenceBundle:
    """Bundle whose references are the mean annotation (PNG mask paths, arrays, or masks from
    :func:`boxes_to_masks`) per class. With ``calibration_maps`` (the trusted model's maps on the same
    images), the bands are the spread of those maps against the annotation reference — the comparison a new
    map will face; without, masks are calibrated leave-one-out against each other. ``grid``: by default the
    masks' own resolution (the annotations are the references: a coarser grid would blur their edges); masks
    of different sizes need an explicit ``grid``."""
    params = params or VerdictParams()
    arrays = [load_mask(m) if isinstance(m, str | Path) else np.asarray(m, dtype=np.float32) for m in masks]
    if grid is None:
        shapes = sorted({(int(a.shape[-2]), int(a.shape[-1])) for a in arrays})
        if len(shapes) > 1:
            sizes = ", ".join(f"{h}×{w}" for h, w in shapes[:4])
            raise ShapeError(f"annotation masks come in {len(shapes)} sizes ({sizes}); pass grid=(h, w)")
        grid = check_grid(shapes[0]) if shapes else DEFAULT_SIZE
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
    options: dict[str, Any] = {"metrics": metrics, "threshold": threshold, "params": params}
    cal_images: Sequence[LoadedImage] | torch.Tensor = images
    if model.task == "multilabel":  # label L's map over the images annotated with L, one label at a time
        from verification.io.images import to_tensor
        from verification.multilabel import build_label_reference

        cal_images = images if isinstance(images, torch.Tensor) else to_tensor(list(images), model)
        cal_labels: list[Any] = list(labels)
        bundle = build_label_reference(
            model, cal_images, cal_labels, method=method, layer=layer, grid=grid, batch_size=batch_size,
            **options,
        )  # fmt: skip
    else:
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
        bundle = reference_from_model_maps(
            model, maps[keep], idx[keep], method=method, layer=used_layer, grid=grid, **options
        )
        cal_labels = [model.class_names[i] for i in idx]
    if not calibrate:
        return bundle
    from verification.verdict import VerdictConfig
    from verification.verdict.api import calibrate_bundle

    return calibrate_bundle(
        bundle, {model.name: model, **dict(healthy or {})}, cal_images, cal_labels, bad=bad,
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
    progress: bool | None = False,
    calibrate: bool = True,
    healthy: Mapping[str, LoadedModel] | None = None,
    bad: Mapping[str, LoadedModel] | None = None,
    annotation_dir: str | Path | None = None,
    anatomy_dir: str | Path | None = None,
    faithfulness: bool = False,
    grid: tuple[int, int] | None = None,
    limits: ResourceLimits = DEFAULT_LIMITS,
) -> tuple[ReferenceBundle, int, int]:
    """:func:`build_reference` over image files (the command line's path): unreadable files are skipped;
    masks are read from ``<stem>_lesion.png`` / ``<stem>_lung.png`` files in the two folders.
    Returns (bundle, images used for the references, images skipped).

    The images are held in memory together, so what they keep once decoded is charged to one
    :class:`~verification.io.budget.Budget` (``limits.max_decoded_bytes``, 2 GiB by default) before each is
    decoded: past it the build stops with :class:`UploadTooLargeError` instead of running out of memory.
    ``workers`` > 0 decodes in that many threads; ``progress`` shows a bar on stderr (None: when stderr is a
    terminal)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from verification.anatomy import MASK_SUFFIXES
    from verification.batch import LESION_SUFFIXES, folder_mask
    from verification.engines import progress_disabled
    from verification.errors import ImageLoadError, InputTooLargeError, UploadTooLargeError
    from verification.io.images import load_image

    budget = Budget(limits)

    def read(path: str | Path) -> LoadedImage | None:
        try:
            return load_image(path, budget=budget)
        except UploadTooLargeError as exc:
            mib = limits.max_decoded_bytes / MiB
            raise UploadTooLargeError(
                f"the reference images are held in memory together, and '{path}' would take them past the "
                f"{mib:,.0f} MiB limit once decoded; build from fewer images (a few hundred per class make "
                "stable references and calibration) or raise limits.max_decoded_bytes if the machine has the "
                "memory"
            ) from exc
        except (ImageLoadError, InputTooLargeError, OSError) as exc:
            log.warning("skipped %s: %s", path, exc)
            return None

    loaded: list[LoadedImage] = []
    y: list[int] = []
    with (
        ThreadPoolExecutor(max_workers=max(workers, 1)) as pool,
        tqdm(total=len(paths), unit="img", disable=progress_disabled(progress), leave=False) as bar,
    ):
        try:
            for img, lab in zip(pool.map(read, paths), labels):  # in order; map submits all, results as done
                bar.update(1)
                if img is not None:
                    loaded.append(img)
                    y.append(int(lab))
        except UploadTooLargeError:
            pool.shutdown(cancel_futures=True)  # the build stops here: decode none of the files still queued
            raise
    skipped = len(paths) - len(loaded)

    def masks(folder: str | Path | None, suffixes: Sequence[str]) -> list[np.ndarray | None] | None:
        if folder is None:
            return None
        return [folder_mask(str(folder), img.name, suffixes) for img in loaded]

    bundle = build_reference(
        model, loaded, y, method=method, layer=layer, batch_size=batch_size, correct_only=correct_only,
        calibrate=calibrate, healthy=healthy, bad=bad, annotations=masks(annotation_dir, LESION_SUFFIXES),
        anatomy=masks(anatomy_dir, MASK_SUFFIXES),
        faithfulness=faithfulness, grid=grid,
    )  # fmt: skip
    return bundle, int(bundle.counts.sum()), skipped
