"""Per-image finding annotations: regions drawn by a reader (boxes, polygons / lassos) or imported masks, kept
by the image's content hash, rasterised at the image's native size and fed to ``verify(annotations=...)``.

Coordinates are continuous native pixel coordinates ``(x, y)``: pixel (row r, column c) covers
``[c, c + 1) × [r, r + 1)``, so its centre is ``(c + 0.5, r + 0.5)``. A pixel belongs to a region when its
centre does: inside a box when ``x0 ≤ cx ≤ x1`` and ``y0 ≤ cy ≤ y1``; inside a polygon by the even-odd
(crossing number) rule, with the usual half-open convention for centres exactly on an edge. The mask of an
annotation is the union of its regions (and of an imported mask).

Exports: a PNG mask (0 / 255, the image's size), a JSON document of every annotation (regions as numbers,
imported masks as PNG in base64) that :meth:`AnnotationStore.from_json` reads back with limits (the file is
untrusted), and a DICOM Segmentation (highdicom) for images that came as DICOM. The DICOM SEG carries no
patient or study identifiers unless the caller asks for them: by default the source's identifying attributes
are emptied and its UIDs replaced by ones derived from them (the same source always gives the same UIDs).
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

from verification.errors import ImageLoadError, InputTooLargeError, InvalidInputError
from verification.io.dicom import IDENTIFYING_TAGS
from verification.io.safejson import bounded_text, loads_bounded

__all__ = [
    "SCHEMA",
    "Annotation",
    "AnnotationStore",
    "Region",
    "dicom_seg",
    "mask_from_png",
    "mask_png",
    "rasterize",
]

SCHEMA = "verification.annotations/1"
RegionKind = Literal["box", "polygon"]
MAX_SIDE = 65_536
MAX_POINTS = 20_000  # per polygon
MAX_REGIONS = 256  # per image
MAX_ANNOTATIONS = 10_000
MAX_JSON_BYTES = 64 << 20
_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Region:
    """A box (``points`` = two opposite corners) or a polygon (≥ 3 vertices, closed implicitly), in native
    pixel coordinates ``(x, y)``."""

    kind: RegionKind
    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if self.kind not in ("box", "polygon"):
            raise InvalidInputError(f"region kind must be 'box' or 'polygon', got {bounded_text(self.kind)}")
        pts = self.points
        if not isinstance(pts, tuple) or not all(
            isinstance(p, tuple) and len(p) == 2 and all(isinstance(v, float | int) for v in p) for p in pts
        ):
            raise InvalidInputError("region points must be (x, y) number pairs")
        if not np.isfinite(np.asarray(pts, dtype=np.float64)).all():
            raise InvalidInputError("region points must be finite numbers")
        if self.kind == "box" and len(pts) != 2:
            raise InvalidInputError(f"a box has two corners, got {len(pts)} points")
        if self.kind == "polygon" and not 3 <= len(pts) <= MAX_POINTS:
            raise InvalidInputError(f"a polygon needs 3 to {MAX_POINTS:,} vertices, got {len(pts):,}")

    @classmethod
    def box(cls, x0: float, y0: float, x1: float, y1: float) -> Region:
        return cls("box", ((float(x0), float(y0)), (float(x1), float(y1))))

    @classmethod
    def polygon(cls, xs: Sequence[float], ys: Sequence[float]) -> Region:
        if len(xs) != len(ys):
            raise InvalidInputError(f"polygon has {len(xs)} x and {len(ys)} y coordinates")
        return cls("polygon", tuple((float(x), float(y)) for x, y in zip(xs, ys, strict=True)))

    def describe(self) -> str:
        a = np.asarray(self.points)
        (x0, y0), (x1, y1) = a.min(0), a.max(0)
        what = "box" if self.kind == "box" else f"polygon of {len(self.points)} points"
        return f"{what} x {x0:.0f}–{x1:.0f}, y {y0:.0f}–{y1:.0f}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "points": [[float(x), float(y)] for x, y in self.points]}


def _check_size(size: object) -> tuple[int, int]:
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in size)
        or not all(1 <= int(v) <= MAX_SIDE for v in size)
    ):
        raise InvalidInputError(
            f"image size must be (height, width), each 1..{MAX_SIDE}, got {bounded_text(size)}"
        )
    return int(size[0]), int(size[1])


def _box_mask(region: Region, h: int, w: int) -> np.ndarray:
    (xa, ya), (xb, yb) = region.points
    x0, x1 = min(xa, xb), max(xa, xb)
    y0, y1 = min(ya, yb), max(ya, yb)
    cx = np.arange(w) + 0.5
    cy = np.arange(h) + 0.5
    cols = (cx >= x0) & (cx <= x1)
    rows = (cy >= y0) & (cy <= y1)
    return rows[:, None] & cols[None, :]


def _polygon_mask(region: Region, h: int, w: int) -> np.ndarray:
    pts = np.asarray(region.points, dtype=np.float64)
    out = np.zeros((h, w), dtype=bool)
    # only the pixels of the bounding box can be inside
    c0 = max(0, int(np.floor(pts[:, 0].min() - 0.5)))
    c1 = min(w, int(np.ceil(pts[:, 0].max() + 0.5)))
    r0 = max(0, int(np.floor(pts[:, 1].min() - 0.5)))
    r1 = min(h, int(np.ceil(pts[:, 1].max() + 0.5)))
    if c1 <= c0 or r1 <= r0:
        return out
    cx = (np.arange(c0, c1) + 0.5)[None, :]
    cy = (np.arange(r0, r1) + 0.5)[:, None]
    inside = np.zeros((r1 - r0, c1 - c0), dtype=bool)
    xj, yj = pts[-1]
    for xi, yi in pts:
        # crossing number: the edge (j → i) straddles the row's y (half-open) and crosses it right of cx
        if yi != yj:
            straddles = (yi > cy) != (yj > cy)
            x_cross = xi + (cy - yi) * (xj - xi) / (yj - yi)
            inside ^= straddles & (cx < x_cross)
        xj, yj = xi, yi
    out[r0:r1, c0:c1] = inside
    return out


def rasterize(regions: Iterable[Region], size: tuple[int, int]) -> np.ndarray:
    """The (H, W) bool mask of the union of ``regions`` at ``size`` = (H, W) (pixel centres: see above)."""
    h, w = _check_size(size)
    mask = np.zeros((h, w), dtype=bool)
    for region in regions:
        mask |= _box_mask(region, h, w) if region.kind == "box" else _polygon_mask(region, h, w)
    return mask


@dataclass(frozen=True, eq=False)
class Annotation:
    """The expected region of one image: its regions and (optionally) an imported mask, at the image's native
    ``size`` (H, W). ``finding`` names what was marked (a class name or free text)."""

    content_hash: str
    image_name: str
    size: tuple[int, int]
    regions: tuple[Region, ...] = ()
    finding: str = "finding"
    imported: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.content_hash, str) or not _HASH.match(self.content_hash):
            raise InvalidInputError(
                f"content hash must be 64 hex digits (sha256), got {bounded_text(self.content_hash)}"
            )
        object.__setattr__(self, "size", _check_size(self.size))
        if len(self.regions) > MAX_REGIONS:
            raise InvalidInputError(f"at most {MAX_REGIONS} regions per image, got {len(self.regions)}")
        if self.imported is not None:
            m = np.asarray(self.imported)
            if m.shape != self.size:
                raise InvalidInputError(f"imported mask is {m.shape}, the image is {self.size}")
            object.__setattr__(self, "imported", m.astype(bool))

    def mask(self) -> np.ndarray:
        """(H, W) bool: the union of the regions and the imported mask."""
        m = rasterize(self.regions, self.size)
        if self.imported is not None:
            m |= self.imported
        return m

    @property
    def empty(self) -> bool:
        return not self.regions and (self.imported is None or not self.imported.any())

    def key(self) -> str:
        """A digest of the mask's content, for caches keyed on what the annotation marks."""
        import hashlib

        m = np.packbits(self.mask())
        return hashlib.sha256(self.content_hash.encode() + repr(self.size).encode() + m.tobytes()).hexdigest()

    def describe(self) -> str:
        parts = [r.describe() for r in self.regions]
        if self.imported is not None:
            parts.append(f"imported mask of {int(self.imported.sum()):,} pixels")
        return "; ".join(parts) if parts else "nothing marked"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "content_hash": self.content_hash,
            "image_name": self.image_name,
            "size": list(self.size),
            "finding": self.finding,
            "regions": [r.to_json() for r in self.regions],
        }
        if self.imported is not None:
            doc["mask_png"] = base64.b64encode(mask_png(self.imported)).decode("ascii")
        return doc


