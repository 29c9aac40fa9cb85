"""Cached loaders: models once per process (shared by sessions, used under a lock), results by content hash.

``st.cache_resource`` holds models, each returned with the ``threading.Lock`` that every computation on it
takes, because Streamlit sessions run in threads and a module with hooks attached is not re-entrant; it also
holds the demo image sets (frozen, read by every session; no copy per script run).
``st.cache_data`` holds pure results keyed by content hashes (model, images, method, layer, target),
so moving a slider or switching between methods already computed redraws without touching the model.

Per-image results that a batched pass produced (a whole image set's maps, predictions, or its verdict, whose
per-image evidence equals a one-image verify: ``tests/app/test_speed.py``) are kept in small process-level
stores keyed the same way, so a single image's view takes them instead of recomputing (see ``ui/warm.py``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generic, Literal, TypeVar

import numpy as np
import streamlit as st
import torch

from verification import demo
from verification.cam import compute_cams
from verification.cam.records import CamResult
from verification.consistency import CheckpointSeries, track_checkpoints
from verification.errors import BundleError, ImageLoadError, VerificationError
from verification.features import (
    FeatureReference,
    FeatureShiftReport,
    build_feature_reference,
    capture_features,
    check_features,
)
from verification.garbage import Prediction, predict
from verification.interactive import (
    ONE_PASS_METHODS,
    can_split,
    folder_images,
    labelled_for_classes,
    labels_or_none,
    layer_choices,
    method_options,
    segmentation_logits,
    split_result,
)
from verification.interactive import TargetChoice as TargetKey
from verification.interactive import reference_map as _reference_map
from verification.io.images import load_image, to_tensor
from verification.io.models import load_model, load_model_bytes
from verification.io.records import LoadedImage, LoadedModel
from verification.io.sidecar import read_sidecar_bytes
from verification.reference import ReferenceBundle, build_reference, load_bundle, load_bundle_bytes
from verification.uploads import Blob, bundle_files, expand_uploads
from verification.verdict import ImageEvidence, VerdictConfig, VerificationReport, verify


def torch_threads() -> int:
    """Intra-op threads for the dashboard's torch work: ``VERIFICATION_TORCH_THREADS``, else half the cores
    (one on a 2-core machine). Sessions share one process, and the machine is often busy: on 2 cores at a
    load average of about 6, one verify of the 60 demo test images took 3.1 s with one thread and 22.5 s
    with two (9.7 s and 45.5 s in a second pair of runs), because OpenMP workers wait for a core."""
    raw = os.environ.get("VERIFICATION_TORCH_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return max(1, (os.cpu_count() or 2) // 2)


torch.set_num_threads(torch_threads())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


V = TypeVar("V")


class _Store(Generic[V]):
    """A bounded, thread-safe map (least recently used first out) of per-image results from batched passes;
    shared by every session of the process, like ``st.cache_resource``."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def pop(self, key: Hashable) -> V | None:
        with self._lock:
            return self._items.pop(key, None)

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


# ---------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelChoice:
    """What the user chose for a model slot; enough to (re)load it. Compared and cached by ``key``."""

    kind: Literal["file", "upload"]
    label: str
    key: str  # content hash of weights (+ sidecar, architecture, trust): the cache key
    path: Path | None = None
    filename: str | None = None
    data: bytes = field(default=b"", repr=False, compare=False)
    sidecar: dict[str, object] | None = field(default=None, compare=False)
    architecture: str | None = None
    trust: bool = False


_FILE_DIGESTS: _Store[str] = _Store(1024)


def file_digest(path: Path) -> str:
    """SHA-256 of a file on the server, read again only when its size or modification time changed (the
    sidebar asks for the demo files' hashes on every rerun)."""
    st_ = path.stat()
    key = (str(path.resolve()), st_.st_size, st_.st_mtime_ns)
    found = _FILE_DIGESTS.get(key)
    if found is None:
        found = sha256(path.read_bytes())
        _FILE_DIGESTS.put(key, found)
    return found


def file_spec(path: Path, label: str) -> ModelChoice:
    """A model on disk (the demo's), keyed by the hash of its weights and sidecar."""
    digest = hashlib.sha256(file_digest(path).encode())
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        digest.update(file_digest(sidecar).encode())
    return ModelChoice(kind="file", label=label, key=digest.hexdigest(), path=path)


def demo_spec(name: str) -> ModelChoice:
    return file_spec(demo.demo_model_path(name), f"demo: {name}")


