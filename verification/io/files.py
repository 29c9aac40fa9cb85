"""Reading one file from a path with the loaders' checks: a folder, a missing path, a device or pipe, an
unreadable file and an oversized one each get a typed error that says what to give instead."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from verification.errors import InputTooLargeError, VerificationError

__all__ = ["read_regular_file"]


def read_regular_file(
    path: Path,
    *,
    kind: str,
    advice: str,
    max_bytes: int,
    too_large: Callable[[int], str],
    error: type[VerificationError],
) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes``: checked from its size before reading,
    and the read itself stops one byte past the limit, so a file that grows meanwhile is still bounded.

    ``kind`` names what is expected ("image file") and ``advice`` what to give when a folder is given;
    ``error`` is raised for a folder, a missing path, something that is not a regular file, or a read
    failure; :class:`InputTooLargeError` with ``too_large(size)`` for an oversized file.
    """
    article = "an" if kind[:1].lower() in "aeiou" else "a"
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
        with path.open("rb") as f:  # read at most one byte past the limit: the file may grow after stat
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise InputTooLargeError(too_large(len(data)))
        return data
    except OSError as exc:
        raise error(f"{kind} '{path}' cannot be read: {exc.strerror or exc}") from exc
