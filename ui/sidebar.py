"""The shared sidebar: model A, optional model B, the images, the reference bundle.

Each section resolves the user's choice into a loaded object. When a new choice fails (a corrupt upload, a
pickle without the trust opt-in, a bundle for another model), the error is shown and the section falls back to
the last choice that worked, so every page keeps drawing what the user had before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, overload

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from ui import loaders, model_form
from ui.state import K, ModelSlotKeys, StateKey, read_once
from ui.widgets import choice, guard, switch
from verification.io.records import LoadedModel
from verification.uploads import expand_uploads, form_sidecar

DEMO_MODELS: dict[str, str] = {
    "sound": "Sound classifier",
    "healthy_seed": "Healthy classifier, another seed",
    "healthy_data": "Healthy classifier, another training sample",
    "healthy_seed_data": "Healthy classifier, another seed and sample",
    "shortcut": "Shortcut classifier (marker)",
    "shortcut_token": "Shortcut classifier (token outside the lungs)",
    "shortcut_acquisition": "Shortcut classifier (which hospital: exposure and noise)",
    "shortcut_texture": "Shortcut classifier (texture inside the lungs)",
    "garbage": "With garbage class",
    "segmentation": "Lesion segmentation",
}
DEMO_HELP = (
    "Sound and the other healthy classifiers: the same recipe on clean synthetic radiographs (other seeds, "
    "other training samples). Shortcut classifiers: each learned a cue instead of the finding — the "
    "burned-in marker letter, a token outside the lungs, the hospital's exposure and noise, or a faint "
    "texture inside the lungs. With garbage class: rejects inputs that are not chest films. Lesion "
    "segmentation: a small U-Net whose masks drive segmentation Grad-CAM."
)


def available_demo_models() -> list[str]:
    """The demo models of DEMO_MODELS whose files are in this checkout, in that order."""
    from verification import demo

    on_disk = set(demo.demo_models())
    return [name for name in DEMO_MODELS if name in on_disk]


MODEL_SOURCES = {"demo": "Built-in demo", "upload": "Upload a model"}
IMAGE_SOURCES = {"demo": "Built-in demo images", "upload": "Upload images", "pacs": "PACS"}
BUNDLE_SOURCES = {"demo": "Demo bundle", "upload": "Upload", "build": "Build from labelled images"}
MODEL_TYPES = ["safetensors", "pt", "pth", "pt2", "bin", "ckpt"]
IMAGE_TYPES = ["png", "jpg", "jpeg", "tif", "tiff", "dcm", "dicom", "zip"]
TRUST_LABEL = "I trust this file — allow executing code from it"
TRUST_HELP = (
    "Whole pickled PyTorch modules run code from the file while they load. Tick this only for a file you "
    "made yourself or got from someone you trust. Safetensors, state dicts and torch.export files never "
    "need it."
)


def trust_checkbox(key: StateKey[bool], trusted: StateKey[str | None], files: Sequence[Any]) -> bool:
    """The trust opt-in, bound to the uploads it was ticked for (Streamlit's per-upload ``file_id``): when
    other files (or none) replace them, the tick is cleared before the box is drawn, so a pickle never loads
    on a tick given to a different file."""
    chosen = "|".join(str(f.file_id) for f in files) or None
    if st.session_state.get(key.name) and trusted.get() not in (None, chosen):
        key.set(False)
        st.caption("Another file was chosen: tick the box again if you trust it.")
    trust = st.checkbox(TRUST_LABEL, key=key.name, help=TRUST_HELP)
    trusted.set(chosen if trust else None)
    return trust


@dataclass(frozen=True)
class ModelHandle:
    spec: loaders.ModelChoice
    model: LoadedModel
    lock: threading.Lock


@dataclass(frozen=True)
class Workspace:
    """What the sidebar resolved for this run; every page reads it through :func:`workspace`."""

    model_a: ModelHandle | None
    model_b: ModelHandle | None
    images: loaders.ImageSet | None
    bundle: loaders.BundleHandle | None


ImagesT = TypeVar("ImagesT", loaders.ImageSet, "loaders.ImageSet | None")
BundleT = TypeVar("BundleT", loaders.BundleHandle, "loaders.BundleHandle | None")


@dataclass(frozen=True)
class Ready(Generic[ImagesT, BundleT]):
    """The :class:`Workspace` as a page sees it after :func:`workspace` checked it: model A is there, and so
    are the images / the bundle when the page asked for them (their types say so)."""

    model_a: ModelHandle
    model_b: ModelHandle | None
    images: ImagesT
    bundle: BundleT


@overload
def workspace(
    *, images: Literal[True] = ..., bundle: Literal[False] = ...
) -> Ready[loaders.ImageSet, loaders.BundleHandle | None]: ...
@overload
def workspace(
    *, images: Literal[True] = ..., bundle: Literal[True]
) -> Ready[loaders.ImageSet, loaders.BundleHandle]: ...
@overload
def workspace(
    *, images: Literal[False], bundle: Literal[False] = ...
) -> Ready[loaders.ImageSet | None, loaders.BundleHandle | None]: ...
@overload
def workspace(
    *, images: Literal[False], bundle: Literal[True]
) -> Ready[loaders.ImageSet | None, loaders.BundleHandle]: ...
def workspace(*, images: bool = True, bundle: bool = False) -> Ready[Any, Any]:
    """What the sidebar resolved; when model A (and the images / the bundle, if asked for) is missing, the
    page says what to choose and stops there."""
    ws = K.WORKSPACE.get()
    if not isinstance(ws, Workspace):
        raise RuntimeError("the sidebar has not run yet: open pages through dashboard.py")
    missing = [
        what
        for what, absent in (
            ("a model", ws.model_a is None),
            ("images", images and ws.images is None),
            ("a reference bundle", bundle and ws.bundle is None),
        )
        if absent
    ]
    if missing or ws.model_a is None:  # model A missing is in ``missing``
        st.info(f"Choose {' and '.join(missing)} in the sidebar.", icon=":material/arrow_back:")
        st.stop()
    return Ready(model_a=ws.model_a, model_b=ws.model_b, images=ws.images, bundle=ws.bundle)


# ---------------------------------------------------------------------------------------------- models


def _source(key: StateKey[str], label: str, options: dict[str, str]) -> str:
    """A section's source choice: one row of options, its label hidden (the section's heading says it)."""
    return choice(key, label, options, horizontal=True, show_label=False)


def _choose_model(slot: ModelSlotKeys, title: str) -> loaders.ModelChoice | None:
    for key in (slot.demo_name, slot.trust, slot.architecture):
        key.init()
    source = _source(slot.source, f"{title} source", MODEL_SOURCES)
    if source == "demo":
        name = st.selectbox(
            "Demo model",
            available_demo_models(),
            format_func=lambda n: DEMO_MODELS[n],
            key=slot.demo_name.name,
            help=DEMO_HELP,
        )
        return loaders.demo_spec(str(name))
    upload = st.file_uploader(
        "Weights (.safetensors, state dict .pt/.pth, torch.export .pt2, pickled module)",
        type=MODEL_TYPES,
        key=slot.upload.name,
    )
    sidecar = st.file_uploader(
        "Sidecar JSON (architecture, classes, input size, mean/std) — optional",
        type=["json"],
        key=slot.sidecar.name,
    )
    model_form.field_slot(slot, "architecture")
    arch = st.text_input(
        "Architecture (for bare state dicts), e.g. resnet18",
        key=slot.architecture.name,
        placeholder="from sidecar",
    )
    names, task = model_form.label_fields(slot)
    trust = trust_checkbox(slot.trust, slot.trusted_file, [upload] if upload is not None else [])
    if upload is None:
        return None
    return loaders.upload_spec(
        upload.name,
        upload.getvalue(),
        sidecar_bytes=form_sidecar(sidecar.getvalue() if sidecar is not None else None, names, task),
        architecture=arch.strip() or None,
        trust=trust,
    )


def _resolve_model(slot: ModelSlotKeys, title: str) -> ModelHandle | None:
    last: loaders.ModelChoice | None = slot.last_good.get()
    spec: loaders.ModelChoice | None = None
    with guard(f"{title}: reading the choice"):
        spec = _choose_model(slot, title)
    if spec is not None:
        shown = spec.filename or spec.label
        with guard(f"{title}: loading {spec.label}") as failed, model_form.field_errors(slot, shown, failed):
            model, lock = loaders.get_model(spec)
        if not failed:
            slot.last_good.set(spec)
            _model_caption(model)
            if spec.kind == "upload":
                model_form.after_load(slot, spec.filename or "model", model)
            return ModelHandle(spec, model, lock)
    if last is None:
        if spec is None:
            st.caption("Upload a model file to use it.")
        return None
    # The new choice did not load (or is incomplete): keep what worked before.
    model, lock = loaders.get_model(last)
    st.warning(f"Still using **{last.label}**.", icon=":material/history:")
    _model_caption(model)
    return ModelHandle(last, model, lock)


def _model_caption(model: LoadedModel) -> None:
    arch = model.architecture or model.source_format
    h, w = model.input_size
    st.caption(
        f"{arch} · {model.task} · {model.in_channels}-channel {h}×{w} · "
        f"classes: {', '.join(model.class_names)}"
        + (f" · garbage class: {model.garbage_class}" if model.garbage_class else "")
    )


# ---------------------------------------------------------------------------------------------- images


def _resolve_images() -> loaders.ImageSet | None:
    K.IMAGES_SPLIT.init()
    source = _source(K.IMAGES_SOURCE, "Image source", IMAGE_SOURCES)
    last: loaders.ImageSet | None = K.IMAGES_LAST_GOOD.get()
    chosen: loaders.ImageSet | None = None
    if source == "demo":
        splits = loaders.demo_splits()
        if K.IMAGES_SPLIT.get() not in splits:
            K.IMAGES_SPLIT.set(splits[0])
        split = st.selectbox("Demo set", splits, format_func=loaders.split_label, key=K.IMAGES_SPLIT.name)
        with guard("Loading the demo images"):
            chosen = loaders.demo_image_set(split)
    elif source == "pacs":
        from ui import pacs

        chosen = pacs.image_set()
    else:
        files = st.file_uploader(
            "PNG, JPEG, TIFF or DICOM — several at once, or a zip (one folder per class gives labels)",
            type=IMAGE_TYPES,
            accept_multiple_files=True,
            key=K.IMAGES_UPLOAD.name,
        )
        if files:
            chosen = _uploaded_images(files)
    if chosen is not None and chosen.items:
        if last is None or chosen.hashes != last.hashes:
            K.IMAGE_INDEX.set(0)
        K.IMAGES_LAST_GOOD.set(chosen)
        return chosen
    if last is not None:
        st.warning(f"Still showing **{last.label}**.", icon=":material/history:")
    return last


@dataclass(frozen=True)
class _UploadRead:
    """What reading some uploads gave: the images, the files that failed and the files skipped."""

    images: loaders.ImageSet | None
    errors: tuple[str, ...]
    skipped: tuple[str, ...]

    @classmethod
    def of(cls, files: list[tuple[str, bytes]]) -> _UploadRead:
        expanded = expand_uploads(files)
        items, errors = loaders.images_from_blobs(expanded.blobs)
        images = (
            loaders.ImageSet(label=f"{len(items)} uploaded image(s)", items=tuple(items)) if items else None
        )
        return cls(images, tuple(errors), tuple(expanded.skipped))

    def show(self) -> loaders.ImageSet | None:
        for message in self.errors:
            st.error(message, icon=":material/broken_image:")
        if self.skipped:
            st.caption(f"Skipped {len(self.skipped)} non-image file(s): {', '.join(self.skipped[:5])}")
        return self.images


def _images_from_uploads(files: list[tuple[str, bytes]]) -> loaders.ImageSet | None:
    return _UploadRead.of(files).show()


def _uploaded_images(files: Sequence[Any]) -> loaders.ImageSet | None:
    """The sidebar's uploaded images, read once per set of uploads (:func:`ui.state.read_once`): a rerun with
    the same files (any widget change) reuses what was read instead of expanding the zips and hashing every
    image again; the files that failed are reported on every run."""
    read: _UploadRead | None = None
    with guard("Reading the uploaded images"):
        read = read_once(
            K.IMAGES_UPLOAD_READ, files, (), lambda: _UploadRead.of([(f.name, f.getvalue()) for f in files])
        )
    return None if read is None else read.show()  # None: the guard showed why


def _pick_image(images: loaders.ImageSet) -> None:
    K.IMAGE_INDEX.init()
    if K.IMAGE_INDEX.get() >= len(images.items):
        K.IMAGE_INDEX.set(0)
    st.selectbox(
        "Image to inspect",
        range(len(images.items)),
        format_func=lambda i: _image_title(images.items[i]),
        key=K.IMAGE_INDEX.name,
    )


def _image_title(item: loaders.WorkingImage) -> str:
    return item.image.name + (f" ({item.label})" if item.label else "")


# ---------------------------------------------------------------------------------------------- bundle


def _resolve_bundle(
    model_a: ModelHandle | None, images: loaders.ImageSet | None
) -> loaders.BundleHandle | None:
    source = _source(K.BUNDLE_SOURCE, "Reference source", BUNDLE_SOURCES)
    last: loaders.BundleHandle | None = K.BUNDLE_LAST_GOOD.get()
    chosen: loaders.BundleHandle | None = None
    model = model_a.model if model_a else None
    if source == "demo":
        with guard("Loading the demo reference bundle"):
            chosen = loaders.demo_bundle(model)
    elif source == "upload":
        files = st.file_uploader(
            "Bundle (.zip of the saved bundle, or its .npz and .json together)",
            type=["zip", "npz", "json"],
            accept_multiple_files=True,
            key=K.BUNDLE_UPLOAD.name,
        )
        if files:
            with guard("Reading the uploaded bundle"):
                chosen = loaders.bundle_from_upload([(f.name, f.getvalue()) for f in files], model)
    else:
        st.caption(
            "Upload a zip with one folder per class (e.g. `normal/…png`, `nodule/…dcm`) of images you trust; "
            "model A builds the reference maps. Or leave it empty to use the labelled images loaded above."
        )
        labelled = st.file_uploader(
            "Labelled zip", type=["zip"], accept_multiple_files=False, key=K.BUNDLE_BUILD_UPLOAD.name
        )
        if st.button("Build reference", disabled=model_a is None, type="primary"):
            assert model_a is not None
            with guard("Building the reference"):
                source_set = (
                    _images_from_uploads([(labelled.name, labelled.getvalue())]) if labelled else images
                )
                chosen = loaders.build_bundle(model_a.model, model_a.lock, source_set)
    if chosen is not None:
        K.BUNDLE_LAST_GOOD.set(chosen)
    else:
        chosen = last
    if chosen is not None:
        st.caption(chosen.summary)
        if chosen.warnings:
            with st.expander(f":material/warning: {len(chosen.warnings)} mismatch(es) with model A"):
                for warning in chosen.warnings:
                    st.caption(warning)
    return chosen


# ---------------------------------------------------------------------------------------------- frame


def render(*, model_b_now: bool) -> Callable[[], None]:
    """Draw the sidebar and store what it resolved for the pages of this run.

    Model B is resolved before the page only when ``model_b_now`` (the page compares models); otherwise its
    section is filled by the returned function after the page has drawn, so loading B never delays the
    first heatmap. Call the returned function at the end of the run (it does nothing when B was done here).
    """
    for key in K.page_widgets():
        key.persist()
    with st.sidebar:
        st.subheader("Model A")
        model_a = _resolve_model(K.MODEL_A, "Model A")
        st.subheader("Model B")
        b_on = _model_b_toggle()  # drawn before the page: the section is never empty while a page runs
        b_slot = st.container()
        model_b = _model_b_section(b_slot) if model_b_now and b_on else None
        st.subheader("Images")
        images = _resolve_images()
        if images is not None:
            _pick_image(images)
            if K.IMAGES_SOURCE.get() == "pacs" and model_a is not None:
                from ui import pacs

                pacs.store_section(model_a.model, model_a.lock, images.items[K.IMAGE_INDEX.get()])
        st.subheader("Reference")
        bundle = _resolve_bundle(model_a, images)
    K.WORKSPACE.set(Workspace(model_a=model_a, model_b=model_b, images=images, bundle=bundle))

    def finish() -> None:
        if b_on and not model_b_now:
            _model_b_section(b_slot)

    return finish


def _model_b_toggle() -> bool:
    return switch(
        K.MODEL_B_ENABLED,
        "Compare with a second model",
        help="Off by default. Model B is loaded only when this is on; Compare models uses it.",
    )


def _model_b_section(slot: DeltaGenerator) -> ModelHandle | None:
    with slot:
        return _resolve_model(K.MODEL_B, "Model B")