def upload_spec(
    filename: str,
    data: bytes,
    *,
    sidecar_bytes: bytes | None = None,
    architecture: str | None = None,
    trust: bool = False,
) -> ModelChoice:
    """A spec for uploaded weights; a malformed sidecar is reported here, before anything is loaded."""
    sidecar: dict[str, object] | None = None
    digest = hashlib.sha256(data)
    if sidecar_bytes:
        parsed = read_sidecar_bytes(sidecar_bytes)  # bounded: size, depth, numbers; ModelLoadError otherwise
        sidecar = parsed
        digest.update(sidecar_bytes)
    if architecture:
        digest.update(b"arch:" + architecture.encode())
    digest.update(b"trust" if trust else b"safe")
    return ModelChoice(
        kind="upload",
        label=f"upload: {filename}",
        key=digest.hexdigest(),
        filename=filename,
        data=data,
        sidecar=sidecar,
        architecture=architecture or None,
        trust=trust,
    )


def load_spec(spec: ModelChoice) -> LoadedModel:
    """The model ``spec`` names, loaded now and not cached (:func:`get_model` caches it)."""
    if spec.kind == "file":
        assert spec.path is not None
        return load_model(spec.path, name=spec.label.removeprefix("demo: "))
    assert spec.filename is not None
    return load_model_bytes(
        spec.data,
        spec.filename,
        sidecar_json=spec.sidecar,
        architecture=spec.architecture,
        trust=spec.trust,
    )


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def _cached_model(key: str, _spec: ModelChoice) -> tuple[LoadedModel, threading.Lock]:
    return load_spec(_spec), threading.Lock()


def get_model(spec: ModelChoice) -> tuple[LoadedModel, threading.Lock]:
    """The loaded model and the lock to hold while running it (shared across sessions)."""
    return _cached_model(spec.key, spec)


@st.cache_data(show_spinner=False, max_entries=32)
def model_layers(model_hash: str, _model: LoadedModel, _lock: threading.Lock) -> tuple[dict[str, str], str]:
    """Spatial layers, deepest first, as {dotted name: "C×h×w"}, and the default target layer."""
    with _lock:
        return layer_choices(_model)


# ---------------------------------------------------------------------------------------------- images


@dataclass(frozen=True, eq=False)
class WorkingImage:
    """One image in the working set with what is known about it: its class label, and (for the demo) the
    annotated lesion and the anatomical region of interest (lungs) as (H, W) bool masks."""

    image: LoadedImage
    label: str | None = None
    lesion_mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    anatomy_mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    # the file's bytes (None when not kept), e.g. for a DICOM's own window presets
    data: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, eq=False)
class ImageSet:
    label: str  # "demo: test" or "3 uploaded files"
    items: tuple[WorkingImage, ...]

    @property
    def hashes(self) -> tuple[str, ...]:
        return tuple(item.image.content_hash for item in self.items)


@st.cache_data(show_spinner=False, max_entries=4096)
def _cached_image(digest: str, name: str, _data: bytes) -> LoadedImage:
    return load_image(_data, name=name)


def image_from_bytes(name: str, data: bytes) -> LoadedImage:
    return _cached_image(sha256(data), name, data)


# st.cache_resource, not st.cache_data: one set shared by every session, as the models are (an ImageSet and
# its images are frozen and nothing writes into their arrays), where st.cache_data unpickled a copy in every
# script run (the 60-image test set: 20 MB, 58 ms a run on our busy 2 cores).
@st.cache_resource(show_spinner="Loading the demo images…", max_entries=16)
def demo_image_set(split: str) -> ImageSet:
    items = []
    for entry in demo.demo_images(split):
        image = load_image(entry.path)
        items.append(
            WorkingImage(
                image=image,
                label=entry.label,
                lesion_mask=entry.load_mask("lesion"),
                anatomy_mask=entry.load_mask("lung"),
            )
        )
    return ImageSet(label=f"demo: {split}", items=tuple(items))


def images_from_blobs(blobs: Sequence[Blob]) -> tuple[list[WorkingImage], list[str]]:
    """Load every blob; a bad file becomes an error line and the rest still load."""
    items: list[WorkingImage] = []
    errors: list[str] = []
    for blob in blobs:
        try:
            items.append(
                WorkingImage(image=image_from_bytes(blob.name, blob.data), label=blob.label, data=blob.data)
            )
        except VerificationError as exc:
            errors.append(f"{blob.name}: {exc}")
    return items, errors


