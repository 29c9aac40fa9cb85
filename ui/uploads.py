"""Turn what the user uploaded (single files, several at once, or zip archives) into named byte blobs.

No Streamlit here: the sidebar hands over ``(filename, bytes)`` pairs, so the tests drive this directly. Zip
archives are opened with limits on the number of entries and on the bytes actually decompressed (not the sizes
the archive declares, which a zip bomb can lie about).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from verification.batch import IMAGE_SUFFIXES as BATCH_SUFFIXES
from verification.errors import ImageLoadError, InputTooLargeError

# The batch loader's image suffixes, plus none at all: DICOM files inside archives often have no suffix.
IMAGE_SUFFIXES = frozenset(BATCH_SUFFIXES | {""})
MAX_ZIP_ENTRIES = 5000
MAX_ZIP_TOTAL_BYTES = 1 << 30  # 1 GiB decompressed across one archive
MAX_ZIP_RATIO = 200  # an entry that inflates more than this is treated as a bomb
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


def _read_bounded(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, archive: str) -> bytes:
    """Decompress one entry, stopping as soon as it exceeds its declared size, the ratio or the budget."""
    limit = min(budget, max(info.compress_size, 1) * MAX_ZIP_RATIO, info.file_size)
    out = bytearray()
    with zf.open(info) as fh:
        while chunk := fh.read(_CHUNK):
            out += chunk
            if len(out) > limit:
                raise InputTooLargeError(
                    f"{archive}: entry {info.filename!r} decompresses to more than "
                    f"{limit:,} bytes (its declared size, {MAX_ZIP_RATIO}x its compressed size, or what is "
                    f"left of the {MAX_ZIP_TOTAL_BYTES:,}-byte archive limit). Upload a smaller archive."
                )
    return bytes(out)


def expand_zip(
    name: str,
    data: bytes,
    *,
    max_entries: int = MAX_ZIP_ENTRIES,
    max_total_bytes: int = MAX_ZIP_TOTAL_BYTES,
    suffixes: frozenset[str] = IMAGE_SUFFIXES,
) -> Expanded:
    """The entries of a zip archive whose suffix is in ``suffixes`` (images by default), labelled by their
    parent folder; other entries are listed as skipped."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ImageLoadError(f"{name} is not a readable zip archive ({exc}).") from exc
    with zf:
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
        blobs: list[Blob] = []
        skipped: list[str] = []
        budget = max_total_bytes
        for info in infos:
            path = PurePosixPath(info.filename)
            if _skippable(path):
                continue
            if path.suffix.lower() not in suffixes:
                skipped.append(info.filename)
                continue
            try:
                content = _read_bounded(zf, info, budget, name)
            except (zipfile.BadZipFile, OSError, RuntimeError) as exc:  # corrupt entry or encrypted
                raise ImageLoadError(f"{name}: entry {info.filename!r} cannot be read ({exc}).") from exc
            budget -= len(content)
            label = path.parent.name or None
            blobs.append(Blob(name=info.filename, data=content, label=label))
    return Expanded(tuple(blobs), tuple(skipped))


def expand_uploads(
    files: Iterable[tuple[str, bytes]],
    *,
    max_entries: int = MAX_ZIP_ENTRIES,
    max_total_bytes: int = MAX_ZIP_TOTAL_BYTES,
) -> Expanded:
    """Single files pass through unlabelled; zip archives are expanded with the limits above."""
    blobs: list[Blob] = []
    skipped: list[str] = []
    for name, data in files:
        if is_zip(name, data):
            part = expand_zip(name, data, max_entries=max_entries, max_total_bytes=max_total_bytes)
            blobs.extend(part.blobs)
            skipped.extend(part.skipped)
        else:
            blobs.append(Blob(name=name, data=data))
    return Expanded(tuple(blobs), tuple(skipped))
