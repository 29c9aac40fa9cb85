"""``read_regular_file`` bounds the read itself, not only the size ``stat`` reported before it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from verification.errors import ImageLoadError, InputTooLargeError
from verification.io import files


def _read(path: Path, max_bytes: int) -> bytes:
    return files.read_regular_file(
        path, kind="image file", advice="give a file", max_bytes=max_bytes,
        too_large=lambda n: f"{n} bytes", error=ImageLoadError,
    )  # fmt: skip


def test_a_file_within_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 10)
    assert _read(path, 10) == b"x" * 10


def test_a_file_that_grows_after_stat_is_still_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stat says 4 bytes (the file as it was), the file now holds 1 MB: the read stops at limit + 1."""
    path = tmp_path / "grows.bin"
    path.write_bytes(b"y" * 1_000_000)
    real_stat = Path.stat

    def stat(self: Path, **kw: bool) -> object:
        st = real_stat(self, **kw)
        if self != path:
            return st
        fields = list(st)
        fields[6] = 4  # st_size: what the file held when it was looked at
        return os.stat_result(fields)

    monkeypatch.setattr(Path, "stat", stat)
    with pytest.raises(InputTooLargeError, match=r"^101 bytes$"):
        _read(path, 100)