# ---------------------------------------------------------------------------------------------- maps


@st.cache_data(show_spinner=False, max_entries=512)
def one_pass_cams(
    model_hash: str,
    image_hash: str,
    layer: str,
    target: TargetKey,
    _model: LoadedModel,
    _lock: threading.Lock,
    _image: LoadedImage,
) -> dict[str, CamResult]:
    """Every gradient-family CAM of one image from one forward and one backward, cached together."""
    done = _PRECOMPUTED_CAMS.pop((model_hash, image_hash, layer, target))
    if done is not None:
        return done
    with _lock:
        x = to_tensor(_image, _model)
        results = compute_cams(_model, x, methods=ONE_PASS_METHODS, layers=[layer], target=target.build())
    return {r.method: r for r in results}


@st.cache_data(show_spinner=False, max_entries=256)
def extra_map(
    model_hash: str,
    image_hash: str,
    method: str,
    layer: str,
    target: TargetKey,
    _model: LoadedModel,
    _lock: threading.Lock,
    _image: LoadedImage,
) -> CamResult:
    """A method that needs its own passes (Score-/Ablation-CAM, captum attributions), with the interactive
    settings of :func:`verification.interactive.method_options` (named in the method labels)."""
    with _lock:
        x = to_tensor(_image, _model)
        return compute_cams(
            _model,
            x,
            methods=(method,),
            layers=[layer],
            target=target.build(),
            options=method_options(method, _model.input_size),
        )[0]


# Maps of images not yet shown, from one batched pass over their set (popped when one_pass_cams takes them).
_PRECOMPUTED_CAMS: _Store[dict[str, CamResult]] = _Store(256)


def _cam_key(model: LoadedModel, image: LoadedImage, layer: str, target: TargetKey) -> Hashable:
    return (model.content_hash, image.content_hash, layer, target)


def precompute_cams(
    model: LoadedModel,
    lock: threading.Lock,
    images: Sequence[LoadedImage],
    *,
    layer: str,
    target: TargetKey,
    batch_size: int = 16,
) -> int:
    """The gradient-family maps of ``images`` in batches (one forward and one backward per batch), kept
    for :func:`one_pass_cams`; returns how many images were computed (0 when a result type has per-sample
    fields this function does not know how to split, so nothing wrong is ever stored)."""
    if not can_split():
        return 0
    todo = list({im.content_hash: im for im in images}.values())
    todo = [im for im in todo if _cam_key(model, im, layer, target) not in _PRECOMPUTED_CAMS]
    for s in range(0, len(todo), batch_size):
        chunk = todo[s : s + batch_size]
        with lock:
            x = to_tensor(chunk, model)
            results = compute_cams(model, x, methods=ONE_PASS_METHODS, layers=[layer], target=target.build())
        for j, im in enumerate(chunk):
            maps = {r.method: split_result(r, j) for r in results}
            _PRECOMPUTED_CAMS.put(_cam_key(model, im, layer, target), maps)
    return len(todo)


def cam_for(
    model: LoadedModel,
    lock: threading.Lock,
    image: LoadedImage,
    *,
    method: str,
    layer: str,
    target: TargetKey,
) -> CamResult:
    if method in ONE_PASS_METHODS:
        return one_pass_cams(model.content_hash, image.content_hash, layer, target, model, lock, image)[
            method
        ]
    return extra_map(model.content_hash, image.content_hash, method, layer, target, model, lock, image)


# ---------------------------------------------------------------------------------------------- predictions


@st.cache_data(show_spinner=False, max_entries=512)
def _predict(
    model_hash: str, image_hash: str, _model: LoadedModel, _lock: threading.Lock, _image: LoadedImage
) -> Prediction:
    done = _PRECOMPUTED_PREDICTIONS.pop((model_hash, image_hash))
    if done is not None:
        return done
    with _lock:
        return predict(_model, [_image])[0]


_PRECOMPUTED_PREDICTIONS: _Store[Prediction] = _Store(4096)