def mask_png(mask: np.ndarray) -> bytes:
    """A bool mask as an 8-bit grey PNG, 255 inside and 0 outside."""
    buf = io.BytesIO()
    Image.fromarray(np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8), mode="L").save(
        buf, "PNG"
    )
    return buf.getvalue()


def mask_from_png(data: bytes, size: tuple[int, int], *, name: str = "mask") -> np.ndarray:
    """A mask image (PNG/TIFF/JPEG; any pixel > half its range is inside; colour: any channel) at exactly
    ``size`` = (H, W), the image's native size. ImageLoadError otherwise."""
    h, w = _check_size(size)
    try:
        img = Image.open(io.BytesIO(data), formats=("PNG", "TIFF", "JPEG"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageLoadError(f"'{name}' is not a PNG, TIFF or JPEG mask image") from exc
    if img.size != (w, h):
        raise ImageLoadError(
            f"'{name}' is {img.size[0]}×{img.size[1]} pixels but the image is {w}×{h}; a mask must have the "
            "image's native size (export the mask from the same image)"
        )
    try:
        arr = np.asarray(img)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageLoadError(f"'{name}' is corrupt or truncated ({exc})") from exc
    if arr.dtype == np.bool_:
        inside = np.asarray(arr, dtype=bool)
    else:
        top = 1.0 if arr.dtype.kind == "f" else float(np.iinfo(arr.dtype).max)
        inside = np.asarray(arr.astype(np.float64) > top / 2.0)
    return np.asarray(inside if inside.ndim == 2 else inside[..., :3].any(-1), dtype=bool)


class AnnotationStore:
    """Annotations by image content hash: set (replace), clear, masks for ``verify``, JSON export/import."""

    def __init__(self, annotations: Iterable[Annotation] = ()) -> None:
        self._by_hash: dict[str, Annotation] = {}
        for a in annotations:
            self.set(a)

    def __len__(self) -> int:
        return len(self._by_hash)

    def __iter__(self) -> Iterator[Annotation]:
        return iter(list(self._by_hash.values()))

    def __contains__(self, content_hash: object) -> bool:
        return content_hash in self._by_hash

    def get(self, content_hash: str) -> Annotation | None:
        return self._by_hash.get(content_hash)

    def set(self, annotation: Annotation) -> None:
        """Add or replace the image's annotation; an empty one clears it."""
        if annotation.empty:
            self.clear(annotation.content_hash)
        else:
            self._by_hash[annotation.content_hash] = annotation

    def add_region(
        self, content_hash: str, image_name: str, size: tuple[int, int], region: Region
    ) -> Annotation:
        """Add one region to the image's annotation (created when missing)."""
        old = self.get(content_hash)
        new = (
            replace(old, regions=(*old.regions, region))
            if old is not None and old.size == tuple(size)
            else Annotation(content_hash, image_name, size, (region,))
        )
        self.set(new)
        return new

    def clear(self, content_hash: str) -> None:
        self._by_hash.pop(content_hash, None)

    def mask(self, content_hash: str) -> np.ndarray | None:
        a = self.get(content_hash)
        return None if a is None else a.mask()

    def masks_for(self, content_hashes: Sequence[str]) -> list[np.ndarray | None]:
        """One mask (or None) per image, in order: what ``verify(annotations=...)`` takes."""
        return [self.mask(h) for h in content_hashes]

    def to_json(self) -> str:
        import json

        return json.dumps({"schema": SCHEMA, "annotations": [a.to_json() for a in self]}, indent=1)

    @classmethod
    def from_json(cls, data: bytes | str, *, name: str = "annotations.json") -> AnnotationStore:
        """Read a document written by :meth:`to_json` (untrusted: sizes, counts and types are checked)."""
        doc = loads_bounded(data, f"'{name}'", error=InvalidInputError, max_bytes=MAX_JSON_BYTES)
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise InvalidInputError(f"'{name}' is not an annotation file of this tool (schema {SCHEMA})")
        items = doc.get("annotations")
        if not isinstance(items, list) or len(items) > MAX_ANNOTATIONS:
            raise InvalidInputError(f"'{name}': 'annotations' must be a list of at most {MAX_ANNOTATIONS:,}")
        store = cls()
        for i, item in enumerate(items):
            try:
                store.set(_annotation_from_json(item))
            except (InvalidInputError, ImageLoadError, InputTooLargeError) as exc:
                raise InvalidInputError(f"'{name}', annotation {i + 1}: {exc}") from exc
        return store


def _annotation_from_json(item: object) -> Annotation:
    if not isinstance(item, dict):
        raise InvalidInputError("each annotation must be an object")
    unknown = set(item) - {"content_hash", "image_name", "size", "finding", "regions", "mask_png"}
    if unknown:
        raise InvalidInputError(f"unknown keys {sorted(unknown)[:5]}")
    size = _check_size(tuple(item.get("size") or ()))
    regions_doc = item.get("regions", [])
    if not isinstance(regions_doc, list) or len(regions_doc) > MAX_REGIONS:
        raise InvalidInputError(f"'regions' must be a list of at most {MAX_REGIONS}")
    regions = []
    for r in regions_doc:
        if not isinstance(r, dict) or set(r) != {"kind", "points"} or not isinstance(r["points"], list):
            raise InvalidInputError("a region is {'kind': 'box'|'polygon', 'points': [[x, y], ...]}")
        if len(r["points"]) > MAX_POINTS or not all(isinstance(p, list) and len(p) == 2 for p in r["points"]):
            raise InvalidInputError(f"region points must be at most {MAX_POINTS:,} [x, y] pairs")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for p in r["points"] for v in p):
            raise InvalidInputError("region points must be numbers")
        regions.append(Region(r["kind"], tuple((float(x), float(y)) for x, y in r["points"])))
    imported = None
    if item.get("mask_png") is not None:
        raw = item["mask_png"]
        if not isinstance(raw, str):
            raise InvalidInputError("'mask_png' must be base64 text")
        try:
            png = base64.b64decode(raw, validate=True)
        except ValueError as exc:
            raise InvalidInputError("'mask_png' is not valid base64") from exc
        imported = mask_from_png(png, size, name="mask_png")
    name, finding = item.get("image_name", "image"), item.get("finding", "finding")
    if not isinstance(name, str) or not isinstance(finding, str):
        raise InvalidInputError("'image_name' and 'finding' must be text")
    return Annotation(
        str(item.get("content_hash")), name[:200], size, tuple(regions), finding[:200], imported
    )


# ------------------------------------------------------------------------------------------------ DICOM SEG

# One list of identifying attributes for the whole tool (io.dicom.IDENTIFYING_TAGS, the display withholds
# them); its instance UIDs are replaced below rather than emptied, and the SEG's dates and times go too.
_IDENTIFYING_EMPTY = (
    *(t for t in IDENTIFYING_TAGS if not t.endswith("InstanceUID")),
    "SeriesDate",
    "SeriesTime",
    "ContentDate",
    "ContentTime",
    "AcquisitionDate",
    "AcquisitionTime",
)
_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def _deidentified(ds: Dataset) -> Dataset:
    """A copy of the source header with identifying attributes emptied and UIDs replaced by derived ones."""
    from pydicom.uid import generate_uid

    out = ds.copy()
    for tag in _IDENTIFYING_EMPTY:
        if tag in out:
            out[tag].value = ""
    for tag in _UIDS:
        if tag in out:
            out[tag].value = generate_uid(entropy_srcs=["verification-deid", str(out[tag].value)])
    if "file_meta" in dir(out) and "MediaStorageSOPInstanceUID" in out.file_meta:
        out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    out.PatientIdentityRemoved = "YES"
    return out


def _completed(ds: Dataset, source: bytes) -> Dataset:
    """The attributes a SEG copies from its source, filled where a (minimal) source lacks them: UIDs derived
    from the file's bytes, empty patient/study attributes (type 2)."""
    import hashlib

    from pydicom.uid import generate_uid

    out = ds.copy()
    digest = hashlib.sha256(source).hexdigest()
    for tag in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not out.get(tag):
            setattr(out, tag, generate_uid(entropy_srcs=["verification-src", tag, digest]))
    for tag in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "AccessionNumber",
        "StudyID",
    ):
        if tag not in out:
            setattr(out, tag, "")
    for tag, value in (("SeriesNumber", 1), ("InstanceNumber", 1)):
        if out.get(tag) in (None, ""):
            setattr(out, tag, value)
    return out


