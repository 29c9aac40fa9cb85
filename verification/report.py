"""Pictures and the self-contained HTML report.

``overlay_png`` draws a map over an image (used by ``python -m verification cam``). ``render_report`` turns a
verification result into one HTML file that works offline: PNG images embedded as base64, plotly's JavaScript
inlined, the verdict with the numbers behind it, the per-image table and the provenance.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

__all__ = ["overlay_png", "overlay_rgb", "png_bytes"]


def overlay_rgb(
    display: np.ndarray, cam: np.ndarray, *, alpha: float = 0.45, max_side: int = 1024
) -> np.ndarray:
    """Blend a [0, 1] map (h, w) as a JET heat map over ``display`` (uint8 (H, W) or (H, W, 3)); uint8 RGB.

    The map is resized (bilinear) to the image, which is first shrunk so its longest side is ≤ ``max_side``.
    """
    image = np.asarray(display)
    if image.dtype != np.uint8:
        raise ValueError(f"display image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"display image must be (H, W) or (H, W, 3), got {image.shape}")
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    heat = cv2.resize(
        np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0), (w, h), interpolation=cv2.INTER_LINEAR
    )
    colour = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colour.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode a uint8 (H, W) or (H, W, 3) array as PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def overlay_png(display: np.ndarray, cam: np.ndarray, *, alpha: float = 0.45) -> bytes:
    """PNG bytes of :func:`overlay_rgb`."""
    return png_bytes(overlay_rgb(display, cam, alpha=alpha))