def precompute_predictions(
    model: LoadedModel, lock: threading.Lock, images: Sequence[LoadedImage], *, batch_size: int = 32
) -> int:
    """Predictions for ``images`` in batches, kept for :func:`prediction`; returns how many were computed."""
    todo = list({im.content_hash: im for im in images}.values())
    todo = [im for im in todo if (model.content_hash, im.content_hash) not in _PRECOMPUTED_PREDICTIONS]
    for s in range(0, len(todo), batch_size):
        chunk = todo[s : s + batch_size]
        with lock:
            preds = predict(model, chunk, batch_size=batch_size)
        for im, pred in zip(chunk, preds):
            # a one-image prediction is sample 0 of its batch
            _PRECOMPUTED_PREDICTIONS.put((model.content_hash, im.content_hash), replace(pred, index=0))
    return len(todo)


def prediction(model: LoadedModel, lock: threading.Lock, image: LoadedImage) -> Prediction:
    """The classifier's answer for one image; a garbage-class win is a rejection, never a diagnosis."""
    return _predict(model.content_hash, image.content_hash, model, lock, image)


@st.cache_data(show_spinner=False, max_entries=128)
def _segmentation_logits(
    model_hash: str, image_hash: str, _model: LoadedModel, _lock: threading.Lock, _image: LoadedImage
) -> torch.Tensor:
    """(1, C, H, W) logits of a segmentation model for one image."""
    with _lock:
        return segmentation_logits(_model, _image)


def segmentation_mask(
    model: LoadedModel, lock: threading.Lock, image: LoadedImage, target: TargetKey
) -> np.ndarray:
    """The region the segmentation target sums over (the backend's rule: pixels of ``target.cls`` at or above
    its threshold), (H, W) bool."""
    logits = _segmentation_logits(model.content_hash, image.content_hash, model, lock, image)
    return target.region(logits)


# ---------------------------------------------------------------------------------------------- demo


def demo_splits() -> list[str]:
    """The demo image sets, the in-distribution test set first (the demo's own order)."""
    return demo.demo_splits_ordered()


def split_label(split: str) -> str:
    return demo.split_label(split)


def demo_samples() -> list[tuple[Path, str]]:
    """Files a user can download and upload again (PNG, DICOM, a model in each format with its sidecar),
    each with a short description."""
    out: list[tuple[Path, str]] = []
    for sample in demo.demo_samples():
        what = str(sample.get("description") or sample.get("format") or sample.get("kind") or "")
        out.append((Path(sample["path"]), what))
        if sample.get("sidecar"):
            out.append(
                (demo.demo_root() / str(sample["sidecar"]), f"JSON sidecar of {Path(sample['path']).name}")
            )
    return out


# ---------------------------------------------------------------------------------------------- references


@dataclass(frozen=True)
class BundleHandle:
    """A loaded reference bundle with where it came from and what the loader warned about."""

    bundle: ReferenceBundle = field(repr=False, compare=False)
    key: str  # content hash of the bundle files (+ the model it was checked against)
    label: str
    summary: str
    warnings: tuple[str, ...] = ()


def _bundle_handle(bundle: ReferenceBundle, key: str, label: str, caught: list[str]) -> BundleHandle:
    classes = ", ".join(bundle.class_names)
    layer = bundle.layer or "the model's default layer"
    summary = f"{label}: {bundle.method} at {layer} · classes {classes}"
    return BundleHandle(bundle=bundle, key=key, label=label, summary=summary, warnings=tuple(caught))


def _load_checked(path: Path, model: LoadedModel | None) -> tuple[ReferenceBundle, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_bundle(path, model=model)
    return bundle, [str(w.message) for w in caught]


@st.cache_data(show_spinner="Loading the reference bundle…", max_entries=16)
def _cached_bundle(
    digest: str, model_hash: str | None, path: str, _model: LoadedModel | None
) -> BundleHandle:
    bundle, caught = _load_checked(Path(path), _model)
    return _bundle_handle(bundle, f"{digest}:{model_hash}", Path(path).name, caught)


def _digest_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for p in sorted(paths):
        digest.update(p.name.encode())
        digest.update(file_digest(p).encode())
    return digest.hexdigest()


def demo_bundle(model: LoadedModel | None) -> BundleHandle:
    path = demo.demo_reference_bundle()
    files = [p for p in path.parent.glob(path.stem + ".*")] if path.is_file() else list(path.rglob("*"))
    digest = _digest_files([p for p in files if p.is_file()])
    handle = _cached_bundle(digest, model.content_hash if model else None, str(path), model)
    return replace(handle, label="demo bundle", summary=handle.summary.replace(path.name, "demo bundle", 1))


@st.cache_data(show_spinner="Reading the uploaded bundle…", max_entries=8)
def _bundle_from_files(
    digest: str, model_hash: str | None, _files: tuple[tuple[str, bytes], ...], _model: LoadedModel | None
) -> BundleHandle:
    found = bundle_files(_files)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_bundle_bytes(
            found.arrays,
            found.manifest,
            model=_model,
            name=found.arrays_name,
            manifest_name=found.manifest_name,
        )
    label = f"uploaded bundle {found.manifest_name}"
    return _bundle_handle(bundle, f"{digest}:{model_hash}", label, [str(w.message) for w in caught])


def bundle_from_upload(files: Sequence[tuple[str, bytes]], model: LoadedModel | None) -> BundleHandle:
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode())
        digest.update(data)
    return _bundle_from_files(digest.hexdigest(), model.content_hash if model else None, tuple(files), model)


