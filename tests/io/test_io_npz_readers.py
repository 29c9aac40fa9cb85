"""The .npz readers of saved CAM results (``batch.load_image_cams``, ``cam.CamResult.load``) do not trust
their files: before this, both called ``np.load`` directly, and a 522 KB file inflated to 514 MiB before the
schema check (/tmp/review/npz_bomb.py). They now go through ``io.files.read_npz_file``, the reader the
reference bundle uses."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.io.memcap import run_capped_many
from verification.errors import BundleError, InputTooLargeError


def _header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _npy(arr: np.ndarray, **kwargs: bool) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kwargs)
    return buf.getvalue()


def _bomb(path: Path, zeros: int, members: dict[str, bytes]) -> Path:
    """An .npz whose ``map/gradcam`` holds ``zeros`` float32 zeros (deflated ~1,000:1), and ``members``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("map/gradcam.npy", "w") as fh:
            fh.write(_header((zeros,)))
            for _ in range(zeros * 4 // (8 << 20)):
                fh.write(bytes(8 << 20))
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_cam_file_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    """In a child capped at 256 MiB: 64 MiB of zeros in a ~65 KB per-image CAM file and in a CamResult's
    maps are refused as zip bombs naming the file, with under 8 MiB of peak growth (before: np.load
    inflated them, +64 MiB each)."""
    meta = _npy(np.array(json.dumps({"schema": "verification.batch.image_cams"})))
    cams = _bomb(tmp_path / "a.npz", 16 << 20, {"meta.npy": meta})
    result = _bomb(tmp_path / "r.npz", 16 << 20, {})
    (tmp_path / "r.json").write_text(
        json.dumps({"schema": "verification.cam.CamResult", "schema_version": 1})
    )
    bodies = [
        f"import verification.batch as b; b.load_image_cams({str(cams)!r})",
        f"from verification.cam.records import CamResult; CamResult.load({str(result)!r})",
    ]
    for res, name in zip(run_capped_many(bodies, [], cap_bytes=256 << 20), ("a.npz", "r.npz")):
        assert (res["outcome"], res["error"]) == ("typed", "InputTooLargeError"), res
        assert name in str(res["message"]), res
        assert "zip bomb" in str(res["message"]), res
        peak = res["peak_bytes"]
        assert isinstance(peak, int), res
        assert peak < 8 << 20, res


def test_cam_files_with_bad_arrays_are_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import verification.batch.camfiles as camfiles
    from verification.batch import load_image_cams

    def npz(name: str, members: dict[str, bytes]) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as zf:
            for member, data in members.items():
                zf.writestr(member, data)
        return path

    meta = _npy(np.array(json.dumps({"schema": "verification.batch.image_cams"})))
    objects = _npy(np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BundleError, match=r"o\.npz.*'map/gradcam' holds Python objects"):
        load_image_cams(npz("o.npz", {"meta.npy": meta, "map/gradcam.npy": objects}))
    with pytest.raises(BundleError, match=r"no 'logits' array"):
        load_image_cams(npz("m.npz", {"meta.npy": meta}))
    deep = _npy(np.array("[" * 10_000 + "]" * 10_000))
    with pytest.raises(BundleError, match="nests deeper"):
        load_image_cams(npz("d.npz", {"meta.npy": deep, "logits.npy": _npy(np.zeros(2)), "probs.npy": deep}))
    monkeypatch.setattr(camfiles, "MAX_CAM_FILE_BYTES", 1 << 10)
    big = _npy(np.zeros(1024, np.float32))
    with pytest.raises(InputTooLargeError, match=r"b\.npz"):
        load_image_cams(npz("b.npz", {"meta.npy": meta, "map/gradcam.npy": big}))


def test_bundle_files_are_bounded_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_bundle`` read both files whole (``read_bytes``/``read_text``) before any check; now each is
    refused from its size first, naming the file."""
    import verification.reference.bundle as bundle_module

    (tmp_path / "b.json").write_text("{}")
    (tmp_path / "b.npz").write_bytes(b"\0" * 4096)
    monkeypatch.setattr(bundle_module, "MAX_MANIFEST_BYTES", 1)
    with pytest.raises(InputTooLargeError, match=r"bundle manifest '.*b\.json' is 2 bytes; at most 1"):
        bundle_module.load_bundle(tmp_path / "b")
    monkeypatch.setattr(bundle_module, "MAX_MANIFEST_BYTES", 1 << 20)
    monkeypatch.setattr(bundle_module, "MAX_BUNDLE_BYTES", 1024)
    monkeypatch.setattr(bundle_module, "MiB", 1024)
    with pytest.raises(InputTooLargeError, match=r"bundle arrays file '.*b\.npz' is 4,096 bytes"):
        bundle_module.load_bundle(tmp_path / "b")
