"""Consistency on the user's own run: an uploaded checkpoint series (several files, or one zip) and a labelled
evaluation set, read with the same safe loaders and archive limits as every other upload.

Weights are read as tensors (safetensors, ``torch.load(weights_only=True)``) or inspected ``torch.export``
programs through :func:`ui.loaders.upload_spec` / :func:`ui.loaders.get_model`; a pickled module is executed
only with the page's explicit trust tick. A zip is expanded with :func:`verification.uploads.expand_zip`
(entry count, decompressed bytes, compression ratio bounded; unsafe names refused). A JSON file beside a
weights file with the same stem is its sidecar (classes, input size, mean/std); checkpoints are taken in
natural name order (``epoch_2`` before ``epoch_10``), which is the training order the page shows.

Memory: each checkpoint is bounded by what its weights decode to (``ModelLimits``, 1 GiB) and the series is
computed one checkpoint at a time (:func:`ui.loaders.load_spec`, uncached; the first through the model cache
for the series' classes), so a series of any length holds at most three models: the first, the one measured
and the next while it loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, overload

import streamlit as st

from ui import loaders
from ui.state import K, read_once
from verification.consistency import CheckpointSeries, series_mismatch, track_checkpoints
from verification.errors import ImageLoadError, ModelLoadError
from verification.interactive import labelled_for_classes
from verification.io.records import LoadedModel
from verification.uploads import Blob, checkpoint_files, expand_uploads, pair_checkpoints

__all__ = ["Checkpoint", "labelled_uploads", "pair", "pair_uploads", "series"]


@dataclass(frozen=True)
class Checkpoint:
    """One uploaded checkpoint: its name (the file's stem), the choice that loads it, its sidecar's name."""

    name: str
    spec: loaders.ModelChoice
    sidecar: str | None


def pair(blobs: Sequence[Blob], *, architecture: str | None = None, trust: bool = False) -> list[Checkpoint]:
    """The series in training order (:func:`verification.uploads.pair_checkpoints`), each with the choice that
    loads it; a malformed sidecar is a ModelLoadError here, before any weights are read."""
    return [
        Checkpoint(
            c.name,
            loaders.upload_spec(
                PurePosixPath(c.weights.name).name,
                c.weights.data,
                sidecar_bytes=None if c.sidecar is None else c.sidecar.data,
                architecture=architecture,
                trust=trust,
            ),
            None if c.sidecar is None else PurePosixPath(c.sidecar.name).name,
        )
        for c in pair_checkpoints(blobs)
    ]


class _Models(Sequence[LoadedModel]):
    """The series' models, each loaded when the computation reaches it and dropped once its maps are made
    (:func:`verification.consistency.track_checkpoints` takes one at a time): two checkpoints in memory at
    most (the one measured and the next, while it loads) besides the first, which is in the model cache,
    instead of the whole series (up to 50 uploads of up to 1 GiB of weights each). A checkpoint with other
    classes than the first is refused (ModelLoadError) when it is reached."""

    def __init__(self, checkpoints: Sequence[Checkpoint], first: LoadedModel) -> None:
        self._checkpoints = tuple(checkpoints)
        self._first = first

    def __len__(self) -> int:
        return len(self._checkpoints)

    @overload
    def __getitem__(self, i: int) -> LoadedModel: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[LoadedModel]: ...

    def __getitem__(self, i: int | slice) -> LoadedModel | Sequence[LoadedModel]:
        if isinstance(i, slice):
            return _Models(self._checkpoints[i], self._first)
        c = self._checkpoints[i]  # IndexError past the end: the end of iteration
        if c.spec.key == self._checkpoints[0].spec.key:
            return self._first
        model = loaders.load_spec(c.spec)
        if (why := series_mismatch(self._first.class_names, model, c.name)) is not None:
            raise ModelLoadError(why)
        return model


@st.cache_data(show_spinner=False, max_entries=4)
def _series(
    keys: tuple[str, ...],
    names: tuple[str, ...],
    image_hashes: tuple[str, ...],
    methods: tuple[str, ...],
    tau: float,
    gamma: float,
    _models: _Models,
    _items: tuple[loaders.WorkingImage, ...],
    _labels: tuple[int, ...],
) -> CheckpointSeries:
    return track_checkpoints(
        _models,
        [i.image for i in _items],
        list(_labels),
        methods=methods,
        names=list(names),
        tau=tau,
        gamma=gamma,
    )


def series(
    checkpoints: Sequence[Checkpoint],
    images: loaders.ImageSet,
    methods: Sequence[str],
    tau: float,
    gamma: float,
) -> CheckpointSeries:
    """The C-Score series of uploaded checkpoints on the labelled images of ``images`` (cached by content),
    loading one checkpoint at a time (:class:`_Models`); they must share their classes."""
    first = loaders.get_model(checkpoints[0].spec)[0]
    labelled = labelled_for_classes(
        images.items, first.class_names, advice="upload a zip with one folder per class"
    )
    return _series(
        tuple(c.spec.key for c in checkpoints),
        tuple(c.name for c in checkpoints),
        tuple(i.image.content_hash for i in labelled),
        tuple(methods),
        float(tau),
        float(gamma),
        _Models(checkpoints, first),
        tuple(labelled),
        tuple(first.class_names.index(str(i.label)) for i in labelled),
    )


def pair_uploads(files: Sequence[Any], *, architecture: str | None, trust: bool) -> list[Checkpoint]:
    """:func:`pair` of the page's uploaded files (zips expanded), read once per set of uploads and settings:
    a rerun for another widget does not expand and hash the checkpoints again. The price: the session keeps
    the checkpoints' bytes (each choice holds its file's bytes to load it later) beside Streamlit's own copy
    of the uploads, until the uploads change — at most once more the upload limit per file."""
    return read_once(
        K.CONSISTENCY_UPLOAD_READ,
        files,
        (architecture, trust),
        lambda: pair(
            checkpoint_files([(f.name, f.getvalue()) for f in files]), architecture=architecture, trust=trust
        ),
    )


def labelled_uploads(files: Sequence[Any]) -> loaders.ImageSet:
    """A labelled evaluation set from uploaded zips (one folder per class), within the image upload limits;
    read once per set of uploads (files that failed to load are reported on every run)."""
    items, errors = read_once(
        K.CONSISTENCY_EVAL_READ,
        files,
        (),
        lambda: loaders.images_from_blobs(expand_uploads([(f.name, f.getvalue()) for f in files]).blobs),
    )
    for message in errors[:5]:
        st.error(message, icon=":material/broken_image:")
    labelled = [i for i in items if i.label]
    if not labelled:
        raise ImageLoadError(
            "No labelled images: upload a zip with one folder per class (normal/…, nodule/…)."
        )
    return loaders.ImageSet(label=f"{len(labelled)} uploaded labelled image(s)", items=tuple(labelled))
