"""DICOM → display-ready grey values: modality rescale, VOI LUT/window, MONOCHROME1 inversion, safe tags."""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
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


def unit_from_range(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(values - lo) / (hi - lo) clipped to [0, 1], as float32, with one working copy (in-place steps); all
    zeros when the range is empty or not finite."""
    out = np.asarray(values).astype(np.float32, copy=True)
    if not hi > lo or not np.isfinite(hi - lo):
        out[...] = 0.0
        return out
    out -= np.float32(lo)
    out /= np.float32(hi - lo)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _robust_unit(values: np.ndarray) -> np.ndarray:
    lo, hi = (float(v) for v in np.percentile(values, ROBUST_PERCENTILES))
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    return unit_from_range(values, lo, hi)


def _int_tag(ds: Dataset, tag: str, default: int | None, name: str) -> int:
    """An integer tag as an int, or ImageLoadError naming the tag and its bad value."""
    if tag not in ds or ds[tag].value in (None, ""):
        if default is None:
            raise ImageLoadError(
                f"'{name}' lacks the DICOM tag {tag}; the image cannot be decoded without it"
            )
        return default
    value = ds[tag].value
    try:
        return int(str(value).strip()) if isinstance(value, str | bytes) else int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageLoadError(
            f"'{name}' has an invalid DICOM {tag} value {str(value)[:40]!r} (not an integer); fix the tag "
            "with a DICOM editor or export the image again"
        ) from exc


def _read_dataset(data: bytes, name: str, *, stop_before_pixels: bool) -> Dataset:
    try:
        return pydicom.dcmread(
            io.BytesIO(data), force=data[128:132] != b"DICM", stop_before_pixels=stop_before_pixels
        )
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError, TypeError, IndexError) as exc:
        raise ImageLoadError(f"'{name}' is not a readable DICOM file (corrupt or truncated): {exc}") from exc
    except Exception as exc:  # pydicom raises its own types (BytesLengthException, ...) on malformed elements
        raise ImageLoadError(
            f"'{name}' is not a readable DICOM file (malformed header: {type(exc).__name__}: "
            f"{str(exc)[:160]})"
        ) from exc


def geometry_of(ds: Dataset, name: str) -> tuple[int, int, int, int, int]:
    """(Rows, Columns, SamplesPerPixel, BitsAllocated, NumberOfFrames), each checked to be a sane integer."""
    rows = _int_tag(ds, "Rows", None, name)
    cols = _int_tag(ds, "Columns", None, name)
    samples = _int_tag(ds, "SamplesPerPixel", 1, name)
    bits = _int_tag(ds, "BitsAllocated", 16, name)
    frames = _int_tag(ds, "NumberOfFrames", 1, name) or 1
    if rows < 1 or cols < 1 or not 1 <= samples <= 4 or bits not in (1, 8, 16, 32, 64) or frames < 1:
        raise ImageLoadError(
            f"'{name}' has impossible DICOM image tags (Rows {rows}, Columns {cols}, SamplesPerPixel "
            f"{samples}, BitsAllocated {bits}, NumberOfFrames {frames}); the file is corrupt"
        )
    return rows, cols, samples, bits, frames


def dicom_geometry(data: bytes, name: str) -> tuple[int, int, int, int, int]:
    """:func:`geometry_of` read from the header only (pixel data is not parsed)."""
    try:
        return geometry_of(_read_dataset(data, name, stop_before_pixels=True), name)
    except ImageLoadError:
        raise
    except Exception as exc:  # pydicom converts values lazily: a malformed element raises on first access
        raise ImageLoadError(
            f"'{name}' has a malformed DICOM header ({type(exc).__name__}: {str(exc)[:160]}); export it again"
        ) from exc


def _window_checked(ds: Dataset, name: str) -> None:
    """pydicom divides by the window width: a width below 1 (0 in a corrupt file) cannot be applied."""
    if "WindowWidth" not in ds or "VOILUTSequence" in ds:
        return
    width = ds.WindowWidth
    first = width[0] if isinstance(width, MultiValue) and len(width) else width
    try:
        value = float(first)
    except (TypeError, ValueError) as exc:
        raise ImageLoadError(f"'{name}' has an invalid DICOM WindowWidth {str(width)[:40]!r}") from exc
    exact = str(ds.get("VOILUTFunction", "LINEAR")).upper() == "LINEAR_EXACT"
    if not math.isfinite(value) or value < (0 if exact else 1) or (exact and value == 0):
        raise ImageLoadError(
            f"'{name}' has DICOM WindowWidth {value:g}, which cannot be applied (it must be at least 1); "
            "remove the WindowCenter/WindowWidth tags or set a valid window"
        )


def read_dicom(
    data: bytes, *, name: str, max_pixels: int, include_identifying: bool = False
) -> tuple[np.ndarray, dict[str, Any], tuple[str, ...]]:
    """Decode the first frame to float32 in [0, 1], (H, W) or (H, W, 3), dense tissue bright.

    Returns (pixels, metadata, notices). Every failure is an ImageLoadError (or InputTooLargeError).
    """
    ds = _read_dataset(data, name, stop_before_pixels=False)
    try:
        return _decode(ds, name=name, max_pixels=max_pixels, include_identifying=include_identifying)
    except (ImageLoadError, InputTooLargeError, MemoryError):
        raise
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        RuntimeError,
        NotImplementedError,
        OverflowError,
        ZeroDivisionError,
        EOFError,
        struct.error,
    ) as exc:
        raise ImageLoadError(
            f"'{name}': the DICOM pixel data could not be decoded ({type(exc).__name__}: {str(exc)[:200]}); "
            "convert it to an uncompressed DICOM or a PNG"
        ) from exc


def _decode(
    ds: Dataset, *, name: str, max_pixels: int, include_identifying: bool
) -> tuple[np.ndarray, dict[str, Any], tuple[str, ...]]:
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
    rows, cols, _samples, _bits, frames = geometry_of(ds, name)
    if rows * cols > max_pixels:
        raise InputTooLargeError(
            f"'{name}' is {cols}×{rows} = {rows * cols:,} pixels, above the limit of {max_pixels:,}; "
            "downsample it or raise max_pixels"
        )
    notices: list[str] = []
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR" and "RedPaletteColorLookupTableDescriptor" not in ds:
        raise ImageLoadError(
            f"'{name}' is a PALETTE COLOR DICOM without its colour lookup table; export it again as RGB or "
            "grayscale"
        )
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        _window_checked(ds, name)
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
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        values = apply_modality_lut(arr, ds)
        del arr
        if "VOILUTSequence" in ds or "WindowCenter" in ds:
            lo, hi = _voi_output_range(ds)
            windowed = apply_voi_lut(values, ds, index=0)
            del values
            pixels = unit_from_range(windowed, lo, hi)
        else:
            pixels = _robust_unit(values)
            notices.append(
                "no window or VOI LUT in the DICOM: contrast set from the 0.5–99.5 percentiles of the pixels"
            )
        if not np.isfinite(pixels).all():
            raise ImageLoadError(
                f"'{name}': the DICOM rescale produced NaN or infinite values; check its tags"
            )
        if photometric == "MONOCHROME1":
            np.subtract(1.0, pixels, out=pixels)  # MONOCHROME1 stores dense tissue dark; make bone bright
            notices.append("MONOCHROME1 image inverted so that dense tissue is bright")
    elif arr.ndim == 3 and arr.shape[-1] == 3:
        # pydicom converts YBR colour spaces to RGB by default
        if arr.dtype.kind == "u":
            stored = _int_tag(ds, "BitsStored", 8, name)
            pixels = unit_from_range(arr, 0.0, float(2 ** min(max(stored, 1), 64) - 1))
        else:
            pixels = _robust_unit(arr)
    elif photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        pixels = unit_from_range(rgb, 0.0, float(2 ** min(max(bits, 1), 64) - 1))
    else:
        raise ImageLoadError(f"'{name}': unsupported DICOM photometric interpretation {photometric}")
    return pixels, dicom_metadata(ds, include_identifying=include_identifying), tuple(notices)


# ------------------------------------------------------------------------------------------- display windows
# The viewer's window/level works on the modality values (after the rescale), in the file's own units. It only
# changes what is drawn: the model's input stays what :func:`read_dicom` returned.


@dataclass(frozen=True)
class WindowPreset:
    """One way to map modality values to grey: a window (``center``, ``width``, ``function`` one of LINEAR,
    LINEAR_EXACT, SIGMOID; PS3.3 C.11.2.1.2) or, with ``lut_index``, an item of the VOI LUT Sequence."""

    label: str
    center: float = 0.0
    width: float = 1.0
    function: str = "LINEAR"
    lut_index: int | None = None


@dataclass(frozen=True, eq=False)
class ModalityFrame:
    """The first frame of a grey DICOM after its modality LUT (float32, file units), the window presets the
    file carries (the first is what :func:`read_dicom` applied), whether MONOCHROME1 inversion follows the
    window, and the header (no pixel data) that holds the VOI LUTs."""

    values: np.ndarray
    presets: tuple[WindowPreset, ...]
    invert: bool
    units: str
    header: Dataset


def _floats(value: Any) -> list[float]:
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    out = []
    for v in items:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return out


def window_presets(ds: Dataset) -> tuple[WindowPreset, ...]:
    """The VOI LUTs, then the WindowCenter/WindowWidth pairs of a dataset, in the order :func:`read_dicom`
    prefers them (its first is the one the loader applied). Pairs that cannot be applied (a width below 1, or
    not a number) are left out."""
    presets: list[WindowPreset] = []
    for i, item in enumerate(ds.get("VOILUTSequence") or []):
        what = str(item.get("LUTExplanation", "") or "").strip()[:40]
        presets.append(
            WindowPreset(f"VOI LUT {i + 1} from the file" + (f" ({what})" if what else ""), lut_index=i)
        )
    if "WindowCenter" in ds and "WindowWidth" in ds:
        centers, widths = _floats(ds.WindowCenter), _floats(ds.WindowWidth)
        explanations = ds.get("WindowCenterWidthExplanation")
        names = (
            [str(e) for e in explanations]
            if isinstance(explanations, MultiValue)
            else [str(explanations or "")]
        )
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            function = "LINEAR"
        for i, (c, w) in enumerate(zip(centers, widths, strict=False)):
            if (
                not (math.isfinite(c) and math.isfinite(w))
                or w < (1.0 if function == "LINEAR" else 0.0)
                or w == 0
            ):
                continue
            what = names[i].strip()[:40] if i < len(names) else ""
            presets.append(
                WindowPreset(
                    f"window {i + 1} from the file: C {c:g} / W {w:g}" + (f" ({what})" if what else ""),
                    c,
                    w,
                    function,
                )
            )
    return tuple(presets)


def window_unit(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing onto [0, 1] (float32): LINEAR (width ≥ 1), LINEAR_EXACT or SIGMOID
    (width > 0). Anything else is a ValueError."""
    x = np.asarray(values, dtype=np.float64)
    fn = function.upper()
    if fn == "LINEAR":
        if not width >= 1.0:
            raise ValueError(f"a LINEAR window needs a width of at least 1, got {width:g}")
        lo, hi = center - 0.5 - (width - 1.0) / 2.0, center - 0.5 + (width - 1.0) / 2.0
        ramp = (x - (center - 0.5)) / max(width - 1.0, 1e-300) + 0.5
        y = np.where(x <= lo, 0.0, np.where(x > hi, 1.0, ramp))
    elif fn == "LINEAR_EXACT":
        if not width > 0.0:
            raise ValueError(f"a LINEAR_EXACT window needs a positive width, got {width:g}")
        y = np.where(
            x <= center - width / 2.0,
            0.0,
            np.where(x > center + width / 2.0, 1.0, (x - center) / width + 0.5),
        )
    elif fn == "SIGMOID":
        if not width > 0.0:
            raise ValueError(f"a SIGMOID window needs a positive width, got {width:g}")
        y = 1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - center) / width, -700.0, 700.0)))
    else:
        raise ValueError(f"unknown VOI LUT function {function!r}; one of LINEAR, LINEAR_EXACT, SIGMOID")
    return np.asarray(y, dtype=np.float32)


