"""Per-image finding annotations: regions drawn by a reader (boxes, polygons / lassos) or imported masks, kept
by the image's content hash, rasterised at the image's native size and fed to ``verify(annotations=...)``.

Coordinates are continuous native pixel coordinates ``(x, y)``: pixel (row r, column c) covers
``[c, c + 1) × [r, r + 1)``, so its centre is ``(c + 0.5, r + 0.5)``. A pixel belongs to a region when its
centre does: inside a box when ``x0 ≤ cx ≤ x1`` and ``y0 ≤ cy ≤ y1``; inside a polygon by the even-odd
(crossing number) rule, with the usual half-open convention for centres exactly on an edge. The mask of an
annotation is the union of its regions (and of an imported mask).

Memory is bounded before anything is decoded or rasterised (:data:`ANNOTATION_LIMITS`, a
:class:`~verification.io.budget.ResourceLimits`): one annotation's mask may take at most ``max_image_bytes``
to decode or rasterise at its declared size (a mask PNG's header is read first), and the imported masks a
store keeps (one byte a pixel) at most ``max_decoded_bytes`` together. An annotation whose size differs from
the image with its content hash cannot belong to that image: it is refused on import (``sizes``) and on use
(:meth:`AnnotationStore.for_image`).

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
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

from verification.errors import ImageLoadError, InputTooLargeError, InvalidInputError, UploadTooLargeError
from verification.io.budget import DEFAULT_LIMITS, ImageCost, ResourceLimits, probe_image
from verification.io.dicom import IDENTIFYING_TAGS
from verification.io.safejson import bounded_text, loads_bounded

__all__ = [
    "ANNOTATION_LIMITS",
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
_MiB = 1 << 20
# Imported masks kept by one store (a session), one byte a pixel: a quarter of the image budget of one upload
# (DEFAULT_LIMITS.max_decoded_bytes, 2 GiB), which holds at most 2 GiB / 5 bytes ≈ 430 M grey pixels (a loaded
# image keeps float32 + uint8 a sample): a mask for every pixel of a full upload (≈ 410 MiB) fits in 512 MiB.
# One annotation: what decoding or rasterising its mask may take, as for one image (1 GiB).
ANNOTATION_LIMITS = ResourceLimits(
    max_image_bytes=DEFAULT_LIMITS.max_image_bytes, max_decoded_bytes=DEFAULT_LIMITS.max_decoded_bytes // 4
)
# Peak bytes a pixel while rasterising (rasterize + Annotation.mask): the union, the region's own mask (a
# polygon: its output, its bounding-box mask and two comparison temporaries) — 5 bool arrays at most.
_RASTER_BYTES_PER_PIXEL = 5
_MASK_MAGIC = (b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"\xff\xd8\xff")


def _mb(n: int) -> str:
    return f"{n / _MiB:,.0f} MiB" if n >= 10 * _MiB else f"{n / _MiB:,.1f} MiB"


def check_mask_size(size: tuple[int, int], what: str, limits: ResourceLimits = ANNOTATION_LIMITS) -> None:
    """Refuse a mask whose rasterisation at ``size`` = (H, W) would take more than ``limits.max_image_bytes``
    (InputTooLargeError): no image the loaders accept is that large."""
    h, w = size
    need = _RASTER_BYTES_PER_PIXEL * h * w
    if need > limits.max_image_bytes:
        raise InputTooLargeError(
            f"{what} is {w:,}×{h:,} pixels: its mask would need about {_mb(need)} of memory, above the "
            f"{_mb(limits.max_image_bytes)} limit for one image; no image that large can be loaded here"
        )


def _decode_peak(cost: ImageCost) -> int:
    """Peak bytes of decoding a mask image: PIL's buffer (RGB held as 4 bytes a pixel) and the array copy of
    it, the comparison's bool samples and the bool mask."""
    samples = 4 if cost.samples == 3 else cost.samples
    raw = cost.pixels * samples * cost.bytes_per_sample
    return 2 * raw + cost.pixels * (samples + 1)


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
            object.__setattr__(self, "imported", m.astype(bool, copy=False))

    def mask(self) -> np.ndarray:
        """(H, W) bool: the union of the regions and the imported mask."""
        m = rasterize(self.regions, self.size)
        if self.imported is not None:
            m |= self.imported
        return m

    @property
    def held_bytes(self) -> int:
        """Bytes of the imported mask this annotation keeps (0 for regions alone)."""
        return 0 if self.imported is None else int(self.imported.nbytes)

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


