"""Batch jobs: what runs on each batch. A job (``CamJob``, ``VerifyJob``) loads its model once (``setup``)
and then turns batches into rows, one per image. The engines in :mod:`verification.engines` drive jobs
locally through a DataLoader or on Ray with the same job code, so both engines give the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
import torch

from verification.batch.dataset import Batch, ImageItem, error_message
from verification.batch.rows import Failure, Row
from verification.errors import BundleError, ModelForwardError, NonFiniteError, VerificationError
from verification.io.records import LoadedModel

if TYPE_CHECKING:
    from verification.reference import ReferenceBundle
    from verification.verdict import VerdictConfig
    from verification.verdict.measure import ImageMeasurement, MeasureSpec
    from verification.verdict.records import VerificationReport

__all__ = [
    "LESION_SUFFIXES",
    "PER_IMAGE_ERRORS",
    "BatchJob",
    "CamJob",
    "ImageCams",
    "ModelSpec",
    "VerifyJob",
    "folder_mask",
    "merge_verify_rows",
    "per_sample_on_error",
    "resolve_target",
]


@dataclass(frozen=True)
class ModelSpec:
    """How to load a model: what a worker needs to load its own copy (a path, not a module)."""

    path: str
    sidecar: str | None = None
    architecture: str | None = None
    trust: bool = False

    def load(self) -> LoadedModel:
        from verification.io.models import load_model

        return load_model(self.path, sidecar=self.sidecar, architecture=self.architecture, trust=self.trust)


R = TypeVar("R")


class BatchJob(Generic[R]):
    """Work done on each batch. ``setup`` loads what the job needs once per process (a model, a bundle);
    ``run`` turns a batch into one :class:`Row` per image, error rows included, in batch order; each row's
    ``result`` is a frozen ``result_type`` record."""

    keep_display: bool = False

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._model: LoadedModel | None = None

    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            raise RuntimeError("BatchJob.setup() must run before the job is used")
        return self._model

    def setup(self, model: LoadedModel | None = None) -> LoadedModel:
        """Load the model (or adopt an already loaded one); idempotent."""
        if self._model is None:
            self._model = model if model is not None else self.spec.load()
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        # Jobs travel to Ray workers as their spec; each worker loads its own model in setup().
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    def run(self, batch: Batch) -> list[Row[R]]:
        rows: list[Row[R]] = [_base_row(item) for item in batch.items]
        if batch.ok:
            for pos, out in zip(batch.ok, self.process(batch)):
                if isinstance(out, Failure):
                    rows[pos] = dataclasses.replace(rows[pos], error=out.message)
                else:
                    rows[pos] = dataclasses.replace(rows[pos], result=out)
        return rows

    def process(self, batch: Batch) -> list[R | Failure]:
        """Results for the images in ``batch.x`` (one per entry of ``batch.ok``)."""
        raise NotImplementedError

    @property
    def result_type(self) -> type[R]:
        """The class of the rows' results (how the Ray engine decodes them)."""
        raise NotImplementedError


def _base_row(item: ImageItem) -> Row[Any]:
    return Row(index=item.index, path=item.path, error=item.error, content_hash=item.content_hash)


def resolve_target(target: str | None, model: LoadedModel) -> int | None:
    """``None`` (predicted class), a class index, or a class name → index; raises ValueError otherwise."""
    if target is None or target == "":
        return None
    if target in model.class_names:
        return model.class_names.index(target)
    try:
        index = int(target)
    except ValueError:
        raise ValueError(
            f"target {target!r} is neither a class index nor one of the class names {list(model.class_names)}"
        ) from None
    if not 0 <= index < model.num_classes:
        raise ValueError(f"target index {index} is outside 0..{model.num_classes - 1}")
    return index


