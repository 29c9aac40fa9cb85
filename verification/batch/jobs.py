"""Batch jobs: what runs on each batch. A job (``CamJob``, ``VerifyJob``) loads its model once (``setup``)
and then turns batches into rows, one per image. The engines in :mod:`verification.engines` drive jobs
locally through a DataLoader or on Ray with the same job code, so both engines give the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from verification.batch.dataset import Batch, ImageItem, error_message
from verification.batch.rows import Row
from verification.errors import BundleError, ModelForwardError, NonFiniteError
from verification.io.records import LoadedModel

if TYPE_CHECKING:
    from verification.verdict.records import VerificationReport

__all__ = [
    "LESION_SUFFIXES",
    "PER_IMAGE_ERRORS",
    "BatchJob",
    "CamJob",
    "ModelSpec",
    "VerifyJob",
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


class BatchJob:
    """Work done on each batch. ``setup`` loads what the job needs once per process (a model, a bundle);
    ``run`` turns a batch into one row per image, error rows included, in batch order."""

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

    def run(self, batch: Batch) -> list[Row]:
        rows: list[Row] = [_base_row(item) for item in batch.items]
        if batch.ok:
            for pos, row in zip(batch.ok, self.process(batch)):
                rows[pos].update(row)
        return rows

    def process(self, batch: Batch) -> list[Row]:
        """Rows for the images in ``batch.x`` (one per entry of ``batch.ok``)."""
        raise NotImplementedError


def _base_row(item: ImageItem) -> Row:
    return {"index": item.index, "path": item.path, "error": item.error, "content_hash": item.content_hash}


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


class CamJob(BatchJob):
    """Attention maps for every requested (method, layer) from one forward and one backward per batch.

    Row fields: ``pred`` (int), ``probs`` (K,), ``logits`` (K,), ``target`` (int), and for each result key
    ``"<method>@<layer>"``: ``maps[key]`` (H, W) in [0, 1] at input size, ``raw[key]`` (h, w) at the layer's
    resolution, ``constant[key]`` (bool); ``provenance`` maps each key to its CamResult provenance.
    """

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

    def process(self, batch: Batch) -> list[Row]:
        return per_sample_on_error(self._cams, batch)

    def _cams(self, batch: Batch, x: torch.Tensor, ok: Sequence[int]) -> list[Row]:
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
        rows: list[Row] = []
        for n, pos in enumerate(ok):
            item = batch.items[pos]
            row: Row = {
                "pred": int(np.argmax(first.logits[n])),
                "logits": np.asarray(first.logits[n], dtype=np.float32),
                "probs": np.asarray(first.probs[n], dtype=np.float32),
                "target": int(first.targets[n]),
                "maps": {},
                "raw": {},
                "constant": {},
                "provenance": {},
            }
            for res in results:
                key = f"{res.method}@{res.layer}"
                row["maps"][key] = np.asarray(res.maps[n], dtype=np.float32)
                row["raw"][key] = np.asarray(res.raw[n], dtype=np.float32)
                row["constant"][key] = bool(res.constant[n])
                row["provenance"][key] = dict(res.provenance)
            if item.display is not None:
                row["display"] = item.display
            rows.append(row)
        if getattr(model, "task", None) == "multilabel" and self.target is None:
            self._label_maps(model, x, rows)
        return rows

    def _label_maps(self, model: LoadedModel, x: torch.Tensor, rows: list[Row]) -> None:
        """A multi-label model without ``--target``: also one map per label the model calls present (σ ≥ 0.5,
        else its top label), as ``row["label_maps"][label][key]``."""
        from verification.multilabel import label_cams

        lm = label_cams(model, x, methods=self.methods, layers=self.layers)
        for r, (n, k) in enumerate(zip(lm.images, lm.labels)):
            per = rows[n].setdefault("label_maps", {}).setdefault(model.class_names[k], {})
            for res in lm.results:
                per[f"{res.method}@{res.layer}"] = np.asarray(res.maps[r], dtype=np.float32)


# Errors that one image of a batch can cause on its own (NaN/inf in its tensor, a model that fails on it);
# configuration errors (an unknown layer, a bad target) fail every image alike and stop the run instead.
PER_IMAGE_ERRORS: tuple[type[Exception], ...] = (NonFiniteError, ModelForwardError)


def per_sample_on_error(
    compute: Callable[[Batch, torch.Tensor, Sequence[int]], list[Row]], batch: Batch
) -> list[Row]:
    """Rows for ``batch.x`` from ``compute(batch, x, ok_positions)``; when the whole batch fails with a
    per-image error, each image is run alone and the ones that fail become error rows (``{"error": ...}``),
    so one hostile image does not take its batch-mates down with it."""
    try:
        return compute(batch, batch.x, batch.ok)
    except PER_IMAGE_ERRORS as exc:
        if len(batch.ok) == 1:
            return [{"error": error_message(exc)}]
    rows: list[Row] = []
    for n, pos in enumerate(batch.ok):
        try:
            rows.extend(compute(batch, batch.x[n : n + 1], [pos]))
        except PER_IMAGE_ERRORS as exc:
            rows.append({"error": error_message(exc)})
    return rows


LESION_SUFFIXES = ("_lesion", "_finding", "_annotation")
"""File names :class:`VerifyJob` looks for in an annotation folder: ``<image stem><suffix>.png`` (or .npy)."""


class VerifyJob(BatchJob):
    """The verdict's measurements, batch by batch (:func:`verification.verdict.measure.measure_batch`).

    The rules of :func:`verification.verify` — one path: the bundle's method, the bundle's layer when the
    model
    has it (else the default target layer, with a warning), the E0 gate from the bundle's reference images,
    the
    anatomy from ``anatomy_dir`` masks or the automatic method, findings from ``annotation_dir`` masks
    (``<stem>_lesion.png``). Rows are :meth:`Measurements.rows` (numbers, strings and arrays, so they cross
    the
    Ray engine's process boundary); :func:`merge_verify_rows` turns them back into the frozen
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
        config: Any = None,
    ) -> None:
        super().__init__(spec)
        self.bundle_path = bundle_path
        self.labels = tuple(labels) if labels is not None else None
        self.annotation_dir = annotation_dir
        self.anatomy_dir = anatomy_dir
        self.gate_spec = gate
        self.config = config
        self._bundle: Any = None
        self._measure: Any = None
        self.warnings: tuple[str, ...] = ()
        self.mismatch: str | None = None

    def setup(self, model: LoadedModel | None = None) -> LoadedModel:
        loaded = super().setup(model)
        if self._bundle is None:
            import warnings

            from verification.reference import load_bundle
            from verification.verdict import VerdictConfig
            from verification.verdict.api import class_mismatch, measure_spec

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the mismatches are kept in bundle.warnings and reported
                bundle = load_bundle(self.bundle_path, model=loaded)
            self.config = self.config or VerdictConfig()
            self.mismatch = class_mismatch(loaded, bundle)
            found = list(bundle.warnings)
            if self.mismatch is None:
                gate = self.gate_spec.load() if self.gate_spec is not None else None
                self._measure, more = measure_spec(loaded, bundle, self.config, gate)
                found += more
            self._bundle, self.warnings = bundle, tuple(dict.fromkeys(found))
        return loaded

    @property
    def bundle(self) -> Any:
        if self._bundle is None:
            raise RuntimeError("VerifyJob.setup() must run before the job is used")
        return self._bundle

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_bundle"] = None
        state["_measure"] = None
        return state

    def _mask(self, folder: str | None, path: str, suffixes: Sequence[str]) -> np.ndarray | None:
        if folder is None:
            return None
        from verification.anatomy import _read_mask_file, find_mask_file

        found = find_mask_file(folder, Path(path).name, suffixes)
        return None if found is None else np.asarray(_read_mask_file(found), dtype=np.float32)

    def process(self, batch: Batch) -> list[Row]:
        """Measurement rows; an image whose forward fails (NaN, model error) alone becomes an error row."""
        if self.mismatch is not None:
            raise BundleError(self.mismatch)
        return per_sample_on_error(self._measure_rows, batch)

    def _measure_rows(self, batch: Batch, x: torch.Tensor, positions: Sequence[int]) -> list[Row]:
        from verification.anatomy import MASK_SUFFIXES
        from verification.verdict.api import label_indices
        from verification.verdict.measure import measure_batch

        items = [batch.items[pos] for pos in positions]
        labels = [self.labels[it.index] for it in items] if self.labels is not None else None
        m = measure_batch(
            self.model, self._measure, x, names=[it.path for it in items],
            labels=label_indices(labels, self.bundle.class_names, len(items)),
            lesions=[self._mask(self.annotation_dir, it.path, LESION_SUFFIXES) for it in items],
            anatomy=[self._mask(self.anatomy_dir, it.path, MASK_SUFFIXES) for it in items],
        )  # fmt: skip
        return m.rows()


def merge_verify_rows(rows: Sequence[Row], job: VerifyJob) -> VerificationReport:
    """The :class:`~verification.verdict.VerificationReport` of a run: readable images measured, unreadable
    ones listed as errors (never counted as evidence)."""
    from verification.verdict.api import assemble, cannot_verify
    from verification.verdict.measure import Measurements

    bundle, model = job.bundle, job.model
    errors = [(str(r["path"]), str(r["error"])) for r in rows if r["error"]]
    if job.mismatch is not None:
        return cannot_verify(model, bundle, job.config, job.mismatch, len(rows), job.warnings, errors)
    ok = [r for r in rows if not r["error"]]
    if not ok:
        return cannot_verify(model, bundle, job.config, "none of the images could be read", len(rows),
                             job.warnings, errors)  # fmt: skip
    m = Measurements.from_rows(ok, bundle.class_names, model.class_names, bundle.grid)
    m = dataclasses.replace(m, names=tuple(str(r["path"]) for r in ok))
    return assemble(m, model, bundle, job.config, warnings=job.warnings, errors=errors)