def mask_from_png(
    data: bytes, size: tuple[int, int], *, name: str = "mask", limits: ResourceLimits = ANNOTATION_LIMITS
) -> np.ndarray:
    """A mask image (PNG/TIFF/JPEG; any pixel > half its range is inside; colour: any colour channel, alpha
    ignored) at exactly ``size`` = (H, W), the image's native size. Its header is read first: a mask of
    another size is an ImageLoadError and one whose decoding (or rasterising at ``size``) would take more than
    ``limits.max_image_bytes`` an InputTooLargeError, before any pixel is decoded; a corrupt file is an
    ImageLoadError."""
    h, w = _check_size(size)
    if not data.startswith(_MASK_MAGIC):
        raise ImageLoadError(f"'{name}' is not a PNG, TIFF or JPEG mask image")
    check_mask_size((h, w), f"'{name}'", limits)
    cost = probe_image(data, name, is_dicom=False)  # ImageLoadError / InputTooLargeError on a bad header
    if (cost.width, cost.height) != (w, h) or cost.depth != 1:
        raise ImageLoadError(
            f"'{name}' is {cost.width}×{cost.height} pixels but the image is {w}×{h}; a mask must have the "
            "image's native size (export the mask from the same image)"
        )
    if (need := _decode_peak(cost)) > limits.max_image_bytes:
        raise InputTooLargeError(
            f"'{name}' ({cost.describe()}) would need about {_mb(need)} of memory to decode, above the "
            f"{_mb(limits.max_image_bytes)} limit for one image; save the mask as an 8-bit grey PNG"
        )
    try:
        img: Image.Image = Image.open(io.BytesIO(data), formats=("PNG", "TIFF", "JPEG"))
        if img.size != (w, h):  # the probe and PIL disagree: a malformed header
            raise ImageLoadError(f"'{name}' has an inconsistent header ({img.size[0]}×{img.size[1]})")
        if img.mode == "P":  # palette indices are not intensities
            img = img.convert("RGBA")
        arr = np.asarray(img)
    except Image.DecompressionBombError as exc:
        raise InputTooLargeError(f"'{name}' declares more pixels than allowed (decompression bomb?)") from exc
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        TypeError,
        EOFError,
        KeyError,
        IndexError,
        ZeroDivisionError,
        struct.error,
    ) as exc:
        raise ImageLoadError(
            f"'{name}' is a corrupt or truncated mask image ({type(exc).__name__}: {str(exc)[:160]})"
        ) from exc
    inside: np.ndarray
    if arr.dtype == np.bool_:
        inside = arr
    elif arr.dtype.kind == "f":
        inside = np.asarray(arr > 0.5)
    elif arr.dtype.kind in "iu":  # > half the range, without a float copy: the maximum is odd (2^k - 1)
        inside = np.asarray(arr > np.iinfo(arr.dtype).max // 2)
    else:
        raise ImageLoadError(f"'{name}' has samples of an unsupported type ({arr.dtype})")
    if inside.ndim == 3:  # grey + alpha: the grey sample; colour (+ alpha): any colour sample
        inside = inside[..., 0] if inside.shape[-1] == 2 else np.asarray(inside[..., :3].any(-1))
    return np.asarray(inside, dtype=bool)


class AnnotationStore:
    """Annotations by image content hash: set (replace), clear, masks for ``verify``, JSON export/import.

    The imported masks it keeps are bounded together by ``limits.max_decoded_bytes`` (:meth:`set` refuses past
    it; :meth:`import_json` before decoding anything)."""

    def __init__(
        self, annotations: Iterable[Annotation] = (), *, limits: ResourceLimits = ANNOTATION_LIMITS
    ) -> None:
        self.limits = limits
        self._by_hash: dict[str, Annotation] = {}
        self._held = 0  # Σ held_bytes of _by_hash's annotations, kept as they come and go
        for a in annotations:
            self.set(a)

    def __len__(self) -> int:
        return len(self._by_hash)

    def __iter__(self) -> Iterator[Annotation]:
        return iter(list(self._by_hash.values()))

    def __contains__(self, content_hash: object) -> bool:
        return content_hash in self._by_hash

    @property
    def held_bytes(self) -> int:
        """Bytes of the imported masks this store keeps."""
        return self._held

    def get(self, content_hash: str) -> Annotation | None:
        return self._by_hash.get(content_hash)

    def for_image(self, content_hash: str, size: tuple[int, int]) -> Annotation | None:
        """The annotation of the image with ``content_hash`` and native ``size`` = (H, W), None when it has
        none. One of another size cannot belong to that image (an edited or foreign file): it is removed and
        refused (InvalidInputError) rather than rasterised at a size no loaded image has."""
        a = self.get(content_hash)
        if a is None or a.size == tuple(size):
            return a
        self.clear(content_hash)
        raise InvalidInputError(
            f"the annotation of '{bounded_text(a.image_name)}' is {a.size[1]}×{a.size[0]} pixels but this "
            f"image (the same content) is {size[1]}×{size[0]}; it was set aside. Draw the region again or "
            "import an annotation made on this image"
        )

    def set(self, annotation: Annotation) -> None:
        """Add or replace the image's annotation; an empty one clears it. UploadTooLargeError (nothing
        changes) when the imported masks kept would exceed ``limits.max_decoded_bytes``."""
        if annotation.empty:
            self.clear(annotation.content_hash)
            return
        old = self.get(annotation.content_hash)
        total = self._held - (0 if old is None else old.held_bytes) + annotation.held_bytes
        if annotation.held_bytes and total > self.limits.max_decoded_bytes:
            raise UploadTooLargeError(self._over(total, f"the mask of '{annotation.image_name}'"))
        self._by_hash[annotation.content_hash] = annotation
        self._held = total

    def _over(self, total: int, what: str) -> str:
        return (
            f"{what} would bring the imported masks kept in this session to {_mb(total)}, above the "
            f"{_mb(self.limits.max_decoded_bytes)} limit; clear annotations you no longer need or import "
            "fewer at a time"
        )

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
        old = self._by_hash.pop(content_hash, None)
        if old is not None:
            self._held -= old.held_bytes

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
    def from_json(
        cls,
        data: bytes | str,
        *,
        name: str = "annotations.json",
        sizes: Mapping[str, tuple[int, int]] | None = None,
        limits: ResourceLimits = ANNOTATION_LIMITS,
        held: Mapping[str, int] | None = None,
    ) -> AnnotationStore:
        """Read a document written by :meth:`to_json` (untrusted: sizes, counts and types are checked).

        ``sizes``: the native (H, W) of known images by content hash; an annotation of one of them with
        another size is refused. Before any mask is decoded or rasterised, each annotation's declared size is
        checked against ``limits.max_image_bytes`` and its mask's H×W bytes are charged against
        ``limits.max_decoded_bytes``, together with ``held`` (bytes already kept by content hash, as
        :meth:`import_json` passes; an annotation replacing one of them frees it). The first annotation that
        fails refuses the whole document with its number: the error keeps its type (InvalidInputError,
        ImageLoadError, InputTooLargeError / UploadTooLargeError)."""
        doc = loads_bounded(data, f"'{name}'", error=InvalidInputError, max_bytes=MAX_JSON_BYTES)
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise InvalidInputError(f"'{name}' is not an annotation file of this tool (schema {SCHEMA})")
        items = doc.get("annotations")
        if not isinstance(items, list) or len(items) > MAX_ANNOTATIONS:
            raise InvalidInputError(f"'{name}': 'annotations' must be a list of at most {MAX_ANNOTATIONS:,}")
        store = cls(limits=limits)
        kept = dict(held or {})  # bytes each content hash will hold once the document is in
        kept_total = sum(kept.values())
        for i, item in enumerate(items):
            try:
                key = str(item.get("content_hash")) if isinstance(item, dict) else ""
                declared = _declared_mask_bytes(item)
                total = kept_total - kept.get(key, 0) + declared
                if declared and total > limits.max_decoded_bytes:
                    # every earlier annotation passed this same check with the same sizes: the first i fit
                    raise UploadTooLargeError(
                        store._over(total, "its mask")
                        + f". The first {i:,} of the file's {len(items):,} annotations fit; nothing was "
                        "imported"
                    )
                annotation = _annotation_from_json(item, sizes or {}, limits)
                store.set(annotation)
                kept_total += annotation.held_bytes - kept.get(key, 0)
                kept[key] = annotation.held_bytes
            except (InvalidInputError, ImageLoadError, InputTooLargeError) as exc:
                raise type(exc)(f"'{name}', annotation {i + 1}: {exc}") from exc
        return store

    def import_json(
        self,
        data: bytes | str,
        *,
        name: str = "annotations.json",
        sizes: Mapping[str, tuple[int, int]] | None = None,
    ) -> AnnotationStore:
        """Merge a document of :meth:`to_json` into this store, all or nothing: :meth:`from_json` with this
        store's limits and the masks it keeps, so a refusal leaves it as it was. Returns what was read."""
        held = {a.content_hash: a.held_bytes for a in self._by_hash.values()}
        imported = self.from_json(data, name=name, sizes=sizes, limits=self.limits, held=held)
        for a in imported:
            old = self._by_hash.get(a.content_hash)
            self._held += a.held_bytes - (0 if old is None else old.held_bytes)  # charged above
            self._by_hash[a.content_hash] = a
        return imported


def _declared_mask_bytes(item: object) -> int:
    """Bytes the annotation's imported mask will keep (one a pixel at its declared size), 0 without one."""
    if not isinstance(item, dict) or item.get("mask_png") is None:
        return 0
    h, w = _check_size(tuple(item.get("size") or ()))
    return h * w


def _annotation_from_json(
    item: object, sizes: Mapping[str, tuple[int, int]], limits: ResourceLimits
) -> Annotation:
    if not isinstance(item, dict):
        raise InvalidInputError("each annotation must be an object")
    unknown = set(item) - {"content_hash", "image_name", "size", "finding", "regions", "mask_png"}
    if unknown:
        raise InvalidInputError(f"unknown keys {sorted(unknown)[:5]}")
    size = _check_size(tuple(item.get("size") or ()))
    name, finding = item.get("image_name", "image"), item.get("finding", "finding")
    if not isinstance(name, str) or not isinstance(finding, str):
        raise InvalidInputError("'image_name' and 'finding' must be text")
    known = sizes.get(str(item.get("content_hash")))
    if known is not None and tuple(known) != size:
        raise InvalidInputError(
            f"it is {size[1]}×{size[0]} pixels but the loaded image with its content "
            f"('{bounded_text(name[:200])}') is {known[1]}×{known[0]}: it was not made on this image"
        )
    check_mask_size(size, "its image", limits)  # before any mask is decoded or rasterised
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
        imported = mask_from_png(png, size, name="mask_png", limits=limits)
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