# ---------------------------------------------------------------------------------------------- consistency


@st.cache_data(show_spinner=False, max_entries=8)
def checkpoint_series(
    checkpoint_digest: str,
    image_hashes: tuple[str, ...],
    methods: tuple[str, ...],
    tau: float,
    gamma: float,
    _checkpoints: tuple[Path, ...],
    _images: tuple[LoadedImage, ...],
    _labels: tuple[int, ...],
) -> CheckpointSeries:
    """AUC, accuracy and C-Score per method and class for each checkpoint (cached by content)."""
    return track_checkpoints(
        list(_checkpoints), list(_images), list(_labels), methods=methods, tau=tau, gamma=gamma
    )


def demo_checkpoint_series(
    images: ImageSet, class_names: Sequence[str], methods: Sequence[str], tau: float, gamma: float
) -> CheckpointSeries:
    """The demo's checkpoint series on the labelled images of ``images``."""
    paths = tuple(demo.demo_checkpoints())
    if not paths:
        raise BundleError("The demo has no checkpoint series; build it with 'python -m assets.make_demo'.")
    labelled = labelled_for_classes(
        images.items, class_names, advice="choose a labelled demo set or a zip with one folder per class"
    )
    digest = _digest_files(list(paths))
    return checkpoint_series(
        digest,
        tuple(item.image.content_hash for item in labelled),
        tuple(methods),
        float(tau),
        float(gamma),
        paths,
        tuple(item.image for item in labelled),
        tuple(class_names.index(str(item.label)) for item in labelled),
    )


def demo_checkpoint_paths() -> list[Path]:
    return demo.demo_checkpoints()


def checkpoint_class_names() -> tuple[str, ...]:
    paths = demo.demo_checkpoints()
    if not paths:
        raise BundleError("The demo has no checkpoint series; build it with 'python -m assets.make_demo'.")
    model, _ = get_model(file_spec(paths[0], "checkpoint 0"))
    return model.class_names


def labelled_or_demo(images: ImageSet | None) -> ImageSet:
    """The current images if every one has a class label, else the demo test set."""
    if images is not None and images.items and all(item.label for item in images.items):
        return images
    return demo_image_set("test")


# ---------------------------------------------------------------------------------------------- verification

ProgressFn = Callable[[int, int], None]


def _verify_items(
    model: LoadedModel,
    lock: threading.Lock,
    bundle: ReferenceBundle,
    items: Sequence[WorkingImage],
    config: VerdictConfig,
    progress: ProgressFn | None,
) -> VerificationReport:
    """The backend's one verify over the items, with their labels and masks (None where unknown)."""
    if not items:
        raise BundleError("No images to verify: choose or upload some in the sidebar.")
    with lock:
        return verify(
            model,
            bundle,
            [item.image for item in items],
            labels_or_none(items),
            annotations=[item.lesion_mask for item in items],
            anatomy=[item.anatomy_mask for item in items],
            config=config,
            progress=progress,
        )


# Verdicts by content (model, bundle, each image's hash, name, label and masks, configuration). Not an
# st.cache_data: a page's progress callback draws while the verify runs, and st.cache_data would record
# those calls and replay them into a layout block of another run (CacheReplayClosureError).
_VERIFIED: _Store[VerificationReport] = _Store(64)
_VERIFYING: dict[Hashable, threading.Lock] = {}
_VERIFYING_LOCK = threading.Lock()


