"""Consistency on the user's own run: an uploaded checkpoint series (several files, or one zip) and a labelled
evaluation set, read with the same safe loaders and archive limits as every other upload.

Weights are read as tensors (safetensors, ``torch.load(weights_only=True)``) or inspected ``torch.export``
programs through :func:`ui.loaders.upload_spec` / :func:`ui.loaders.get_model`; a pickled module is executed
only with the page's explicit trust tick. A zip is expanded with :func:`ui.uploads.expand_zip` (entry count,
decompressed bytes, compression ratio bounded; unsafe names refused). A JSON file beside a weights file with
the same stem is its sidecar (classes, input size, mean/std); checkpoints are taken in natural name order
(``epoch_2`` before ``epoch_10``), which is the training order the page shows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import streamlit as st

from ui import loaders
from ui.uploads import MAX_ZIP_ENTRIES, MAX_ZIP_TOTAL_BYTES, Blob, expand_uploads, expand_zip, is_zip
from verification.consistency import CheckpointSeries, track_checkpoints
from verification.errors import ImageLoadError, ModelLoadError
from verification.io.budget import Budget, ResourceLimits
from verification.io.records import LoadedModel

WEIGHT_SUFFIXES = frozenset({".safetensors", ".pt", ".pth", ".pt2", ".bin", ".ckpt"})
MAX_CHECKPOINTS = 50


@dataclass(frozen=True)
class Checkpoint:
    """One uploaded checkpoint: its name (the file's stem), the spec that loads it, and its sidecar's name."""

    name: str
    spec: loaders.ModelSpec
    sidecar: str | None


def _natural(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def checkpoint_files(files: Sequence[tuple[str, bytes]]) -> list[Blob]:
    """Weights and JSON sidecars from the uploaded files; zips expanded within the upload's archive limits
    (the same as every upload: entries, decompressed bytes across all archives, compression ratio)."""
    budget = Budget(
        ResourceLimits(max_archive_entries=MAX_ZIP_ENTRIES, max_archive_bytes=MAX_ZIP_TOTAL_BYTES)
    )
    out: list[Blob] = []
    for name, data in files:
        if is_zip(name, data) and not name.lower().endswith(".pt2"):
            expanded = expand_zip(name, data, suffixes=WEIGHT_SUFFIXES | {".json"}, budget=budget)
            out.extend(expanded.blobs)
        else:
            out.append(Blob(name, data))
    return out


def pair(blobs: Sequence[Blob], *, architecture: str | None = None, trust: bool = False) -> list[Checkpoint]:
    """Weights in natural name order, each with the JSON of the same stem (or the one JSON of the upload)
    as its sidecar; a malformed sidecar is a ModelLoadError here, before any weights are read."""
    weights = [b for b in blobs if PurePosixPath(b.name).suffix.lower() in WEIGHT_SUFFIXES]
    sidecars = {PurePosixPath(b.name).stem: b for b in blobs if b.name.lower().endswith(".json")}
    if not weights:
        raise ModelLoadError(
            "No checkpoint weights among the uploaded files (.safetensors, .pt, .pth, .pt2, .bin, .ckpt)."
        )
    if len(weights) > MAX_CHECKPOINTS:
        raise ModelLoadError(f"{len(weights)} checkpoints uploaded; at most {MAX_CHECKPOINTS} are tracked.")
    if len(weights) < 2:
        raise ModelLoadError("A series needs at least two checkpoints (upload several files or one zip).")
    shared = next(iter(sidecars.values())) if len(sidecars) == 1 else None
    out = []
    for w in sorted(weights, key=lambda b: _natural(PurePosixPath(b.name).name)):
        stem = PurePosixPath(w.name).stem
        side = sidecars.get(stem, shared)
        spec = loaders.upload_spec(
            PurePosixPath(w.name).name,
            w.data,
            sidecar_bytes=side.data if side is not None else None,
            architecture=architecture,
            trust=trust,
        )
        out.append(Checkpoint(stem, spec, None if side is None else PurePosixPath(side.name).name))
    return out


def load(checkpoints: Sequence[Checkpoint]) -> list[LoadedModel]:
    """Every checkpoint loaded (cached by content); they must share their classes."""
    models = [loaders.get_model(c.spec)[0] for c in checkpoints]
    first = models[0].class_names
    for c, m in zip(checkpoints, models, strict=True):
        if m.class_names != first:
            raise ModelLoadError(
                f"checkpoint {c.name} has classes {list(m.class_names)}, the first has {list(first)}: a "
                "series must be one model's training run"
            )
    return models


@st.cache_data(show_spinner=False, max_entries=4)
def _series(
    keys: tuple[str, ...],
    names: tuple[str, ...],
    image_hashes: tuple[str, ...],
    methods: tuple[str, ...],
    tau: float,
    gamma: float,
    _models: tuple[LoadedModel, ...],
    _items: tuple[loaders.ImageItem, ...],
    _labels: tuple[int, ...],
) -> CheckpointSeries:
    return track_checkpoints(
        list(_models),
        [i.image for i in _items],
        list(_labels),
        methods=methods,
        names=list(names),
        tau=tau,
        gamma=gamma,
    )


def series(
    checkpoints: Sequence[Checkpoint],
    models: Sequence[LoadedModel],
    images: loaders.ImageSet,
    methods: Sequence[str],
    tau: float,
    gamma: float,
) -> CheckpointSeries:
    """The C-Score series of uploaded checkpoints on the labelled images of ``images`` (cached by content)."""
    class_names = models[0].class_names
    labelled = [i for i in images.items if i.label in class_names]
    if len(labelled) < 4:
        raise ImageLoadError(
            "The C-Score needs labelled images of the checkpoints' classes "
            f"({', '.join(class_names)}): upload a zip with one folder per class."
        )
    return _series(
        tuple(c.spec.key for c in checkpoints),
        tuple(c.name for c in checkpoints),
        tuple(i.image.content_hash for i in labelled),
        tuple(methods),
        float(tau),
        float(gamma),
        tuple(models),
        tuple(labelled),
        tuple(class_names.index(str(i.label)) for i in labelled),
    )


def labelled_set(files: Sequence[tuple[str, bytes]]) -> loaders.ImageSet:
    """A labelled evaluation set from uploaded zips (one folder per class), within the image upload limits."""
    expanded = expand_uploads(files)
    items, errors = loaders.images_from_blobs(expanded.blobs)
    for message in errors[:5]:
        st.error(message, icon=":material/broken_image:")
    labelled = [i for i in items if i.label]
    if not labelled:
        raise ImageLoadError(
            "No labelled images: upload a zip with one folder per class (normal/…, nodule/…)."
        )
    return loaders.ImageSet(label=f"{len(labelled)} uploaded labelled image(s)", items=tuple(labelled))
