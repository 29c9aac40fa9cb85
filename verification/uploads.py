"""What a user uploads (single files, several at once, or zip archives), as named byte blobs, and the rules
that read an upload: which files of it are a reference bundle, which are a checkpoint series (and in what
order), and the sidecar a model form makes.

The dashboard hands over ``(filename, bytes)`` pairs; so can a notebook. Zip
archives are opened with limits on the number of entries and on the bytes actually decompressed (not the sizes
the archive declares, which a zip bomb can lie about). One :class:`~verification.io.budget.Budget` spans the
whole upload: entries and decompressed bytes are summed across all its archives, and the decoded size of all
its images (from their headers, before any is decoded) is bounded too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from verification.batch import IMAGE_SUFFIXES as BATCH_SUFFIXES
from verification.errors import BundleError, ImageLoadError, InputTooLargeError, ModelLoadError
from verification.io.archive import entry_name_problem, open_zip, read_entry
from verification.io.budget import Budget, ResourceLimits
from verification.io.images import DEFAULT_MAX_IMAGE_BYTES, image_cost
from verification.io.records import placeholder_class_names
from verification.io.sidecar import parse_sidecar, read_sidecar_bytes

# The batch loader's image suffixes, plus none at all: DICOM files inside archives often have no suffix.
IMAGE_SUFFIXES = frozenset(BATCH_SUFFIXES | {""})
MAX_ZIP_ENTRIES = 5000
MAX_ZIP_TOTAL_BYTES = 1 << 30  # 1 GiB decompressed across all archives of one upload
MAX_ZIP_RATIO = 200  # an entry that inflates more than this is treated as a bomb
# One entry is never larger than one image may be (load_image's file limit): its copy is the transient peak.
MAX_ENTRY_BYTES = DEFAULT_MAX_IMAGE_BYTES
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Blob:
    """One uploaded file. ``label`` is the name of the folder it sat in inside a zip (the class label)."""

    name: str
    data: bytes = field(repr=False)
    label: str | None = None


@dataclass(frozen=True)
class Expanded:
    blobs: tuple[Blob, ...]
    skipped: tuple[str, ...]  # entries that are not images (README.txt, labels.csv, ...)


def is_zip(name: str, data: bytes) -> bool:
    return name.lower().endswith(".zip") or data[:4] == b"PK\x03\x04"


def _skippable(path: PurePosixPath) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.parts)


def _budget(max_entries: int, max_total_bytes: int) -> Budget:
    return Budget(ResourceLimits(max_archive_entries=max_entries, max_archive_bytes=max_total_bytes))


def expand_zip(
    name: str,
    data: bytes,
    *,
    max_entries: int = MAX_ZIP_ENTRIES,
    max_total_bytes: int = MAX_ZIP_TOTAL_BYTES,
    suffixes: frozenset[str] = IMAGE_SUFFIXES,
    budget: Budget | None = None,
) -> Expanded:
    """The entries of a zip archive whose suffix is in ``suffixes`` (images by default), labelled by their
    parent folder; other entries are listed as skipped. ``budget`` carries the upload's totals across archives
    (by default one for this archive alone, with ``max_entries`` and ``max_total_bytes``)."""
    budget = budget if budget is not None else _budget(max_entries, max_total_bytes)
    with open_zip(data, name, ImageLoadError) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > max_entries:
            raise InputTooLargeError(
                f"{name} holds {len(infos):,} files; at most {max_entries:,} are accepted in one archive. "
                "Split it into smaller archives."
            )
        declared = sum(i.file_size for i in infos)
        if declared > max_total_bytes:
            raise InputTooLargeError(
                f"{name} would decompress to {declared:,} bytes; at most {max_total_bytes:,} are accepted."
            )
        room = budget.archive_room()
        if declared > room:
            raise InputTooLargeError(
                f"{name} would decompress to {declared:,} bytes, more than the {max(room, 0):,} left of this "
                f"upload's {budget.limits.max_archive_bytes:,}-byte limit for all archives together."
            )
        budget.charge_entries(len(infos), name)
        for info in infos:  # declared ratios first: a bomb is refused before a byte is inflated
            ratio_cap = max(info.compress_size, 1) * MAX_ZIP_RATIO
            if info.file_size > max(ratio_cap, _CHUNK):
                raise InputTooLargeError(
                    f"{name}: entry {info.filename[:120]!r} decompresses to more than {MAX_ZIP_RATIO}x its "
                    f"compressed size ({info.file_size:,} bytes from {info.compress_size:,}): a zip bomb."
                )
            if info.file_size > MAX_ENTRY_BYTES and PurePosixPath(info.filename).suffix.lower() in suffixes:
                raise InputTooLargeError(
                    f"{name}: entry {info.filename[:120]!r} is {info.file_size / 1e6:,.0f} MB, above the "
                    f"{MAX_ENTRY_BYTES / 1e6:,.0f} MB limit for one file; it could not be loaded."
                )
        blobs: list[Blob] = []
        skipped: list[str] = []
        for info in infos:
            path = PurePosixPath(info.filename)
            if _skippable(path):
                continue
            if entry_name_problem(info.filename) is not None:  # absolute, '..', control characters
                skipped.append(info.filename[:120].encode("ascii", "backslashreplace").decode())
                continue
            if path.suffix.lower() not in suffixes:
                skipped.append(info.filename)
                continue
            room = budget.archive_room()
            if 2 * info.file_size > room:  # inflating briefly holds the entry twice (buffer, then bytes)
                raise InputTooLargeError(
                    f"{name}: entry {info.filename[:120]!r} ({info.file_size:,} bytes) does not fit in what "
                    f"is left of this upload's {budget.limits.max_archive_bytes:,}-byte limit for all "
                    "archives together (reading it takes twice its size). Upload fewer or smaller files."
                )
            # Stops at the declared size (a bomb can lie in its headers); the ratio was checked above.
            content = read_entry(zf, info, room, name, ImageLoadError)
            budget.charge_archive_bytes(len(content), name)
            label = path.parent.name or None
            blobs.append(Blob(name=info.filename, data=content, label=label))
    return Expanded(tuple(blobs), tuple(skipped))


def expand_uploads(
    files: Iterable[tuple[str, bytes]],
    *,
    max_entries: int = MAX_ZIP_ENTRIES,
    max_total_bytes: int = MAX_ZIP_TOTAL_BYTES,
    budget: Budget | None = None,
    retain: bool = True,
) -> Expanded:
    """Single files pass through unlabelled; zip archives are expanded with the limits above, summed across
    all archives of the upload (one ``budget``). With ``retain`` (all images are kept in memory, as the
    sidebar does), the decoded size of all images, read from their headers, must fit the budget's
    ``max_decoded_bytes``; pass ``retain=False`` where images are decoded a chunk at a time. Files whose
    header cannot be read are passed on: loading them reports the error."""
    budget = budget if budget is not None else _budget(max_entries, max_total_bytes)
    blobs: list[Blob] = []
    skipped: list[str] = []
    for name, data in files:
        if is_zip(name, data):
            part = expand_zip(
                name, data, max_entries=max_entries, max_total_bytes=max_total_bytes, budget=budget
            )
            blobs.extend(part.blobs)
            skipped.extend(part.skipped)
        else:
            blobs.append(Blob(name=name, data=data))
    if retain:
        for blob in blobs:
            try:
                cost = image_cost(blob.data, blob.name)
            except (ImageLoadError, InputTooLargeError):
                continue  # unreadable or refused on its own: load_image reports it for this file
            budget.charge_decoded(cost, blob.name)
    return Expanded(tuple(blobs), tuple(skipped))


# ------------------------------------------------------------------------------------ reference bundles

BUNDLE_SUFFIXES = frozenset({".npz", ".json"})


@dataclass(frozen=True)
class BundleFiles:
    """The two files of a saved reference bundle, as uploaded: its ``.npz`` arrays and its ``.json``
    manifest (what :func:`verification.reference.load_bundle_bytes` reads)."""

    arrays_name: str
    arrays: bytes = field(repr=False)
    manifest_name: str
    manifest: bytes = field(repr=False)


def expand_bundle_upload(files: Iterable[tuple[str, bytes]]) -> list[Blob]:
    """A bundle arrives as its files (.npz + .json) or as one zip holding them."""
    out: list[Blob] = []
    for name, data in files:
        if name.lower().endswith(".zip"):
            out.extend(expand_zip(name, data, suffixes=BUNDLE_SUFFIXES).blobs)
        else:
            out.append(Blob(name, data))
    return out


def bundle_files(files: Iterable[tuple[str, bytes]]) -> BundleFiles:
    """The bundle in an upload: the first ``.npz`` and the first ``.json`` by file name (folders inside a zip
    ignored); a ``BundleError`` when either is missing."""
    blobs = {PurePosixPath(blob.name).name: blob.data for blob in expand_bundle_upload(files)}
    manifests = sorted(n for n in blobs if n.endswith(".json"))
    arrays = sorted(n for n in blobs if n.endswith(".npz"))
    if not manifests or not arrays:
        raise BundleError("The bundle upload needs the bundle's .json manifest and its .npz arrays.")
    return BundleFiles(arrays[0], blobs[arrays[0]], manifests[0], blobs[manifests[0]])


# ------------------------------------------------------------------------------------ checkpoint series

WEIGHT_SUFFIXES = frozenset({".safetensors", ".pt", ".pth", ".pt2", ".bin", ".ckpt"})
MAX_CHECKPOINTS = 50


@dataclass(frozen=True)
class CheckpointFiles:
    """One checkpoint of an uploaded series: its name (the weights' stem), its weights and its sidecar."""

    name: str
    weights: Blob
    sidecar: Blob | None


def natural_key(name: str) -> list[object]:
    """Sort key for training order by name: digits compare as numbers (``epoch_2`` before ``epoch_10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def checkpoint_files(files: Iterable[tuple[str, bytes]]) -> list[Blob]:
    """Weights and JSON sidecars from the uploaded files; zips (not ``.pt2`` archives) expanded within the
    upload's archive limits (the same as every upload: entries, decompressed bytes across all archives,
    compression ratio)."""
    budget = _budget(MAX_ZIP_ENTRIES, MAX_ZIP_TOTAL_BYTES)
    out: list[Blob] = []
    for name, data in files:
        if is_zip(name, data) and not name.lower().endswith(".pt2"):
            expanded = expand_zip(name, data, suffixes=WEIGHT_SUFFIXES | {".json"}, budget=budget)
            out.extend(expanded.blobs)
        else:
            out.append(Blob(name, data))
    return out


def pair_checkpoints(blobs: Sequence[Blob]) -> list[CheckpointFiles]:
    """Weights in natural name order (the training order), each with the JSON of the same stem (or the one
    JSON of the upload) as its sidecar; two to :data:`MAX_CHECKPOINTS` of them, else a ``ModelLoadError``."""
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
    for w in sorted(weights, key=lambda b: natural_key(PurePosixPath(b.name).name)):
        stem = PurePosixPath(w.name).stem
        out.append(CheckpointFiles(stem, w, sidecars.get(stem, shared)))
    return out


# ------------------------------------------------------------------------------------ the model form

TASKS: dict[str, str] = {
    "auto": "As the sidecar says (else single-label)",
    "classification": "Single-label: one class per image (softmax, adds up to 100 %)",
    "multilabel": "Multi-label: independent labels (a sigmoid each)",
}


def unnamed_outputs(class_names: Sequence[str]) -> bool:
    """Whether the outputs carry the loader's placeholder names (``class_0``, ``class_1``, … in order:
    :func:`verification.io.records.placeholder_class_names`): neither the file nor its sidecar named them, so
    the form should ask for names."""
    return tuple(class_names) == placeholder_class_names(len(class_names))


def parse_names(text: str | None) -> tuple[str, ...] | None:
    """Label names typed one per line (blank lines and surrounding spaces ignored); None when there are
    none. Duplicates and over-long names are refused by the sidecar check with a message naming them."""
    if not text:
        return None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    return names or None


def form_sidecar(
    uploaded: bytes | None, names: tuple[str, ...] | None = None, task: str = "auto"
) -> bytes | None:
    """The sidecar the form hands to the loader: the uploaded one (validated) with the names typed in the
    form and the task chosen there put over it; None when there is nothing to say. Raises ModelLoadError for
    a malformed upload or names the sidecar schema refuses (duplicates, > 200 characters)."""
    doc = read_sidecar_bytes(uploaded) if uploaded else {}
    if names is not None:
        doc["class_names"] = list(names)
        if doc.get("num_classes") is not None and doc["num_classes"] != len(names):
            doc.pop("num_classes")  # the typed names are the newer word on how many outputs there are
    if task != "auto":
        if task not in TASKS:
            raise ModelLoadError(f"unknown task {task[:40]!r}; choose one of {', '.join(TASKS)}")
        doc["task"] = task
    if not doc:
        return None
    parse_sidecar(doc)  # names the key at fault before any model is built
    return json.dumps(doc).encode("utf-8")
