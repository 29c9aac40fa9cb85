"""Cached loaders: models once per process (shared by sessions, used under a lock), results by content hash.

``st.cache_resource`` holds models, each returned with the ``threading.Lock`` that every computation on it
takes, because Streamlit sessions run in threads and a module with hooks attached is not re-entrant.
``st.cache_data`` holds pure results keyed by content hashes (model, images, method, layer, target),
so moving a slider or switching between methods already computed redraws without touching the model.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

import numpy as np
import streamlit as st

from ui.uploads import Blob, expand_zip
from verification.io.images import load_image
from verification.io.models import load_model, load_model_bytes

if TYPE_CHECKING:
    from verification.reference import ReferenceBundle
from verification import demo
from verification.cam import compute_attribution, compute_cams, default_target_layer, list_layers
from verification.cam.records import CamResult
from verification.cam.targets import ClassLogit, SegmentationTarget, Target
from verification.errors import BundleError, ModelLoadError
from verification.io.records import LoadedImage, LoadedModel

# The gradient family: one forward and one backward give all of them (multi-scale Grad-CAM++ adds its depths
# to the same capture), so they are computed and cached together and switching between them never recomputes.
ONE_PASS_METHODS: tuple[str, ...] = (
    "gradcam",
    "gradcampp",
    "xgradcam",
    "hirescam",
    "layercam",
    "eigencam",
    "ms_gradcampp",
)
EXTRA_CAM_METHODS: tuple[str, ...] = ("scorecam", "ablationcam")
ATTRIBUTION_METHODS: tuple[str, ...] = ("saliency", "integrated_gradients", "occlusion")
ALL_METHODS: tuple[str, ...] = ONE_PASS_METHODS + EXTRA_CAM_METHODS + ATTRIBUTION_METHODS
METHOD_LABELS: dict[str, str] = {
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM (class-agnostic)",
    "ms_gradcampp": "Multi-scale Grad-CAM++",
    "scorecam": "Score-CAM (slow)",
    "ablationcam": "Ablation-CAM (slow)",
    "saliency": "Gradient saliency",
    "integrated_gradients": "Integrated Gradients (slow)",
    "occlusion": "Occlusion sensitivity (slow)",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class TargetKey:
    """What the map explains, as a hashable cache key: a class logit (None: the predicted class), or for a
    segmentation model the pixels of ``cls`` whose probability is at least ``threshold``."""

    kind: Literal["logit", "segmentation"] = "logit"
    cls: int | None = None
    threshold: float = 0.5

    def build(self) -> Target:
        if self.kind == "segmentation":
            return SegmentationTarget(self.cls, threshold=self.threshold)
        return ClassLogit(self.cls)


# ---------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSpec:
    """What the user chose for a model slot; enough to (re)load it. Compared and cached by ``key``."""

    kind: Literal["demo", "upload"]
    label: str
    key: str  # content hash of weights (+ sidecar, architecture, trust): the cache key
    demo_name: str | None = None
    filename: str | None = None
    data: bytes = field(default=b"", repr=False, compare=False)
    sidecar: dict[str, object] | None = field(default=None, compare=False)
    architecture: str | None = None
    trust: bool = False


def demo_spec(name: str) -> ModelSpec:
    path = demo.demo_model_path(name)
    digest = hashlib.sha256(path.read_bytes())
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        digest.update(sidecar.read_bytes())
    return ModelSpec(kind="demo", label=f"demo: {name}", key=digest.hexdigest(), demo_name=name)


def upload_spec(
    filename: str,
    data: bytes,
    *,
    sidecar_bytes: bytes | None = None,
    architecture: str | None = None,
    trust: bool = False,
) -> ModelSpec:
    """A spec for uploaded weights; a malformed sidecar is reported here, before anything is loaded."""
    sidecar: dict[str, object] | None = None
    digest = hashlib.sha256(data)
    if sidecar_bytes:
        try:
            parsed = json.loads(sidecar_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(
                f"The sidecar is not valid JSON ({exc}); fix it or upload without it."
            ) from exc
        if not isinstance(parsed, dict):
            raise ModelLoadError('The sidecar must be a JSON object such as {"architecture": "resnet18"}.')
        sidecar = parsed
        digest.update(sidecar_bytes)
    if architecture:
        digest.update(b"arch:" + architecture.encode())
    digest.update(b"trust" if trust else b"safe")
    return ModelSpec(
        kind="upload",
        label=f"upload: {filename}",
        key=digest.hexdigest(),
        filename=filename,
        data=data,
        sidecar=sidecar,
        architecture=architecture or None,
        trust=trust,
    )


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def _cached_model(key: str, _spec: ModelSpec) -> tuple[LoadedModel, threading.Lock]:
    if _spec.kind == "demo":
        assert _spec.demo_name is not None
        model = load_model(demo.demo_model_path(_spec.demo_name), name=_spec.demo_name)
    else:
        assert _spec.filename is not None
        model = load_model_bytes(
            _spec.data,
            _spec.filename,
            sidecar_json=_spec.sidecar,
            architecture=_spec.architecture,
            trust=_spec.trust,
        )
    return model, threading.Lock()


def get_model(spec: ModelSpec) -> tuple[LoadedModel, threading.Lock]:
    """The loaded model and the lock to hold while running it (shared across sessions)."""
    return _cached_model(spec.key, spec)


@st.cache_data(show_spinner=False, max_entries=32)
def model_layers(model_hash: str, _model: LoadedModel, _lock: threading.Lock) -> tuple[dict[str, str], str]:
    """Layers with a spatial output, deepest first, as {dotted name: "C×h×w"}, and the default target layer."""
    shape = (1, _model.in_channels, *_model.input_size)
    with _lock:
        infos = list_layers(_model.module, shape)
        default = default_target_layer(_model.module, shape)
    spatial = {
        info.name: "×".join(str(s) for s in info.output_shape[1:])
        for info in reversed(infos)
        if info.spatial and info.output_shape is not None
    }
    return spatial, default


# ---------------------------------------------------------------------------------------------- images


@dataclass(frozen=True, eq=False)
class ImageItem:
    """One image in the working set with what is known about it (label and masks only for the demo)."""

    image: LoadedImage
    label: str | None = None
    lesion_mask: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, eq=False)
class ImageSet:
    label: str  # "demo: test" or "3 uploaded files"
    items: tuple[ImageItem, ...]

    @property
    def hashes(self) -> tuple[str, ...]:
        return tuple(item.image.content_hash for item in self.items)


@st.cache_data(show_spinner=False, max_entries=4096)
def _cached_image(digest: str, name: str, _data: bytes) -> LoadedImage:
    return load_image(_data, name=name)


def image_from_bytes(name: str, data: bytes) -> LoadedImage:
    return _cached_image(sha256(data), name, data)


def _mask(path: Path | None) -> np.ndarray | None:
    if path is None:
        return None
    return load_image(path).pixels > 0.5


@st.cache_data(show_spinner="Loading the demo images…", max_entries=16)
def demo_image_set(split: str) -> ImageSet:
    items = []
    for entry in demo.demo_images(split):
        image = load_image(entry.path)
        items.append(ImageItem(image=image, label=entry.label, lesion_mask=_mask(entry.lesion_mask)))
    return ImageSet(label=f"demo: {split}", items=tuple(items))


def images_from_blobs(blobs: Sequence[Blob]) -> tuple[list[ImageItem], list[str]]:
    """Load every blob; a bad file becomes an error line and the rest still load."""
    from verification.errors import VerificationError

    items: list[ImageItem] = []
    errors: list[str] = []
    for blob in blobs:
        try:
            items.append(ImageItem(image=image_from_bytes(blob.name, blob.data), label=blob.label))
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
    from verification.io.images import to_tensor

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
    """A method that needs its own passes (multi-scale, Score-/Ablation-CAM, captum attributions)."""
    from verification.io.images import to_tensor

    with _lock:
        x = to_tensor(_image, _model)
        if method in ATTRIBUTION_METHODS:
            return compute_attribution(_model, x, method=method, target=target.build())
        return compute_cams(_model, x, methods=(method,), layers=[layer], target=target.build())[0]


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


@dataclass(frozen=True)
class Prediction:
    """The top class of one image; ``rejected`` when that class is the model's garbage class."""

    index: int
    label: str
    probability: float
    rejected: bool