def modality_frame(data: bytes, *, name: str, max_pixels: int) -> ModalityFrame | None:
    """The first frame's modality values and the file's window presets, for a grey (MONOCHROME1/2) DICOM;
    None for colour images (they have no window). Errors as :func:`read_dicom`."""
    ds = _read_dataset(data, name, stop_before_pixels=False)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    try:
        if "TransferSyntaxUID" not in ds.file_meta:
            implicit, _little = ds.original_encoding
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        rows, cols, _s, _b, frames = geometry_of(ds, name)
        if rows * cols > max_pixels:
            raise InputTooLargeError(
                f"'{name}' is {cols}×{rows} = {rows * cols:,} pixels, above the limit of {max_pixels:,}"
            )
        arr = pixel_array(ds, index=0) if frames > 1 else ds.pixel_array
        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    except (ImageLoadError, InputTooLargeError, MemoryError):
        raise
    except Exception as exc:  # the same decoders as read_dicom: report any failure typed
        raise ImageLoadError(
            f"'{name}': the DICOM pixel data could not be decoded ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    if not np.isfinite(values).all():
        raise ImageLoadError(f"'{name}': the DICOM rescale produced NaN or infinite values; check its tags")
    presets = window_presets(ds)
    units = str(
        ds.get("RescaleType", "") or ("HU" if str(ds.get("Modality", "")) == "CT" else "stored values")
    )
    del ds.PixelData
    return ModalityFrame(values, presets, photometric == "MONOCHROME1", units, ds)


def apply_preset(frame: ModalityFrame, preset: WindowPreset) -> np.ndarray:
    """The frame through one preset onto [0, 1] (float32), dense tissue bright (MONOCHROME1 inverted)."""
    if preset.lut_index is not None:
        lo, hi = _voi_output_range(frame.header)
        lut = apply_voi_lut(frame.values, frame.header, index=preset.lut_index, prefer_lut=True)
        out = unit_from_range(lut, lo, hi)
    else:
        out = window_unit(frame.values, preset.center, preset.width, preset.function)
    if frame.invert:
        np.subtract(1.0, out, out=out)
    return out
