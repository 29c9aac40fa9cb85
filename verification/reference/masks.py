"""Annotation masks for reference building: PNG masks, pixel boxes, and a JSON file of boxes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from verification.errors import BundleError, InputTooLargeError, ShapeError
from verification.io.budget import DEFAULT_LIMITS, MiB, ResourceLimits
from verification.io.files import read_json_file

MAX_JSON_BYTES = 64 << 20  # a box file is text: 64 MiB is millions of boxes


def load_mask(path: str | Path) -> np.ndarray:
    """A PNG (or any image) annotation as a (H, W) float32 mask in {0, 1} (foreground = value > 0.5)."""
    from verification.io.images import load_image

    img = load_image(path)
    px = img.pixels if img.pixels.ndim == 2 else img.pixels.max(axis=2)
    return (px > 0.5).astype(np.float32)


def boxes_to_masks(
    boxes: Sequence[Sequence[Sequence[float]]],
    image_size: tuple[int, int],
    limits: ResourceLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """Per image, a list of (x0, y0, x1, y1) pixel boxes (x1, y1 exclusive) -> (N, H, W) float32 masks.
    The masks' size (N × H × W × 4 bytes) is checked against ``limits.max_decoded_bytes`` before any is
    allocated: a box file is untrusted and a few bytes of JSON can declare terabytes of masks."""
    h, w = (int(v) for v in image_size)
    if h < 1 or w < 1:
        raise ShapeError(f"image_size must be two positive whole numbers [H, W]; got {[h, w]}")
    need = len(boxes) * h * w * 4
    if need > limits.max_decoded_bytes:
        raise InputTooLargeError(
            f"{len(boxes)} box masks of {h}×{w} would take {need / MiB:,.0f} MiB, above the "
            f"{limits.max_decoded_bytes / MiB:,.0f} MiB limit for decoded annotations; give fewer "
            "images or a smaller image_size, or raise the limit if you trust the file"
        )
    out = np.zeros((len(boxes), h, w), dtype=np.float32)
    for i, image_boxes in enumerate(boxes):
        for box in image_boxes:
            if len(box) != 4:
                raise ShapeError(f"a box needs (x0, y0, x1, y1); got {list(box)}")
            x0, y0, x1, y1 = (round(float(v)) for v in box)
            out[i, max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)] = 1.0
    return out


def load_boxes_json(
    path: str | Path, limits: ResourceLimits = DEFAULT_LIMITS
) -> tuple[list[str], list[str], np.ndarray]:
    """Read box annotations: ``{"image_size": [H, W], "images": [{"image": name, "label": class,
    "boxes": [[x0, y0, x1, y1], ...]}, ...]}`` -> (image names, labels, masks (N, H, W)). The file is read
    bounded (:data:`MAX_JSON_BYTES`) and the masks bounded by ``limits`` before they are allocated."""
    doc = read_json_file(  # deep nesting, long numbers, bad UTF-8: BundleErrors naming the file
        Path(path),
        kind="box annotations file",
        advice="give the JSON file of boxes",
        max_bytes=MAX_JSON_BYTES,
        error=BundleError,
    )
    try:
        size = (int(doc["image_size"][0]), int(doc["image_size"][1]))
        entries = list(doc["images"])
        names = [str(e["image"]) for e in entries]
        labels = [str(e["label"]) for e in entries]
        boxes = [e.get("boxes", []) for e in entries]
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise BundleError(
            f"cannot read box annotations from '{path}': {exc}; expected "
            '{"image_size": [H, W], "images": [{"image": ..., "label": ..., "boxes": [[x0, y0, x1, y1]]}]}'
        ) from exc
    return names, labels, boxes_to_masks(boxes, size, limits)