def prediction(model: LoadedModel, result: CamResult, sample: int = 0) -> Prediction:
    probs = result.probs[sample]
    index = int(np.argmax(probs))
    return Prediction(
        index=index,
        label=model.class_names[index],
        probability=float(probs[index]),
        rejected=model.garbage_index is not None and index == model.garbage_index,
    )


@st.cache_data(show_spinner=False, max_entries=128)
def _segmentation_probs(
    model_hash: str, image_hash: str, _model: LoadedModel, _lock: threading.Lock, _image: LoadedImage
) -> np.ndarray:
    """(C, H, W) per-pixel class probabilities at the model's input size."""
    import torch

    from verification.cam.targets import output_tensor
    from verification.io.images import to_tensor

    with _lock, torch.inference_mode():
        logits = output_tensor(_model.module(to_tensor(_image, _model)))[0].float()
    probs = torch.sigmoid(logits) if logits.shape[0] == 1 else torch.softmax(logits, dim=0)
    return probs.numpy()


def segmentation_mask(
    model: LoadedModel, lock: threading.Lock, image: LoadedImage, target: TargetKey
) -> np.ndarray:
    """The region the segmentation target sums over: pixels of ``target.cls`` at or above its threshold."""
    probs = _segmentation_probs(model.content_hash, image.content_hash, model, lock, image)
    cls = 0 if target.cls is None else target.cls
    return probs[cls] >= target.threshold


