"""The pictures of the reports: example overlays at display size, class reference maps, and their encodings
(drawn by the one renderer, :mod:`verification.render`)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from verification.render import heat, overlay, png_bytes

if TYPE_CHECKING:
    from verification.verdict import Example, VerificationReport

__all__ = [
    "EXAMPLE_SIDE",
    "JPEG_QUALITY",
    "REFERENCE_SIDE",
    "example_pictures",
    "jpeg_bytes",
    "overlay_png",
]

EXAMPLE_SIDE = 320
"""Longest side (px) of an example overlay in the reports: the HTML gallery shows it at about 290 px."""
REFERENCE_SIDE = 160
"""Side (px) of a class reference map in the reports (a smooth map: more pixels add nothing)."""
JPEG_QUALITY = 82


def jpeg_bytes(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """Encode a uint8 (H, W) or (H, W, 3) array as baseline JPEG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).convert("RGB").save(
        buf, format="JPEG", quality=quality, optimize=True
    )
    return buf.getvalue()


def overlay_png(display: np.ndarray, cam: np.ndarray, *, alpha: float = 0.45) -> bytes:
    """PNG bytes of :func:`verification.render.overlay`."""
    return png_bytes(overlay(display, cam, opacity=alpha))


def example_pictures(
    report: VerificationReport, displays: Mapping[str, np.ndarray] | None = None
) -> list[tuple[Example, np.ndarray | None, np.ndarray | None]]:
    """Per example of the report: (example, its overlay at display size or None when the image cannot be
    found, its class reference map as a heat picture or None). With ``displays`` the pictures are those
    (an example whose image is not among them has none); without, each is read from the path it names."""
    from verification.errors import VerificationError
    from verification.io.images import load_image

    out = []
    for ex in report.examples:
        cam = np.asarray(ex.map, dtype=np.float32)
        picture = None
        if displays is not None:  # the caller's pictures (the dashboard's uploads): no file is read by name
            if ex.image in displays:
                picture = overlay(displays[ex.image], cam, max_side=EXAMPLE_SIDE)
        else:
            try:
                picture = overlay(load_image(ex.image).display, cam, max_side=EXAMPLE_SIDE)
            except (VerificationError, OSError):
                picture = None
        ref = report.references.get(ex.class_name) if ex.class_name else None
        ref_pic = heat(np.asarray(ref, np.float32), size=REFERENCE_SIDE) if ref is not None else None
        out.append((ex, picture, ref_pic))
    return out
