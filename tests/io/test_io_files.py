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


def _npy(arr: object, **kwargs: object) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, arr, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


def _npy_header(shape: tuple[int, ...], data: bytes, descr: str = "<f8") -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def test_read_npy_checks_the_header_before_allocating() -> None:
    """Before: ``np.load`` raised a bare ValueError on an object array and allocated whatever the header said.
    Now: the header is read first; objects, a shape above the limit and a shape that does not match the data
    are typed errors naming the file; a real array reads back equal (C and Fortran order)."""
    import numpy as np

    read = files.read_npy
    good = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(read(_npy(good), "'m.npy'", max_bytes=48, error=ImageLoadError), good)
    fortran = np.asfortranarray(good)
    np.testing.assert_array_equal(read(_npy(fortran), "'f.npy'", max_bytes=48, error=ImageLoadError), good)
    with pytest.raises(ImageLoadError, match=r"'o.npy' holds Python objects"):
        read(_npy(np.array([{"x": 1}], dtype=object), allow_pickle=True), "'o.npy'", max_bytes=1 << 20,
             error=ImageLoadError)  # fmt: skip
    with pytest.raises(InputTooLargeError, match=r"'b.npy' declares an array of shape \(32768, 32768\)"):
        read(_npy_header((32768, 32768), b"\0" * 1024), "'b.npy'", max_bytes=1 << 30, error=ImageLoadError)
    with pytest.raises(ImageLoadError, match=r"'s.npy' declares shape .* holds 1,024 bytes"):
        read(_npy_header((64, 64), b"\0" * 1024), "'s.npy'", max_bytes=1 << 20, error=ImageLoadError)
    with pytest.raises(ImageLoadError, match=r"'p.npy' declares shape"):  # padded: more data than the shape
        read(_npy(good) + b"\0" * 8, "'p.npy'", max_bytes=1 << 20, error=ImageLoadError)
    with pytest.raises(InputTooLargeError, match=r"'g.npy'"):
        read(_npy(good), "'g.npy'", max_bytes=47, error=ImageLoadError)
    with pytest.raises(ImageLoadError, match=r"'x.npy' is not a readable .npy array"):
        read(
            b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8'}\n", "'x.npy'", max_bytes=1 << 20, error=ImageLoadError
        )


def test_read_npz_bounds_the_archive_and_each_member() -> None:
    """An .npz whose member inflates far beyond its size is refused as a zip bomb before it is inflated; the
    chosen members of a real one read back."""
    import io
    import zipfile

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.ones(3), b=np.zeros((2, 2)))
    got = files.read_npz(buf.getvalue(), "'r.npz'", max_bytes=1 << 20, error=ImageLoadError, names={"a"})
    assert list(got) == ["a"]
    np.testing.assert_array_equal(got["a"], np.ones(3))
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.npy", _npy_header((1 << 22,), b"\0" * (32 << 20)))
    with pytest.raises(InputTooLargeError, match=r"'z.npz'.*zip bomb"):
        files.read_npz(bomb.getvalue(), "'z.npz'", max_bytes=1 << 30, error=ImageLoadError)
    with pytest.raises(InputTooLargeError, match=r"'r.npz' would decompress to"):
        files.read_npz(buf.getvalue(), "'r.npz'", max_bytes=100, error=ImageLoadError)


def test_json_files_are_parsed_with_bounds(tmp_path: Path) -> None:
    """JSON nested 100,000 deep: ``json.loads`` raised RecursionError, which reached users of
    ``reference.load_boxes_json`` untyped; ``read_json_file`` (and so load_boxes_json) raises the caller's
    typed error naming the file. NaN only where allowed."""
    from verification.errors import BundleError
    from verification.reference import load_boxes_json

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match=r"box annotations file '.*deep\.json' nests deeper than 32"):
        load_boxes_json(deep)
    nan = tmp_path / "nan.json"
    nan.write_text('{"x": NaN}')
    read = files.read_json_file
    with pytest.raises(BundleError, match=r"result '.*nan\.json' holds NaN"):
        read(nan, kind="result", advice="give a JSON file", max_bytes=100, error=BundleError)
    doc = read(
        nan, kind="result", advice="give a JSON file", max_bytes=100, error=BundleError, allow_nan=True
    )
    assert doc["x"] != doc["x"]
    with pytest.raises(InputTooLargeError, match=r"result '.*nan\.json' is 10 bytes; at most 9"):
        read(nan, kind="result", advice="give a JSON file", max_bytes=9, error=BundleError)
