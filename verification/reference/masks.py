"""Annotation masks for reference building: PNG masks, pixel boxes, and a JSON file of boxes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from verification.errors import BundleError, ShapeError


def load_mask(path: str | Path) -> np.ndarray:
    """A PNG (or any image) annotation as a (H, W) float32 mask in {0, 1} (foreground = value > 0.5)."""
    from verification.io.images import load_image

    img = load_image(path)
    px = img.pixels if img.pixels.ndim == 2 else img.pixels.max(axis=2)
    return (px > 0.5).astype(np.float32)


def boxes_to_masks(boxes: Sequence[Sequence[Sequence[float]]], image_size: tuple[int, int]) -> np.ndarray:
    """Per image, a list of (x0, y0, x1, y1) pixel boxes (x1, y1 exclusive) -> (N, H, W) float32 masks."""
    h, w = image_size
    out = np.zeros((len(boxes), h, w), dtype=np.float32)
    for i, image_boxes in enumerate(boxes):
        for box in image_boxes:
            if len(box) != 4:
                raise ShapeError(f"a box needs (x0, y0, x1, y1); got {list(box)}")
            x0, y0, x1, y1 = (round(float(v)) for v in box)
            out[i, max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)] = 1.0
    return out


def load_boxes_json(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """Read box annotations: ``{"image_size": [H, W], "images": [{"image": name, "label": class,
    "boxes": [[x0, y0, x1, y1], ...]}, ...]}`` -> (image names, labels, masks (N, H, W))."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        size = (int(doc["image_size"][0]), int(doc["image_size"][1]))
        entries = list(doc["images"])
        names = [str(e["image"]) for e in entries]
        labels = [str(e["label"]) for e in entries]
        boxes = [e.get("boxes", []) for e in entries]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, IndexError, ValueError) as exc:
        raise BundleError(
            f"cannot read box annotations from '{path}': {exc}; expected "
            '{"image_size": [H, W], "images": [{"image": ..., "label": ..., "boxes": [[x0, y0, x1, y1]]}]}'
        ) from exc
    return names, labels, boxes_to_masks(boxes, size)