@dataclass(frozen=True)
class ImageCams:
    """One image's maps from a :class:`CamJob`: ``pred`` (int), ``logits`` and ``probs`` (K,), ``target``
    (int), and for each result key ``"<method>@<layer>"``: ``maps[key]`` (H, W) in [0, 1] at input size,
    ``raw[key]`` (h, w) at the layer's resolution, ``constant[key]``; ``provenance[key]`` its CamResult
    provenance. ``display`` the uint8 picture when the job keeps it; ``label_maps[label][key]`` (H, W) for a
    multi-label model without a target: one map per label it calls present."""

    pred: int
    logits: np.ndarray
    probs: np.ndarray
    target: int
    maps: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    constant: dict[str, bool]
    provenance: dict[str, dict[str, Any]]
    display: np.ndarray | None = None
    label_maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


class CamJob(BatchJob[ImageCams]):
    """Attention maps for every requested (method, layer) from one forward and one backward per batch: one
    :class:`ImageCams` per image."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        methods: Sequence[str] = ("gradcam",),
        layers: Sequence[str] | None = None,
        target: str | None = None,
        keep_display: bool = False,
    ) -> None:
        super().__init__(spec)
        self.methods = tuple(methods)
        self.layers = tuple(layers) if layers else None
        self.target = target
        self.keep_display = keep_display

    def process(self, batch: Batch) -> list[ImageCams | Failure]:
        return per_sample_on_error(self._cams, batch)

    @property
    def result_type(self) -> type[ImageCams]:
        return ImageCams

    def _cams(self, batch: Batch, x: torch.Tensor, ok: Sequence[int]) -> list[ImageCams]:
        from verification.cam import compute_cams

        model = self.model
        results = compute_cams(
            model,
            x,
            methods=self.methods,
            layers=self.layers,
            target=resolve_target(self.target, model),
        )
        first = results[0]
        label_maps = (
            self._label_maps(model, x)
            if model.task == "multilabel" and self.target is None
            else [{} for _ in ok]
        )
        out: list[ImageCams] = []
        for n, pos in enumerate(ok):
            keys = [f"{res.method}@{res.layer}" for res in results]
            out.append(
                ImageCams(
                    pred=int(np.argmax(first.logits[n])),
                    logits=np.asarray(first.logits[n], dtype=np.float32),
                    probs=np.asarray(first.probs[n], dtype=np.float32),
                    target=int(first.targets[n]),
                    maps={k: np.asarray(res.maps[n], dtype=np.float32) for k, res in zip(keys, results)},
                    raw={k: np.asarray(res.raw[n], dtype=np.float32) for k, res in zip(keys, results)},
                    constant={k: bool(res.constant[n]) for k, res in zip(keys, results)},
                    provenance={k: dict(res.provenance) for k, res in zip(keys, results)},
                    display=batch.items[pos].display,
                    label_maps=label_maps[n],
                )
            )
        return out

    def _label_maps(self, model: LoadedModel, x: torch.Tensor) -> list[dict[str, dict[str, np.ndarray]]]:
        """A multi-label model without ``--target``: per image, one map per label the model calls present
        (σ ≥ 0.5, else its top label), as ``[image][label][key]``."""
        from verification.multilabel import label_cams

        lm = label_cams(model, x, methods=self.methods, layers=self.layers)
        out: list[dict[str, dict[str, np.ndarray]]] = [{} for _ in range(len(x))]
        for r, (n, k) in enumerate(zip(lm.images, lm.labels)):
            per = out[n].setdefault(model.class_names[k], {})
            for res in lm.results:
                per[f"{res.method}@{res.layer}"] = np.asarray(res.maps[r], dtype=np.float32)
        return out


# Errors that one image of a batch can cause on its own (NaN/inf in its tensor, a model that fails on it);
# configuration errors (an unknown layer, a bad target) fail every image alike and stop the run instead.
PER_IMAGE_ERRORS: tuple[type[Exception], ...] = (NonFiniteError, ModelForwardError)


def per_sample_on_error(
    compute: Callable[[Batch, torch.Tensor, Sequence[int]], Sequence[R]], batch: Batch
) -> list[R | Failure]:
    """Results for ``batch.x`` from ``compute(batch, x, ok_positions)``; when the whole batch fails with a
    per-image error, each image is run alone and the ones that fail become :class:`Failure` (error rows), so
    one hostile image does not take its batch-mates down with it."""
    try:
        return list(compute(batch, batch.x, batch.ok))
    except PER_IMAGE_ERRORS as exc:
        if len(batch.ok) == 1:
            return [Failure(error_message(exc))]
    out: list[R | Failure] = []
    for n, pos in enumerate(batch.ok):
        try:
            out.extend(compute(batch, batch.x[n : n + 1], [pos]))
        except PER_IMAGE_ERRORS as exc:
            out.append(Failure(error_message(exc)))
    return out


LESION_SUFFIXES = ("_lesion", "_finding", "_annotation")
"""File names :class:`VerifyJob` looks for in an annotation folder: ``<image stem><suffix>.png`` (or .npy)."""


def folder_mask(folder: str | None, path: str | Path, suffixes: Sequence[str]) -> np.ndarray | None:
    """The mask of image ``path`` in ``folder`` (``<image stem><suffix>.png`` or .npy) as float32, or None
    (no folder, or no mask for this image there)."""
    if folder is None:
        return None
    from verification.anatomy import find_mask_file, read_mask_file

    found = find_mask_file(folder, Path(path).name, suffixes)
    return None if found is None else np.asarray(read_mask_file(found), dtype=np.float32)


class VerifyJob(BatchJob["ImageMeasurement"]):  # a string: the verdict package loads lazily
    """The verdict's measurements, batch by batch (:func:`verification.verdict.measure.measure_batch`).

    The rules of :func:`verification.verify` — one path: the bundle's method, the bundle's layer when the
    model
    has it (else the default target layer, with a warning), the E0 gate from the bundle's reference images,
    the
    anatomy from ``anatomy_dir`` masks or the automatic method, findings from ``annotation_dir`` masks
    (``<stem>_lesion.png``). Each row's result is one image's
    :class:`~verification.verdict.measure.ImageMeasurement`; :func:`merge_verify_rows` joins them into the
    :class:`~verification.verdict.measure.Measurements` and the :class:`VerificationReport`.
    """

    def __init__(
        self,
        spec: ModelSpec,
        bundle_path: str,
        *,
        labels: Sequence[str] | None = None,
        annotation_dir: str | None = None,
        anatomy_dir: str | None = None,
        gate: ModelSpec | None = None,
        config: VerdictConfig | None = None,
    ) -> None:
        super().__init__(spec)
        self.bundle_path = bundle_path
        self.labels = tuple(labels) if labels is not None else None
        self.annotation_dir = annotation_dir
        self.anatomy_dir = anatomy_dir
        self.gate_spec = gate
        from verification.verdict import VerdictConfig

        self.config = config if config is not None else VerdictConfig()
        self._bundle: ReferenceBundle | None = None
        self._measure: MeasureSpec | None = None
        self.warnings: tuple[str, ...] = ()
        self.mismatch: str | None = None

    def setup(self, model: LoadedModel | None = None) -> LoadedModel:
        loaded = super().setup(model)
        if self._bundle is None:
            import warnings

            from verification.reference import load_bundle
            from verification.verdict.api import class_mismatch, measure_spec

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the mismatches are kept in bundle.warnings and reported
                bundle = load_bundle(self.bundle_path, model=loaded)
            self.mismatch = class_mismatch(loaded, bundle)
            found = list(bundle.warnings)
            if self.mismatch is None:
                gate = self.gate_spec.load() if self.gate_spec is not None else None
                self._measure, more = measure_spec(loaded, bundle, self.config, gate)
                found += more
            self._bundle, self.warnings = bundle, tuple(dict.fromkeys(found))
        return loaded

    @property
    def bundle(self) -> ReferenceBundle:
        if self._bundle is None:
            raise RuntimeError("VerifyJob.setup() must run before the job is used")
        return self._bundle

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_bundle"] = None
        state["_measure"] = None
        return state

    def process(self, batch: Batch) -> list[ImageMeasurement | Failure]:
        """Measurements; an image whose mask file cannot be read, or whose forward fails (NaN, model error),
        alone becomes an error row."""
        if self.mismatch is not None:
            raise BundleError(self.mismatch)
        got, unread = self.masks_of([batch.items[pos].path for pos in batch.ok])
        masks = {batch.ok[n]: pair for n, pair in got.items()}
        failed = {batch.ok[n]: Failure(message) for n, message in unread.items()}
        keep = [n for n, pos in enumerate(batch.ok) if pos not in failed]
        rest = (
            dataclasses.replace(batch, x=batch.x[keep], ok=tuple(batch.ok[n] for n in keep))
            if failed
            else batch
        )
        measured = (
            per_sample_on_error(lambda b, x, ps: self._measure_rows(b, x, ps, masks), rest) if keep else []
        )
        done = iter(measured)
        return [failed[pos] if pos in failed else next(done) for pos in batch.ok]

    def masks(self, path: str | Path) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Image ``path``'s finding mask and anatomy mask (None where there is no folder or no mask in it);
        a mask file that cannot be read raises a typed error naming it."""
        from verification.anatomy import MASK_SUFFIXES

        return (
            folder_mask(self.annotation_dir, path, LESION_SUFFIXES),
            folder_mask(self.anatomy_dir, path, MASK_SUFFIXES),
        )

    def masks_of(
        self, paths: Sequence[str | Path]
    ) -> tuple[dict[int, tuple[np.ndarray | None, np.ndarray | None]], dict[int, str]]:
        """:meth:`masks` of each path by position, and the error message of each path whose mask file cannot
        be read (that image alone becomes an error row)."""
        got: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = {}
        unread: dict[int, str] = {}
        for n, path in enumerate(paths):
            try:
                got[n] = self.masks(path)
            except VerificationError as exc:
                unread[n] = error_message(exc)
        return got, unread

    @property
    def result_type(self) -> type[ImageMeasurement]:
        from verification.verdict.measure import ImageMeasurement

        return ImageMeasurement

    def _measure_rows(
        self,
        batch: Batch,
        x: torch.Tensor,
        positions: Sequence[int],
        masks: dict[int, tuple[np.ndarray | None, np.ndarray | None]],
    ) -> list[ImageMeasurement]:
        from verification.verdict.api import label_indices
        from verification.verdict.measure import measure_batch

        if self._measure is None:
            raise RuntimeError("VerifyJob.setup() must run before the job is used")
        items = [batch.items[pos] for pos in positions]
        labels = [self.labels[it.index] for it in items] if self.labels is not None else None
        m = measure_batch(
            self.model, self._measure, x, names=[it.path for it in items],
            labels=label_indices(labels, self.bundle.class_names, len(items)),
            lesions=[masks[pos][0] for pos in positions], anatomy=[masks[pos][1] for pos in positions],
        )  # fmt: skip
        return m.rows()


def merge_verify_rows(rows: Sequence[Row[ImageMeasurement]], job: VerifyJob) -> VerificationReport:
    """The :class:`~verification.verdict.VerificationReport` of a run: readable images measured, unreadable
    ones listed as errors (never counted as evidence)."""
    from verification.verdict.api import assemble, cannot_verify
    from verification.verdict.measure import Measurements

    bundle, model = job.bundle, job.model
    errors = [(r.path, r.error) for r in rows if r.error]
    if job.mismatch is not None:
        return cannot_verify(model, bundle, job.config, job.mismatch, len(rows), job.warnings, errors)
    ok = [(r.path, r.result) for r in rows if r.result is not None and not r.error]
    if not ok:
        return cannot_verify(model, bundle, job.config, "none of the images could be read", len(rows),
                             job.warnings, errors)  # fmt: skip
    m = Measurements.from_rows([res for _, res in ok], bundle.class_names, model.class_names, bundle.grid)
    m = dataclasses.replace(m, names=tuple(path for path, _ in ok))
    return assemble(m, model, bundle, job.config, warnings=job.warnings, errors=errors)
