"""Heatmaps back into the PACS: a Secondary Capture (highdicom ``SCImage``) of the overlay that
:func:`verification.render.overlay` draws — the map blended over the film, RGB, at the film's own size — in a
NEW series of the SAME study, so any viewer shows it next to (and the same size as) the image it explains.

What is copied from the source instance: the patient and study modules (highdicom's ``from_ref_dataset``), the
FrameOfReferenceUID, PatientOrientation, Laterality, BodyPartExamined and StudyDescription where present.
Nothing identifying is added that the study did not already hold. What is recorded: model, method, layer,
target and verdict in SeriesDescription (64 characters), ImageComments and DerivationDescription (bounded),
and the source image in SourceImageSequence.

:func:`store_overlays` builds and validates every object (encode, decode, pixel check) before ONE STOW-RS
request; if building any fails, nothing is sent.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from verification.errors import PacsError
from verification.pacs.client import HEATMAP_PREFIX
from verification.render import DEFAULT_OPACITY, overlay

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from verification.pacs.client import PacsClient

__all__ = ["HeatmapResult", "build_overlay", "describe", "store_overlays", "validate"]

MANUFACTURER = "verification (CNN attention verification)"
SERIES_NUMBER = 9900
_MAX_LO = 64
_MAX_COMMENT = 1024


@dataclass(frozen=True)
class HeatmapResult:
    """One map to store: the source instance (a pydicom Dataset, pixels not needed), the display picture the
    map was computed on (``LoadedImage.display``) and the map in [0, 1], with what made it."""

    source: Dataset = field(repr=False)  # of the retrieved instance
    display: np.ndarray = field(repr=False)
    cam: np.ndarray = field(repr=False)
    model: str
    method: str
    layer: str
    target: str = ""
    verdict: str = "not verified"
    opacity: float = DEFAULT_OPACITY
    colormap: str = "jet"


def _clean(text: str, limit: int) -> str:
    """Printable text for a DICOM string: no backslash (a value separator) or control characters, bounded."""
    out = "".join(c if c.isprintable() and c != "\\" else " " for c in str(text)).strip()
    return out if len(out) <= limit else out[: limit - 1] + "…"


def describe(item: HeatmapResult) -> tuple[str, str]:
    """(SeriesDescription ≤ 64 characters, ImageComments ≤ 1024) for one heatmap."""
    series = _clean(f"{HEATMAP_PREFIX}{item.method} {item.layer} - {item.verdict}", _MAX_LO)
    comment = _clean(
        f"Attention heatmap (not a diagnosis). model: {item.model}; method: {item.method}; layer: "
        f"{item.layer}; target: {item.target or 'predicted class'}; verdict: {item.verdict}; overlay: "
        f"{item.colormap}, opacity {item.opacity:g}, blended over the source image's display window",
        _MAX_COMMENT,
    )
    return series, comment


def overlay_pixels(item: HeatmapResult) -> np.ndarray:
    """The stored pixels: render.overlay at the display picture's full size (RGB uint8)."""
    h, w = item.display.shape[:2]
    return overlay(item.display, item.cam, opacity=item.opacity, colormap=item.colormap, max_side=max(h, w))


def build_overlay(
    item: HeatmapResult, *, series_uid: str, instance_number: int = 1, series_number: int = SERIES_NUMBER
) -> Dataset:
    """The Secondary Capture of one heatmap (a pydicom Dataset, not yet sent)."""
    from highdicom.sc import SCImage
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    src = item.source
    pixels = overlay_pixels(item)
    rows, cols = int(src.get("Rows", 0) or 0), int(src.get("Columns", 0) or 0)
    if (rows, cols) != pixels.shape[:2]:
        raise PacsError(
            f"the heatmap picture is {pixels.shape[1]}×{pixels.shape[0]} but its source image is "
            f"{cols}×{rows}; compute it on the image retrieved from the PACS"
        )
    given = src.get("PatientOrientation")
    orientation = (str(given[0]), str(given[1])) if given is not None and len(given) == 2 else None
    raw = src.get("PixelSpacing") or src.get("ImagerPixelSpacing")
    spacing: Any = None  # highdicom's hint says int pairs; spacing is float
    if raw is not None and len(raw) == 2 and min(float(s) for s in raw) > 0:
        spacing = (float(raw[0]), float(raw[1]))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom's person-name style notes on copied names
        sc = SCImage.from_ref_dataset(
            ref_dataset=src,
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=generate_uid(),
            instance_number=instance_number,
            manufacturer=MANUFACTURER,
            pixel_spacing=spacing,
            # highdicom needs a value to build; without one in the source it is emptied below (Type 2)
            patient_orientation=orientation or ("L", "F"),
            transfer_syntax_uid=ExplicitVRLittleEndian,
        )
    # the study keeps its description (servers index studies from their latest instance)
    for keyword in ("FrameOfReferenceUID", "Laterality", "BodyPartExamined", "StudyDescription"):
        if keyword in src and src.get(keyword) not in (None, ""):
            setattr(sc, keyword, src.get(keyword))
    if orientation is None:
        sc.PatientOrientation = None  # type: ignore[assignment]  # unknown: present and empty, never invented
    series, comment = describe(item)
    sc.SeriesDescription = series
    sc.ImageComments = comment
    sc.DerivationDescription = _clean(comment, _MAX_COMMENT)
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.BurnedInAnnotation = "NO"
    from pydicom.dataset import Dataset

    ref = Dataset()
    ref.ReferencedSOPClassUID = src.SOPClassUID
    ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    return sc


def validate(ds: Dataset, expected: np.ndarray) -> None:
    """Encode the object, decode it again, check the pixels and the UIDs; PacsError when anything is off."""
    import pydicom

    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
        back = pydicom.dcmread(io.BytesIO(buf.getvalue()))
        pixels = back.pixel_array
    except Exception as exc:
        raise PacsError(
            f"the heatmap object could not be encoded ({type(exc).__name__}); nothing was sent"
        ) from None
    if pixels.shape != expected.shape or not np.array_equal(pixels, expected):
        raise PacsError("the heatmap object's pixels do not read back as drawn; nothing was sent")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not str(back.get(keyword, "")):
            raise PacsError(f"the heatmap object has no {keyword}; nothing was sent")


def store_overlays(client: PacsClient, items: Sequence[HeatmapResult]) -> list[Dataset]:
    """Build every heatmap object (one new series per study), validate them all, then store them with ONE
    STOW-RS request per study. Returns the stored datasets. If building or validating any fails, nothing is
    sent; if the server refuses the request, the PacsError says so."""
    from pydicom.uid import generate_uid

    if not items:
        raise PacsError("no heatmap to store")
    by_study: dict[str, list[HeatmapResult]] = {}
    for item in items:
        by_study.setdefault(str(item.source.StudyInstanceUID), []).append(item)
    built: dict[str, list[Dataset]] = {}
    for study, group in by_study.items():
        series_uid = generate_uid()
        datasets = []
        for n, item in enumerate(group, start=1):
            ds = build_overlay(item, series_uid=series_uid, instance_number=n)
            validate(ds, overlay_pixels(item))
            datasets.append(ds)
        built[study] = datasets
    stored: list[Dataset] = []
    for study, datasets in built.items():
        client.store(datasets, study)
        stored.extend(datasets)
    return stored