def _cached_verify(
    model: LoadedModel,
    lock: threading.Lock,
    bundle: BundleHandle,
    items: tuple[WorkingImage, ...],
    config: VerdictConfig,
    progress: ProgressFn | None,
) -> VerificationReport:
    key = (model.content_hash, bundle.key, config, tuple(_item_key(item) for item in items))
    found = _VERIFIED.get(key)
    if found is not None:
        return found
    with _VERIFYING_LOCK:  # one computation per key: a second caller (a warm start) waits for the first
        key_lock = _VERIFYING.setdefault(key, threading.Lock())
    try:
        with key_lock:
            found = _VERIFIED.get(key)
            if found is None:
                found = _verify_items(model, lock, bundle.bundle, items, config, progress)
                _VERIFIED.put(key, found)
                if len(found.images) == len(items):
                    for item, ev in zip(items, found.images):
                        if ev.name == item.image.name:
                            _EVIDENCE.put(_evidence_key(model.content_hash, bundle.key, item, config), ev)
    finally:
        with _VERIFYING_LOCK:
            _VERIFYING.pop(key, None)
    return found


def clear_stores() -> None:
    """Empty the process-level stores (verdicts, per-image evidence, precomputed maps and predictions)."""
    for store in (_VERIFIED, _EVIDENCE, _PRECOMPUTED_CAMS, _PRECOMPUTED_PREDICTIONS):
        store.clear()


def _item_key(item: WorkingImage) -> Hashable:
    return (
        item.image.content_hash,
        item.image.name,
        item.label,
        item.lesion_mask is not None,
        item.anatomy_mask is not None,
    )


# Each image's evidence from every verify the dashboard ran (a set's verdict gives all of its images'):
# one image's evidence does not depend on the other images of its run (tests/app/test_speed.py).
_EVIDENCE: _Store[ImageEvidence] = _Store(20_000)


def _evidence_key(model_hash: str, bundle_key: str, item: WorkingImage, config: VerdictConfig) -> Hashable:
    return (model_hash, bundle_key, config, _item_key(item))


def image_evidence(
    model: LoadedModel,
    lock: threading.Lock,
    bundle: BundleHandle,
    item: WorkingImage,
    *,
    faithfulness: bool = False,
) -> ImageEvidence | None:
    """One image's evidence (E0 gate, per-line numbers): from the verdict of a set that held it when one was
    computed (the Similarity page, the warm start), else from a verify of this image alone."""
    config = VerdictConfig(faithfulness=faithfulness)
    found = _EVIDENCE.get(_evidence_key(model.content_hash, bundle.key, item, config))
    if found is not None:
        return found
    single = verify_items(model, lock, bundle, [item], faithfulness=faithfulness)
    return single.images[0] if single.images else None


def verify_items(
    model: LoadedModel,
    lock: threading.Lock,
    bundle: BundleHandle,
    items: Sequence[WorkingImage],
    *,
    faithfulness: bool = False,
    progress: ProgressFn | None = None,
) -> VerificationReport:
    """The verdict of a model on some images against a bundle (cached by content: model, bundle, images,
    labels, configuration). ``faithfulness`` runs E6 (~40 extra forwards per image)."""
    config = VerdictConfig(faithfulness=faithfulness)
    return _cached_verify(model, lock, bundle, tuple(items), config, progress)


def verify_set(
    model: LoadedModel,
    lock: threading.Lock,
    bundle: BundleHandle,
    images: ImageSet,
    *,
    faithfulness: bool = False,
    progress: ProgressFn | None = None,
) -> VerificationReport:
    """The verdict of a model on the working image set."""
    return verify_items(model, lock, bundle, images.items, faithfulness=faithfulness, progress=progress)


def build_bundle(model: LoadedModel, lock: threading.Lock, images: ImageSet | None) -> BundleHandle:
    """A reference bundle built by ``model`` from labelled images (folder names in a zip, or demo labels)."""
    if images is None or not images.items:
        raise BundleError(
            "Building a reference needs labelled images: upload a zip with one folder per class."
        )
    if any(item.label is None for item in images.items):
        raise BundleError("Every reference image needs its class: upload a zip with one folder per class.")
    with lock:
        # the backend checks that every label is one of the model's classes
        bundle = build_reference(model, [i.image for i in images.items], [str(i.label) for i in images.items])
    label = f"built from {images.label}"
    key = sha256(("built", model.content_hash, *images.hashes).__repr__().encode())
    return _bundle_handle(bundle, key, label, [])


def reference_map(bundle: BundleHandle, class_name: str) -> np.ndarray | None:
    """The reference map (h, w) in [0, 1] of a class, or None when the bundle has none for it."""
    return _reference_map(bundle.bundle, class_name)