def dicom_seg(annotation: Annotation, source: bytes, *, include_identifying: bool = False) -> bytes:
    """A binary DICOM Segmentation (one segment: the annotation's mask) of the DICOM image ``source``, as
    Part-10 bytes. The mask must have the source's Rows × Columns. Identifying attributes of the source reach
    the SEG only with ``include_identifying`` (see the module)."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    try:
        ds = pydicom.dcmread(io.BytesIO(source), force=source[128:132] != b"DICM")
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception as exc:  # an untrusted file: any parser error is a load error
        raise ImageLoadError(
            f"the source of '{annotation.image_name}' is not a readable DICOM ({exc})"
        ) from exc
    if (rows, cols) != annotation.size:
        raise InvalidInputError(
            f"the annotation is {annotation.size[1]}×{annotation.size[0]} but the DICOM is {cols}×{rows}; "
            "draw the region on this image again"
        )
    mask = annotation.mask()
    if not mask.any():
        raise InvalidInputError("the annotation marks no pixel: draw a region first")
    src = _completed(ds if include_identifying else _deidentified(ds), source)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=annotation.finding[:64] or "finding",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    try:
        seg = hd.seg.Segmentation(
            source_images=[src],
            pixel_array=mask[None].astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=hd.UID(),
            series_number=900,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="attention-verification",
            manufacturer_model_name="viewer",
            software_versions="1",
            device_serial_number="0",
            content_label="FINDING",
            content_description="expected region drawn by a reader",
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InvalidInputError(
            f"a DICOM SEG cannot be made for '{annotation.image_name}' ({type(exc).__name__}: "
            f"{str(exc)[:200]}); export the PNG mask instead"
        ) from exc
    buf = io.BytesIO()
    seg.save_as(buf)
    return buf.getvalue()
