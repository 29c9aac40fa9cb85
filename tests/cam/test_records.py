"""CamResult: frozen, saved as .npz + JSON manifest with a schema version, validated on load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from verification.cam import CamResult, compute_cams
from verification.errors import BundleError


def _result() -> CamResult:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    (res,) = compute_cams(model, torch.randn(2, 1, 8, 8), methods=["gradcampp"], layers=["1"])
    return res


def test_round_trip(tmp_path: Path) -> None:
    res = _result()
    npz = res.save(tmp_path / "cams" / "r1")
    assert npz == tmp_path / "cams" / "r1.npz"
    manifest = json.loads((tmp_path / "cams" / "r1.json").read_text())
    assert manifest["schema_version"] == 1
    assert manifest["method"] == "gradcampp"
    back = CamResult.load(tmp_path / "cams" / "r1.npz")
    for f in dataclasses.fields(CamResult):
        a, b = getattr(res, f.name), getattr(back, f.name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
        else:
            assert a == b, f.name
    for key in ("torch", "torchvision", "package", "method", "layer", "target", "input_shape", "created"):
        assert key in back.provenance


def test_frozen_and_indexing() -> None:
    res = _result()
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.method = "x"  # type: ignore[misc]
    one = res[1]
    assert one.n == 1
    np.testing.assert_array_equal(one.maps[0], res.maps[1])
    assert one.targets == (res.targets[1],)
    assert res[-1].targets == one.targets
    with pytest.raises(IndexError):
        res[2]


def test_load_rejects_other_schema_and_broken_files(tmp_path: Path) -> None:
    res = _result()
    res.save(tmp_path / "r")
    doc = json.loads((tmp_path / "r.json").read_text())
    doc["schema_version"] = 99
    (tmp_path / "r.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="schema_version 99"):
        CamResult.load(tmp_path / "r")
    (tmp_path / "r.json").write_text("{not json")
    with pytest.raises(BundleError, match="JSON"):
        CamResult.load(tmp_path / "r")
    with pytest.raises(BundleError, match="needs both"):
        CamResult.load(tmp_path / "missing")
    res.save(tmp_path / "s")
    (tmp_path / "s.npz").write_bytes(b"garbage")
    with pytest.raises(BundleError):
        CamResult.load(tmp_path / "s")


def test_shape_validation() -> None:
    res = _result()
    with pytest.raises(BundleError):
        dataclasses.replace(res, constant=np.zeros(5, dtype=bool))
