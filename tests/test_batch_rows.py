"""The row codec of the Ray engine: a job's frozen record survives npz bytes exactly, with no pickle."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from verification.batch import ImageCams, Row, decode_row, encode_row
from verification.verdict.measure import ImageMeasurement

RNG = np.random.default_rng(3)


def _cams(**changes: object) -> ImageCams:
    cams = ImageCams(
        pred=1,
        logits=RNG.normal(size=3).astype(np.float32),
        probs=RNG.random(3).astype(np.float32),
        target=2,
        maps={"gradcam@layer4": RNG.random((8, 6)).astype(np.float32)},
        raw={"gradcam@layer4": RNG.random((2, 2)).astype(np.float32)},
        constant={"gradcam@layer4": False},
        provenance={"gradcam@layer4": {"method": "gradcam", "layer": "layer4", "relu": True}},
    )
    return dataclasses.replace(cams, **changes)  # type: ignore[arg-type]


def _same(a: object, b: object) -> None:
    """Field by field: arrays bit for bit (dtype and shape too), nested dicts by key, the rest by ==."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict)
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b)  # noqa: PT018
    else:
        assert a == b
        assert type(a) is type(b)


@pytest.mark.parametrize(
    "result",
    [
        _cams(),
        _cams(display=RNG.integers(0, 256, (8, 6, 3), dtype=np.uint8)),
        _cams(label_maps={"Effusion": {"gradcam@layer4": np.ones((8, 6), np.float32)}, "Nodule": {}}),
        ImageMeasurement(
            name="a.png",
            label=-1,
            predicted=0,
            probs=np.array([0.25, 0.75], np.float32),
            assessable=True,
            gate_reason="",
            has_finding=False,
            values={"E5.ssim": 0.5, "E2.energy_share": float("nan")},
            gate={},
            map=RNG.random((4, 4)).astype(np.float32),
            lesion=np.zeros((4, 4), np.float32),
            roi_method="automatic",
        ),
    ],
)
def test_a_row_comes_back_as_the_same_record(result: object) -> None:
    row = Row(index=7, path="/data/a.png", error=None, content_hash="ab12", result=result)
    back = decode_row(encode_row(row), type(result))
    assert type(back.result) is type(result)
    assert (back.index, back.path, back.error, back.content_hash) == (7, "/data/a.png", None, "ab12")
    for f in dataclasses.fields(result):  # type: ignore[arg-type]
        _same(getattr(result, f.name), getattr(back.result, f.name))


def test_an_error_row_has_no_result_and_the_bytes_hold_no_pickle() -> None:
    row: Row[ImageCams] = Row(index=0, path="bad.png", error="not an image")
    data = encode_row(row)
    assert decode_row(data, ImageCams) == row
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:  # would raise on an object array
        assert all(npz[k].dtype != object for k in npz.files)
