"""DICOM → display-ready grey values: modality rescale, VOI LUT/window, MONOCHROME1 inversion, safe tags."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from verification.errors import ImageLoadError, InputTooLargeError

# Acquisition facts that do not identify a patient; everything else stays out of the metadata.
SAFE_TAGS: tuple[str, ...] = (
    "Modality",
    "PhotometricInterpretation",
    "BitsStored",
    "BitsAllocated",
    "PixelRepresentation",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "BodyPartExamined",
    "ViewPosition",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "RescaleSlope",
    "RescaleIntercept",
)
IDENTIFYING_TAGS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "OtherPatientIDs",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "StationName",
    "DeviceSerialNumber",
)
ROBUST_PERCENTILES = (0.5, 99.5)


def looks_like_dicom(data: bytes) -> bool:
    """True for a Part-10 file ("DICM" after the 128-byte preamble) or a bare little-endian dataset that
    starts with a group 0002/0008 element."""
    return (len(data) >= 132 and data[128:132] == b"DICM") or data[:2] in (b"\x02\x00", b"\x08\x00")


def _jsonable(value: Any) -> Any:
    if isinstance(value, MultiValue | list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def dicom_metadata(ds: Dataset, *, include_identifying: bool = False) -> dict[str, Any]:
    """Non-identifying acquisition tags (plus the patient/study tags only when ``include_identifying``)."""
    tags = SAFE_TAGS + (IDENTIFYING_TAGS if include_identifying else ())
    meta: dict[str, Any] = {}
    for tag in tags:
        if tag in ds and ds[tag].value not in (None, ""):
            meta[tag] = _jsonable(ds[tag].value)
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is not None:
        meta["TransferSyntax"] = tsyntax.name
    return meta


def _voi_output_range(ds: Dataset) -> tuple[float, float]:
    """The range apply_voi_lut maps onto (PS3.3 C.11.2.1.2: the output spans the stored value range)."""
    if "VOILUTSequence" in ds and ds.VOILUTSequence:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        lo, hi = 0.0, float(2**bits - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        lo, hi = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return lo, hi


def _robust_unit(values: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(values, ROBUST_PERCENTILES)
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values, dtype=np.float32)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def read_dicom(
    data: bytes, *, name: str, max_pixels: int, include_identifying: bool = False
) -> tuple[np.ndarray, dict[str, Any], tuple[str, ...]]:
    """Decode the first frame to float32 in [0, 1], (H, W) or (H, W, 3), dense tissue bright.

    Returns (pixels, metadata, notices).
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError, TypeError) as exc:
        raise ImageLoadError(f"'{name}' is not a readable DICOM file (corrupt or truncated): {exc}") from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        # A bare dataset without Part-10 header: name the encoding it was read with so it can be decoded.
        implicit, little = ds.original_encoding
        if not little:
            raise ImageLoadError(f"'{name}' is a big-endian DICOM without a file meta header; re-save it")
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    if "PixelData" not in ds:
        raise ImageLoadError(
            f"'{name}' is a DICOM file without pixel data (a report or structured document?)"
        )
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageLoadError(f"'{name}' lacks valid Rows/Columns tags") from exc
    if rows * cols > max_pixels:
        raise InputTooLargeError(
            f"'{name}' is {cols}×{rows} = {rows * cols:,} pixels, above the limit of {max_pixels:,}; "
            "downsample it or raise max_pixels"
        )
    notices: list[str] = []
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        arr = pixel_array(ds, index=0) if frames > 1 else ds.pixel_array
    except NotImplementedError as exc:
        raise ImageLoadError(
            f"'{name}' uses transfer syntax {ds.file_meta.TransferSyntaxUID.name}, which the installed "
            f"pydicom plugins cannot decode ({exc}); convert it to an uncompressed DICOM or a PNG"
        ) from exc
    except (ValueError, RuntimeError, EOFError, AttributeError, KeyError, TypeError) as exc:
        raise ImageLoadError(
            f"'{name}': the pixel data could not be decoded (corrupt or truncated?): {exc}"
        ) from exc
    if frames > 1:
        notices.append(f"multi-frame DICOM with {frames} frames: only the first frame is used")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        values = apply_modality_lut(arr, ds)
        if "VOILUTSequence" in ds or "WindowCenter" in ds:
            lo, hi = _voi_output_range(ds)
            windowed = apply_voi_lut(values, ds, index=0).astype(np.float64)
            pixels = np.clip((windowed - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        else:
            pixels = _robust_unit(values.astype(np.float64))
            notices.append(
                "no window or VOI LUT in the DICOM: contrast set from the 0.5–99.5 percentiles of the pixels"
            )
        if photometric == "MONOCHROME1":
            pixels = 1.0 - pixels  # MONOCHROME1 stores dense tissue dark; invert so bone is bright
            notices.append("MONOCHROME1 image inverted so that dense tissue is bright")
    elif arr.ndim == 3 and arr.shape[-1] == 3:
        # pydicom converts YBR colour spaces to RGB by default
        if arr.dtype.kind == "u":
            pixels = (
                (arr.astype(np.float64) / (2 ** int(ds.get("BitsStored", 8)) - 1))
                .clip(0, 1)
                .astype(np.float32)
            )
        else:
            pixels = _robust_unit(arr.astype(np.float64))
    elif photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        pixels = (rgb.astype(np.float64) / (2**bits - 1)).clip(0, 1).astype(np.float32)
    else:
        raise ImageLoadError(f"'{name}': unsupported DICOM photometric interpretation {photometric}")
    return pixels, dicom_metadata(ds, include_identifying=include_identifying), tuple(notices)