# ---------------------------------------------------------------------------------------------- demo


@st.cache_data(show_spinner=False)
def demo_splits() -> list[str]:
    """The demo image sets present in the manifest, the test set first."""
    shifts = ("exposure", "noise", "blur", "inverted", "rotation")
    order = ["test", "reference", "shortcut_swapped", *[f"shifted_{k}" for k in shifts], "ood"]
    present = [split for split in order if _has_split(split)]
    return present or ["test"]


def _has_split(split: str) -> bool:
    try:
        return bool(demo.demo_images(split))
    except (KeyError, ValueError, FileNotFoundError):
        return False


def split_label(split: str) -> str:
    labels = {
        "test": "Test set (in distribution)",
        "reference": "Reference set (trusted)",
        "shortcut_swapped": "Markers swapped between classes",
        "ood": "Out of distribution (not chest films)",
    }
    if split.startswith("shifted_"):
        return f"Domain shift: {split.removeprefix('shifted_')}"
    return labels.get(split, split)


def demo_samples() -> list[Path]:
    """Files a user can download and upload again (PNG, DICOM, a model in each format)."""
    folder = demo.demo_root() / "samples"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


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
    summary = f"{label}: {bundle.method} at {bundle.layer} · classes {classes}"
    return BundleHandle(bundle=bundle, key=key, label=label, summary=summary, warnings=tuple(caught))


def _load_checked(path: Path, model: LoadedModel | None) -> tuple[ReferenceBundle, list[str]]:
    from verification.reference import load_bundle

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
        digest.update(p.read_bytes())
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
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        root = Path(tmp)
        names: list[str] = []
        for blob in expand_bundle_upload(_files):
            target = root / PurePosixPath(blob.name).name
            target.write_bytes(blob.data)
            names.append(target.name)
        manifests = [n for n in names if n.endswith(".json")]
        if not manifests:
            raise BundleError("The bundle upload needs the bundle's .json manifest (and its .npz arrays).")
        bundle, caught = _load_checked(root / manifests[0], _model)
    return _bundle_handle(bundle, f"{digest}:{model_hash}", f"uploaded bundle {manifests[0]}", caught)


def bundle_from_upload(files: Sequence[tuple[str, bytes]], model: LoadedModel | None) -> BundleHandle:
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode())
        digest.update(data)
    return _bundle_from_files(digest.hexdigest(), model.content_hash if model else None, tuple(files), model)


def expand_bundle_upload(files: Sequence[tuple[str, bytes]]) -> list[Blob]:
    """A bundle arrives as its files (.npz + .json) or as one zip holding them."""
    out: list[Blob] = []
    for name, data in files:
        if name.lower().endswith(".zip"):
            out.extend(expand_zip(name, data, suffixes=frozenset({".npz", ".json"})).blobs)
        else:
            out.append(Blob(name, data))
    return out
