"""Zip archives from untrusted sources, inspected in memory (nothing is extracted to disk): entry count,
declared and actual decompressed sizes, compression ratio, entry names (no traversal, no duplicates)."""

from __future__ import annotations

import io
import lzma
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from verification.errors import InputTooLargeError, VerificationError

__all__ = ["ZipLimits", "check_entries", "entry_name_problem", "open_zip", "read_entry"]

_CHUNK = 1 << 20
# Entries smaller than this may compress better than max_ratio (JSON, blank masks) without being bombs.
_RATIO_FLOOR = 1 << 20


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int = 5000
    max_total_bytes: int = 1 << 30
    max_ratio: int = 200


# What zipfile raises on a corrupt, truncated or unsupported archive when it is opened.
ZIP_OPEN_ERRORS: tuple[type[Exception], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    OSError,
    ValueError,
    EOFError,
)


def open_zip(data: bytes, what: str, error: type[VerificationError]) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except ZIP_OPEN_ERRORS as exc:
        raise error(f"{what} is not a readable zip archive ({str(exc)[:120]})") from exc


def entry_name_problem(name: str) -> str | None:
    """Why an entry name is unsafe (absolute, '..', backslash, drive letter, control characters), or None."""
    if not name or len(name) > 1024:
        return "an empty or over-long name"
    if any(ord(c) < 32 for c in name):
        return "control characters in its name"
    if "\\" in name:
        return "a backslash in its name"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "a '..' component (path traversal)"
    return None


def check_entries(
    zf: zipfile.ZipFile, what: str, limits: ZipLimits, error: type[VerificationError]
) -> list[zipfile.ZipInfo]:
    """Every entry of ``zf`` checked against ``limits`` and for unsafe or duplicate names and encryption.

    Raises InputTooLargeError for the size limits and ``error`` for the rest. Declared sizes are checked
    here; :func:`read_entry` also stops at them while decompressing (a bomb can lie in its headers).
    """
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise InputTooLargeError(
            f"{what} holds {len(infos):,} entries; at most {limits.max_entries:,} are accepted"
        )
    seen: set[str] = set()
    total = 0
    for info in infos:
        problem = entry_name_problem(info.filename)
        if problem is not None:
            raise error(f"{what} has an entry with {problem}: {info.filename[:120]!r}")
        if info.filename in seen:
            raise error(f"{what} holds two entries named {info.filename[:120]!r}; the archive is ambiguous")
        seen.add(info.filename)
        if info.flag_bits & 0x1:
            raise error(f"{what}: entry {info.filename[:120]!r} is encrypted; upload an unencrypted archive")
        total += info.file_size
        if info.file_size > _RATIO_FLOOR and info.file_size > max(info.compress_size, 1) * limits.max_ratio:
            raise InputTooLargeError(
                f"{what}: entry {info.filename[:120]!r} inflates "
                f"{info.file_size / max(info.compress_size, 1):,.0f} times (above {limits.max_ratio}): "
                "refused as a zip bomb"
            )
    if total > limits.max_total_bytes:
        raise InputTooLargeError(
            f"{what} would decompress to {total:,} bytes; at most {limits.max_total_bytes:,} are accepted"
        )
    return infos


def read_entry(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, what: str, error: type[VerificationError]
) -> bytes:
    """Decompress one entry, stopping as soon as it passes its declared size or ``limit`` bytes."""
    cap = min(limit, info.file_size)
    out = bytearray()
    try:
        with zf.open(info) as fh:
            while chunk := fh.read(min(_CHUNK, cap - len(out) + 1)):
                out += chunk
                if len(out) > cap:
                    raise InputTooLargeError(
                        f"{what}: entry {info.filename[:120]!r} decompresses to more than {cap:,} bytes (its "
                        "declared size or what is left of the limit)"
                    )
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        lzma.LZMAError,
        NotImplementedError,
        OSError,
        RuntimeError,
        EOFError,
        ValueError,
    ) as exc:
        raise error(f"{what}: entry {info.filename[:120]!r} cannot be read ({str(exc)[:120]})") from exc
    return bytes(out)
