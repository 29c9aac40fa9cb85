"""DICOM loading: the real radiographs from pydicom-data, and hand-derived rescale/window/LUT cases."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import RLELossless

from tests.builders import dataset_bytes, dicom_dataset
from verification.errors import ImageLoadError, InputTooLargeError
from verification.io.images import load_image


def _data_dir() -> Path:
    spec = importlib.util.find_spec("data_store")
    if spec is None or spec.origin is None:
        pytest.skip("pydicom-data (data_store) is not installed")
    return Path(spec.origin).parent / "data"


def _region(pixels: np.ndarray, rows: tuple[float, float], cols: tuple[float, float]) -> float:
    """Mean over a box given as fractions of the image height and width."""
    h, w = pixels.shape
    return float(pixels[int(rows[0] * h) : int(rows[1] * h), int(cols[0] * w) : int(cols[1] * w)].mean())


def _dicom(arr: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, **tags: Any) -> Dataset:
    """The shared test dataset with a patient's identity (kept out of the metadata unless asked for)."""
    patient = {"PatientName": "Doe^Jane", "PatientID": "PID-778899", "PatientBirthDate": "19700101"}
    return dicom_dataset(arr, photometric, bits, **{**patient, **tags})


# --- the real radiographs -----------------------------------------------------------------------------------
# Regions were chosen by looking at the loaded images (saved as PNG and viewed), as fractions (rows, cols):
# RG1 is a PA chest: both upper lung fields lie lateral to the spine; the spine/mediastinum is a central
# column; below the right hemidiaphragm is the liver. RG3 is a lower leg: the tibial shaft is a vertical
# band just left of centre, soft tissue lies medial to it, and unattenuated background lies outside the leg.
RG1_RIGHT_LUNG = ((0.17, 0.31), (0.18, 0.33))
RG1_LEFT_LUNG = ((0.17, 0.29), (0.65, 0.78))
RG1_SPINE = ((0.23, 0.69), (0.457, 0.538))
RG1_LIVER = ((0.77, 0.92), (0.15, 0.41))
RG3_TIBIA = ((0.10, 0.44), (0.457, 0.498))
RG3_SOFT = ((0.10, 0.44), (0.367, 0.418))
RG3_BACKGROUND = ((0.10, 0.51), (0.282, 0.333))


def test_rg1_chest_monochrome1_has_bright_bone_and_dark_lungs() -> None:
    path = _data_dir() / "RG1_UNCR.dcm"
    img = load_image(path)
    px = img.pixels
    assert px.shape == (1955, 1841)
    assert img.metadata["PhotometricInterpretation"] == "MONOCHROME1"
    assert img.metadata["BitsStored"] == 15
    assert img.metadata["BodyPartExamined"] == "CHEST"
    assert any("MONOCHROME1" in n for n in img.notices)
    lungs = [_region(px, *RG1_RIGHT_LUNG), _region(px, *RG1_LEFT_LUNG)]
    dense = [_region(px, *RG1_SPINE), _region(px, *RG1_LIVER)]
    # measured: lungs ≈ 0.58 / 0.55, spine ≈ 0.88, liver ≈ 0.89
    assert max(lungs) + 0.2 < min(dense)
    # the stored values say the opposite (MONOCHROME1: dense tissue is low), so the inversion is what did it
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    assert _region(raw, *RG1_RIGHT_LUNG) > _region(raw, *RG1_SPINE)
    # the DICOM's own window (centre 15000, width 30000) was applied, not a stretch
    np.testing.assert_allclose(px, 1 - np.clip((raw - 14999.5) / 29999 + 0.5, 0, 1), atol=1e-6)


def test_rg3_extremity_has_bone_brighter_than_soft_tissue_and_background() -> None:
    img = load_image(_data_dir() / "RG3_UNCR.dcm")
    px = img.pixels
    bone, soft, background = (_region(px, *r) for r in (RG3_TIBIA, RG3_SOFT, RG3_BACKGROUND))
    # measured: tibia ≈ 0.75, soft tissue ≈ 0.30, background ≈ 0.08
    assert bone > soft + 0.2
    assert soft > background + 0.1


def test_jpeg2000_lossless_file_decodes_to_the_same_picture() -> None:
    plain = load_image(_data_dir() / "RG1_UNCR.dcm")
    j2k = load_image(_data_dir() / "RG1_J2KR.dcm")
    assert "JPEG 2000" in j2k.metadata["TransferSyntax"]
    np.testing.assert_array_equal(plain.pixels, j2k.pixels)


def test_identifying_tags_are_left_out_unless_asked() -> None:
    data = dataset_bytes(_dicom(np.zeros((16, 16), np.uint16)))
    img = load_image(data, name="scan.dcm")
    text = json.dumps(img.metadata)
    for secret in ("Doe", "PID-778899", "19700101"):
        assert secret not in text
        assert secret not in img.name
    assert img.metadata["Modality"] == "CR"
    full = load_image(data, name="scan.dcm", include_identifying=True)
    assert full.metadata["PatientName"] == "Doe^Jane"
    assert full.metadata["PatientID"] == "PID-778899"


# --- hand-derived cases -------------------------------------------------------------------------------------


def test_monochrome1_and_monochrome2_of_the_same_data_are_inverted() -> None:
    arr = (np.arange(32 * 32).reshape(32, 32) * 4).astype(np.uint16)
    for tags in ({}, {"WindowCenter": 2000, "WindowWidth": 2000}):
        m2 = load_image(dataset_bytes(_dicom(arr, "MONOCHROME2", **tags)), name="m2.dcm")
        m1 = load_image(dataset_bytes(_dicom(arr, "MONOCHROME1", **tags)), name="m1.dcm")
        np.testing.assert_allclose(m1.pixels, 1 - m2.pixels, atol=1e-6)
        assert m2.pixels[-1, -1] > m2.pixels[0, 0]
        assert m1.pixels[-1, -1] < m1.pixels[0, 0]