# ---------------------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Source:
    """One image of a dataset check: a file on the server or uploaded bytes, read by the backend when its
    batch runs (a dataset need not fit in memory)."""

    name: str
    label: str | None
    path: Path | None = None
    data: bytes = field(default=b"", repr=False)


def sources_from_folder(folder: str) -> list[Source]:
    """A folder on this machine: one subfolder per class gives labels, otherwise every image unlabelled."""
    from verification import server_paths

    root = server_paths.resolve_folder(folder)  # only inside the folders the operator allows (off by default)
    paths, labels = folder_images(root)
    inside = set(server_paths.keep_within_roots(paths)[0])  # links that lead out of the roots are dropped
    return [Source(str(p.relative_to(root)), lab, path=p) for p, lab in zip(paths, labels) if p in inside]


def sources_from_upload(files: Sequence[tuple[str, bytes]]) -> tuple[list[Source], tuple[str, ...]]:
    """Uploaded files or zips (labels from folder names); also the names of skipped non-image entries."""
    expanded = expand_uploads(files, retain=False)  # the backend decodes them one chunk at a time
    return [Source(b.name, b.label, data=b.data) for b in expanded.blobs], expanded.skipped


@dataclass(frozen=True, eq=False)
class DatasetResult:
    label: str
    report: VerificationReport


def verify_sources(
    model: LoadedModel,
    lock: threading.Lock,
    bundle: BundleHandle,
    sources: Sequence[Source],
    *,
    label: str,
    faithfulness: bool = False,
    progress: ProgressFn | None = None,
) -> DatasetResult:
    """The verdict on a dataset: the backend reads each file when its turn comes (unreadable files become
    the report's errors) and the progress bar moves as it goes."""
    if not sources:
        raise ImageLoadError("No images found there.")
    inputs = [src.path if src.path is not None else src.data for src in sources]
    with lock:
        report = verify(
            model,
            bundle.bundle,
            inputs,
            labels_or_none(sources),
            config=VerdictConfig(faithfulness=faithfulness),
            progress=progress,
            names=[src.name for src in sources],
        )
    return DatasetResult(label=label, report=report)


# ---------------------------------------------------------------------------------------------- features

FEATURE_REFERENCE_SPLIT = "reference"


@st.cache_data(show_spinner="Describing the reference set's early feature maps…", max_entries=8)
def _feature_reference(model_hash: str, _model: LoadedModel, _lock: threading.Lock) -> FeatureReference:
    items = demo_image_set(FEATURE_REFERENCE_SPLIT).items
    with _lock:
        return build_feature_reference(_model, [item.image for item in items])


def feature_reference(model: LoadedModel, lock: threading.Lock) -> FeatureReference:
    """Early-layer statistics of the demo's trusted, in-distribution reference set under ``model``."""
    return _feature_reference(model.content_hash, model, lock)


@st.cache_data(show_spinner=False, max_entries=32)
def _feature_check(
    model_hash: str,
    image_hashes: tuple[str, ...],
    _model: LoadedModel,
    _lock: threading.Lock,
    _reference: FeatureReference,
    _images: tuple[LoadedImage, ...],
) -> FeatureShiftReport:
    with _lock:
        return check_features(_model, _reference, list(_images))


def feature_check(model: LoadedModel, lock: threading.Lock, images: ImageSet) -> FeatureShiftReport:
    """Shift score and structure similarity of every working image against the reference set."""
    ref = feature_reference(model, lock)
    return _feature_check(
        model.content_hash, images.hashes, model, lock, ref, tuple(i.image for i in images.items)
    )


@st.cache_data(show_spinner=False, max_entries=64)
def _activations(
    model_hash: str,
    image_hash: str,
    layers: tuple[str, ...],
    _model: LoadedModel,
    _lock: threading.Lock,
    _image: LoadedImage,
) -> dict[str, np.ndarray]:
    with _lock:
        acts = capture_features(_model.module, to_tensor(_image, _model), layers)
    return {name: acts[name][0].numpy() for name in layers}


def early_activations(
    model: LoadedModel, lock: threading.Lock, image: LoadedImage, reference: FeatureReference
) -> dict[str, np.ndarray]:
    """(C, h, w) activations of the reference's early layers for one image."""
    return _activations(model.content_hash, image.content_hash, reference.layers, model, lock, image)
