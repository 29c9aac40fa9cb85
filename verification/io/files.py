"""Reading one file from a path with the loaders' checks: a folder, a missing path, a device or pipe, an
unreadable file and an oversized one each get a typed error that says what to give instead; and numpy's
``.npy`` / ``.npz`` from untrusted bytes, bounded by their headers before any array is allocated."""

from __future__ import annotations

import io
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np

from verification.errors import InputTooLargeError, VerificationError
from verification.io.archive import ZipLimits, check_entries, open_zip, read_entry

__all__ = ["read_json_file", "read_npy", "read_npz", "read_npz_file", "read_regular_file"]


def read_regular_file(
    path: Path,
    *,
    kind: str,
    max_bytes: int,
    error: type[VerificationError],
    advice: str | None = None,
    too_large: Callable[[int], str] | None = None,
) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes``: checked from its size before reading,
    and the read itself stops one byte past the limit, so a file that grows meanwhile is still bounded.

    ``kind`` names what is expected ("image file") and ``advice`` what to give when a folder is given
    (default: "give the <kind>"); ``error`` is raised for a folder, a missing path, something that is not a
    regular file, or a read failure; :class:`InputTooLargeError` with ``too_large(size)`` for an oversized
    file (default: "<kind> '<path>' is N bytes; at most M are read").
    """
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    advice = advice or f"give the {kind}"
    if too_large is None:
        too_large = lambda n: f"{kind} '{path}' is {n:,} bytes; at most {max_bytes:,} are read"  # noqa: E731
    if path.is_dir():
        raise error(f"'{path}' is a directory, not {article} {kind}; {advice}")
    if not path.exists():
        raise error(f"{kind} '{path}' does not exist")
    if not path.is_file():
        raise error(f"'{path}' is not a regular file (a device, socket or pipe?); give {article} {kind}")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputTooLargeError(too_large(size))
        # read at most one byte past the limit: the file may grow after stat. Python allocates what one read
        # asks for, so the first asks for the size stat gave and any growth is read in chunks.
        with path.open("rb") as f:
            data = f.read(min(size, max_bytes) + 1)
            while len(data) <= max_bytes and (chunk := f.read(min(1 << 20, max_bytes + 1 - len(data)))):
                data += chunk
        if len(data) > max_bytes:
            raise InputTooLargeError(too_large(len(data)))
        return data
    except OSError as exc:
        raise error(f"{kind} '{path}' cannot be read: {exc.strerror or exc}") from exc


def read_npy(data: bytes, what: str, *, max_bytes: int, error: type[VerificationError]) -> np.ndarray:
    """The array of a ``.npy`` file's bytes, never unpickled. Its header is read first (numpy's
    ``read_magic`` and ``read_array_header_*``): an object dtype (pickled Python objects) is refused with
    ``error``, a shape of more than ``max_bytes`` with :class:`InputTooLargeError`, and a shape whose bytes
    differ from the data after the header (truncated, or padded to lie) with ``error``, all before the array
    is allocated. ``what`` names the file in every message."""
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(buf)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(buf)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise error(f"{what} is not a readable .npy array: {str(exc)[:160]}") from exc
    if dtype.hasobject:
        raise error(f"{what} holds Python objects (an object array); only numeric arrays are read")
    need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if need > max_bytes:
        raise InputTooLargeError(
            f"{what} declares an array of shape {tuple(shape)} ({need:,} bytes), above the limit of "
            f"{max_bytes:,} bytes"
        )
    if need != len(data) - buf.tell():
        raise error(
            f"{what} declares shape {tuple(shape)} ({need:,} bytes) but holds {len(data) - buf.tell():,} "
            "bytes of data; the file is corrupt or truncated"
        )
    buf.seek(0)
    try:
        return np.asarray(np.load(buf, allow_pickle=False))
    except (ValueError, OSError, EOFError) as exc:
        raise error(f"{what} cannot be read: {str(exc)[:160]}") from exc


def read_npz(
    data: bytes,
    what: str,
    *,
    max_bytes: int,
    error: type[VerificationError],
    max_entries: int = 1000,
    names: Collection[str] | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file's bytes by member name (without ``.npy``), only ``names`` when given.
    The zip is checked first (:func:`verification.io.archive.check_entries`: entry count, names, inflation,
    declared sizes summed against ``max_bytes``), each member is inflated no further than its declared size,
    and each is read by :func:`read_npy` (header checked before allocating, never unpickled)."""
    zf = open_zip(data, what, error)
    out: dict[str, np.ndarray] = {}
    with zf:
        infos = check_entries(zf, what, ZipLimits(max_entries, max_bytes, 200), error)
        for info in infos:
            name = info.filename.removesuffix(".npy")
            if names is not None and name not in names:
                continue
            raw = read_entry(zf, info, max_bytes, what, error)
            out[name] = read_npy(raw, f"{what}: array '{name}'", max_bytes=max_bytes, error=error)
    return out


def read_npz_file(
    path: Path,
    *,
    max_bytes: int,
    error: type[VerificationError],
    max_entries: int = 1000,
    names: Collection[str] | None = None,
) -> dict[str, np.ndarray]:
    """:func:`read_npz` on the file at ``path`` (read by :func:`read_regular_file`: at most ``max_bytes`` plus
    1 MiB of zip and ``.npy`` headers); every message names the file."""
    data = read_regular_file(
        path, kind=".npz file", advice="give the .npz file", max_bytes=max_bytes + (1 << 20),
        too_large=lambda n: f"'{path}' is {n:,} bytes; at most {max_bytes:,} bytes of arrays are read",
        error=error,
    )  # fmt: skip
    return read_npz(data, f"'{path}'", max_bytes=max_bytes, error=error, max_entries=max_entries, names=names)


def read_json_file(
    path: Path,
    *,
    kind: str,
    advice: str,
    max_bytes: int,
    error: type[VerificationError],
    max_depth: int = 32,
    allow_nan: bool = False,
) -> Any:
    """The JSON document in the file at ``path``, not trusted: read by :func:`read_regular_file` (at most
    ``max_bytes``), parsed by :func:`verification.io.safejson.loads_bounded` (nesting, number length, NaN
    only with ``allow_nan``); every failure is ``error`` (InputTooLargeError for the size) naming the file."""
    from verification.io.safejson import loads_bounded

    what = f"{kind} '{path}'"
    data = read_regular_file(path, kind=kind, advice=advice, max_bytes=max_bytes, error=error)
    return loads_bounded(
        data, what, error=error, max_bytes=max_bytes, max_depth=max_depth, allow_nan=allow_nan
    )