def test_rescale_then_linear_exact_window() -> None:
    # stored → HU = 2·stored − 1000 → y = HU / 400 + 0.5, clipped (PS3.3 C.11.2.1.3.2, centre 0, width 400)
    stored = np.array([400, 500, 550, 600, 700, 0, 0, 0] * 8, np.uint16).reshape(8, 8)
    ds = _dicom(
        stored,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=0,
        WindowWidth=400,
        VOILUTFunction="LINEAR_EXACT",
    )
    px = load_image(dataset_bytes(ds), name="ct.dcm").pixels
    np.testing.assert_allclose(px[0, :6], [0.0, 0.5, 0.75, 1.0, 1.0, 0.0], atol=1e-6)


def test_linear_window_formula() -> None:
    # LINEAR (PS3.3 C.11.2.1.2.1): y = ((x − (c − 0.5)) / (w − 1) + 0.5), clipped; c = 2048, w = 4096
    stored = np.array([0, 1000, 2048, 4095] * 16, np.uint16).reshape(8, 8)
    px = load_image(dataset_bytes(_dicom(stored, WindowCenter=2048, WindowWidth=4096)), name="w.dcm").pixels
    expected = [0.0, (1000 - 2047.5) / 4095 + 0.5, (2048 - 2047.5) / 4095 + 0.5, 1.0]
    np.testing.assert_allclose(px[0, :4], expected, atol=1e-6)


def test_voi_lut_sequence() -> None:
    stored = np.array([0, 1, 2, 3] * 16, np.uint16).reshape(8, 8)
    ds = _dicom(stored, bits=8)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]  # 4 entries, first maps stored value 0, 8-bit output
    item.add_new(0x00283006, "US", [0, 100, 200, 255])  # LUT Data
    ds.VOILUTSequence = Sequence([item])
    px = load_image(dataset_bytes(ds), name="lut.dcm").pixels
    np.testing.assert_allclose(px[0, :4], [0.0, 100 / 255, 200 / 255, 1.0], atol=1e-6)


def test_no_window_uses_robust_percentiles() -> None:
    # 0..4095 once each: the 0.5 / 99.5 percentiles (linear interpolation) are 20.475 and 4074.525
    stored = np.arange(4096, dtype=np.uint16).reshape(64, 64)
    img = load_image(dataset_bytes(_dicom(stored)), name="p.dcm")
    lo, hi = 0.005 * 4095, 0.995 * 4095
    px = img.pixels.ravel()
    np.testing.assert_allclose(px[[0, 20, 1000, 4095]], [0.0, 0.0, (1000 - lo) / (hi - lo), 1.0], atol=1e-6)
    assert any("percentiles" in n for n in img.notices)


def test_multi_frame_uses_first_frame() -> None:
    frames = np.stack([np.full((16, 16), v, np.uint16) for v in (100, 2000, 4000)])
    frames[0, 0, 0] = 0  # give frame 0 some contrast so the percentile stretch is defined
    img = load_image(dataset_bytes(_dicom(frames)), name="mf.dcm")
    assert img.pixels.shape == (16, 16)
    assert img.pixels[0, 0] == 0.0
    assert img.pixels[5, 5] == 1.0  # frame 0's 100s, not frame 1's 2000s, fill the image
    assert img.metadata["NumberOfFrames"] == 3
    assert any("3 frames" in n for n in img.notices)


def test_rle_compressed_dataset_decodes_identically() -> None:
    arr = (np.arange(48 * 40).reshape(48, 40) % 4096).astype(np.uint16)
    plain = load_image(dataset_bytes(_dicom(arr)), name="plain.dcm")
    ds = _dicom(arr)
    ds.compress(RLELossless)
    rle = load_image(dataset_bytes(ds), name="rle.dcm")
    assert rle.metadata["TransferSyntax"] == "RLE Lossless"
    np.testing.assert_array_equal(rle.pixels, plain.pixels)


def test_dicom_detected_by_content_and_bare_datasets() -> None:
    data = dataset_bytes(_dicom(np.arange(256, dtype=np.uint16).reshape(16, 16)))
    assert load_image(data, name="upload").source_format == "DICOM"
    bare = load_image((_data_dir() / "OT-PAL-8-face.dcm").read_bytes(), name="upload")  # no preamble or meta
    assert bare.pixels.shape == (480, 640, 3)


# --- bad inputs ---------------------------------------------------------------------------------------------


def test_truncated_dicom() -> None:
    data = dataset_bytes(_dicom(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)))
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(data[: len(data) - 3000], name="cut.dcm")


def test_dicom_without_pixels() -> None:
    ds = _dicom(np.zeros((16, 16), np.uint16))
    del ds.PixelData
    with pytest.raises(ImageLoadError, match="without pixel data"):
        load_image(dataset_bytes(ds), name="sr.dcm")


def test_dicom_pixel_limit_from_header() -> None:
    ds = _dicom(np.zeros((16, 16), np.uint16))
    ds.Rows, ds.Columns = 40_000, 40_000  # the header lies; the check must not need the pixel data
    with pytest.raises(InputTooLargeError, match="1,600,000,000 pixels"):
        load_image(dataset_bytes(ds), name="bomb.dcm")


def test_tiny_dicom() -> None:
    with pytest.raises(ImageLoadError, match="only 1×1"):
        load_image(dataset_bytes(_dicom(np.zeros((1, 1), np.uint16))), name="one.dcm")
