"""Pictures of maps: the one renderer of heat maps and overlays, used by the command line, the HTML report and
the dashboard alike.

A map is (h, w) in [0, 1]; a display image is the uint8 (H, W) or (H, W, 3) picture of a ``LoadedImage``.
The map is resized (bilinear) to the picture, coloured through an OpenCV colour map and blended:
``out = (1 − opacity) · image + opacity · colour``, rounded to uint8. Pictures are shrunk (area interpolation)
to at most ``max_side`` pixels per side first, so a 3000-pixel film never travels to a browser or into a
report at full size.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "COLORMAPS",
    "colorize",
    "fit",
    "heat",
    "mask_overlay",
    "outline",
    "overlay",
    "png_bytes",
    "to_rgb",
]

COLORMAPS: dict[str, int] = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "hot": cv2.COLORMAP_HOT,
}
DEFAULT_OPACITY = 0.45


def to_rgb(display: np.ndarray) -> np.ndarray:
    """A uint8 (H, W) or (H, W, 3) picture as (H, W, 3) RGB; anything else is a ``ValueError``."""
    image = np.asarray(display)
    if image.dtype != np.uint8:
        raise ValueError(f"display image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"display image must be (H, W) or (H, W, 3), got {image.shape}")
    return image


def fit(display: np.ndarray, max_side: int = 1024) -> np.ndarray:
    """The display picture as RGB uint8, shrunk (area interpolation) so its longest side is ≤ ``max_side``."""
    image = to_rgb(display)
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def colorize(map01: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """(H, W) in [0, 1] → (H, W, 3) RGB uint8 through one of :data:`COLORMAPS`; NaN counts as 0."""
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colour map {colormap!r}; one of {', '.join(COLORMAPS)}")
    scaled = np.clip(np.nan_to_num(np.asarray(map01, dtype=np.float32), nan=0.0), 0.0, 1.0)
    bgr = cv2.applyColorMap(np.round(scaled * 255.0).astype(np.uint8), COLORMAPS[colormap])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(
    display: np.ndarray,
    map01: np.ndarray,
    *,
    opacity: float = DEFAULT_OPACITY,
    colormap: str = "jet",
    max_side: int = 1024,
) -> np.ndarray:
    """The map blended over the display picture (fitted to ``max_side``); ``opacity`` 0 shows only the image,
    1 only the colour. uint8 RGB."""
    base = fit(display, max_side)
    h, w = base.shape[:2]
    resized = cv2.resize(np.asarray(map01, dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = colorize(resized, colormap).astype(np.float32)
    blended = (1.0 - opacity) * base.astype(np.float32) + opacity * colour
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def heat(map01: np.ndarray, *, size: int = 256, colormap: str = "jet") -> np.ndarray:
    """The map alone as a ``size`` × ``size`` colour picture (bilinear), for when no image is at hand."""
    resized = cv2.resize(np.asarray(map01, dtype=np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return colorize(resized, colormap)


def outline(
    picture: np.ndarray, mask: np.ndarray, *, color: tuple[int, int, int] = (255, 255, 255)
) -> np.ndarray:
    """``picture`` (RGB, as drawn) with the contour of a binary mask (any size) traced on it."""
    h, w = picture.shape[:2]
    m = cv2.resize(np.asarray(mask).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.ascontiguousarray(picture.copy())
    cv2.drawContours(out, contours, -1, color, max(1, w // 200), lineType=cv2.LINE_AA)
    return out


def mask_overlay(
    display: np.ndarray,
    mask: np.ndarray,
    *,
    color: tuple[int, int, int] = (0, 200, 255),
    max_side: int = 1024,
) -> np.ndarray:
    """The display picture with a binary mask (any size) tinted 40 % towards ``color`` and outlined."""
    base = fit(display, max_side)
    h, w = base.shape[:2]
    m = cv2.resize(np.asarray(mask).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    out = base.astype(np.float32)
    out[m] = 0.6 * out[m] + 0.4 * np.array(color, np.float32)
    return outline(np.clip(np.round(out), 0, 255).astype(np.uint8), m, color=color)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode a uint8 (H, W) or (H, W, 3) array as PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()
