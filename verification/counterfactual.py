"""Counterfactual image edits for evidence lines E3 and E4 (METHODS.md §3): pure functions on image arrays.

- :func:`neutralise_outside`: everything outside the anatomical region replaced by a large-window median of
  the outside's own pixels (the region's pixels do not count, no value outside the outside's range is made),
  so a small token, letter or marker outside the anatomy disappears, large structures keep their place, and
  the region stays byte-identical.
- :func:`neutralise_inside`: the region filled from its own pixels (their median by default, or their heavy
  blur), so any finding inside it is gone while the outside stays byte-identical.
- :func:`remove_finding`: the annotated finding (its mask dilated by a few pixels) inpainted from its
  surroundings (OpenCV Telea fast marching by default), so only pixels inside the dilated mask change.

Every function takes an (H, W), channels-first (C, H, W) or channels-last (H, W, C) array of any dtype (uint8,
uint16, float) and returns an array of the same shape and dtype; each output value lies within the range of
the input's own values (per channel), so nothing brighter or darker than the image is added. Masks are (H, W)
bool at the image's size. A region that is empty, or covers the whole image, leaves nothing to neutralise:
:class:`~verification.errors.ShapeError` says so rather than returning the image unchanged.

Fill parameters are fractions of the image's shorter side, so the same edit is made at any resolution.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from scipy import ndimage as ndi

from verification.errors import ShapeError

__all__ = [
    "InsideFill",
    "OutsideFill",
    "dilate_mask",
    "masked_blur",
    "neutralise_inside",
    "neutralise_outside",
    "remove_finding",
]

OutsideFill = Literal["median_filter", "blur", "median", "mean"]
InsideFill = Literal["median", "mean", "blur"]

# Defaults as fractions of the shorter side. A median window of 0.2 × 224 = 45 px (2025 px) erases any object
# of less than half its area (a 26 × 22 px marker tag, an 11 px token disc) and keeps edges of larger ones.
DEFAULT_OUTSIDE_WINDOW = 0.2
DEFAULT_OUTSIDE_SIGMA = 0.08
DEFAULT_INSIDE_SIGMA = 0.1
DEFAULT_FINDING_DILATION = (
    0.015  # 3 px at 224: covers the soft edge that drawing or imaging leaves around a mask
)
DEFAULT_INPAINT_RADIUS = 0.025
# Telea's cost grows with the square of its radius: on a 1955 × 1841 film 0.025 × side = 46 px took 38 s for a
# 100 px finding; the neighbourhood is capped at 12 px (the demo's 224 px images use 5.6 px).
MAX_INPAINT_RADIUS = 12.0


def _split_channels(image: np.ndarray) -> tuple[np.ndarray, str]:
    """(C, H, W) float64 view of the image and its layout ("hw", "chw" or "hwc")."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        return arr[None].astype(np.float64), "hw"
    if arr.ndim == 3:
        if arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            return arr.astype(np.float64), "chw"
        if arr.shape[-1] in (1, 3, 4):
            return np.moveaxis(arr, -1, 0).astype(np.float64), "hwc"
        if arr.shape[0] in (1, 3, 4):
            return arr.astype(np.float64), "chw"
    raise ShapeError(f"image has shape {arr.shape}; expected (H, W), (C, H, W) or (H, W, C) with C = 1 or 3")


def _merge(planes: np.ndarray, layout: str, like: np.ndarray) -> np.ndarray:
    if layout == "hw":
        out = planes[0]
    elif layout == "chw":
        out = planes
    else:
        out = np.moveaxis(planes, 0, -1)
    if like.dtype.kind in "iu":
        info = np.iinfo(like.dtype)
        return np.clip(np.round(out), info.min, info.max).astype(like.dtype)
    if like.dtype == np.bool_:
        return out >= 0.5
    return out.astype(like.dtype)


def _check(image: np.ndarray, mask: np.ndarray, what: str) -> tuple[np.ndarray, str, np.ndarray]:
    arr = np.asarray(image)
    if arr.dtype.kind not in "biuf":
        raise ShapeError(f"image samples of type {arr.dtype} are not numbers")
    planes, layout = _split_channels(arr)
    if not np.isfinite(planes).all():
        raise ShapeError("image contains NaN or infinite values; counterfactual edits need finite pixels")
    m = np.asarray(mask)
    if m.ndim == 3 and 1 in (m.shape[0], m.shape[-1]):
        m = m.reshape(m.shape[1:] if m.shape[0] == 1 else m.shape[:2])
    if m.shape != planes.shape[1:]:
        raise ShapeError(
            f"{what} has shape {m.shape} but the image is {planes.shape[1:]}; "
            "resize the mask to the image first"
        )
    return planes, layout, m.astype(bool)


def _sigma(fraction: float, shape: tuple[int, ...]) -> float:
    if fraction <= 0:
        raise ShapeError(f"the blur width must be positive, got {fraction}")
    return float(fraction * min(shape[-2:]))


# Above this shorter side, the wide filters run on a copy shrunk to it and their result is enlarged back
# (bilinear): a Gaussian of 147 px or a 369 px median on a 1955 × 1841 film would take minutes; the fills are
# smooth at that scale anyway. Images up to this size (the demo's 224 px, model inputs) are filtered exactly.
WORK_SIDE = 512


def _shrunk(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(
        cv2.resize(a.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA), np.float64
    )


def _enlarged(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(
        cv2.resize(a.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR), np.float64
    )


def _work_size(shape: tuple[int, ...]) -> tuple[tuple[int, int], float]:
    """Working (h, w) and scale (<= 1) for the wide filters of an image of ``shape``."""
    side = min(shape[-2:])
    if side <= WORK_SIDE:
        return (int(shape[-2]), int(shape[-1])), 1.0
    scale = WORK_SIDE / side
    return (max(round(shape[-2] * scale), 1), max(round(shape[-1] * scale), 1)), scale


def masked_blur(plane: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised convolution: ``G * (x · valid) / G * valid`` with a Gaussian of ``sigma`` pixels, the heavy
    blur of the valid pixels alone (invalid pixels never contribute). Where no valid pixel is within reach of
    the kernel (weight < 1e-6) the value is the valid pixels' mean. Images with a shorter side above
    :data:`WORK_SIDE` are filtered on a shrunk copy. (H, W) float64."""
    v = valid.astype(np.float64)
    size, scale = _work_size(plane.shape)
    if scale < 1.0:
        num = _enlarged(
            ndi.gaussian_filter(_shrunk(plane * v, size), sigma * scale, mode="nearest"), plane.shape
        )
        den = _enlarged(ndi.gaussian_filter(_shrunk(v, size), sigma * scale, mode="nearest"), plane.shape)
    else:
        num = ndi.gaussian_filter(plane * v, sigma, mode="nearest", truncate=4.0)
        den = ndi.gaussian_filter(v, sigma, mode="nearest", truncate=4.0)
    mean = float(plane[valid].mean())
    out = np.where(den > 1e-6, num / np.maximum(den, 1e-12), mean)
    lo, hi = float(plane[valid].min()), float(plane[valid].max())
    return np.clip(out, lo, hi)


def _fill(plane: np.ndarray, source: np.ndarray, how: str, sigma: float) -> np.ndarray:
    if how == "median":
        return np.full(plane.shape, float(np.median(plane[source])))
    if how == "mean":
        return np.full(plane.shape, float(plane[source].mean()))
    if how == "blur":
        return masked_blur(plane, source, sigma)
    raise ShapeError(f"unknown fill {how!r}; use 'median', 'mean' or 'blur'")


def _median_filter_outside(plane: np.ndarray, roi: np.ndarray, window: float, sigma: float) -> np.ndarray:
    """Median filter of the outside of ``roi`` (see :func:`neutralise_outside`); (H, W) float64."""
    if window <= 0:
        raise ShapeError(f"the median window must be positive, got {window}")
    outside = ~roi
    pre = plane.copy()
    pre[roi] = masked_blur(plane, outside, sigma)[roi]
    lo, hi = float(plane[outside].min()), float(plane[outside].max())
    if hi <= lo:
        return np.full(plane.shape, lo)
    size, scale = _work_size(plane.shape)
    if scale < 1.0:
        pre = _shrunk(pre, size)
    levels = np.round(np.clip((pre - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)
    k = min(max(round(window * min(size)) | 1, 3), 255)  # OpenCV's 8-bit median takes windows up to 255
    med = cv2.medianBlur(levels, k).astype(np.float64)
    if scale < 1.0:
        med = _enlarged(med, plane.shape)
    return np.clip(med / 255.0 * (hi - lo) + lo, lo, hi)


def _nonempty(m: np.ndarray, what: str) -> None:
    if not m.any():
        raise ShapeError(f"{what}: the anatomical region is empty, there is no anatomy to keep or remove")
    if m.all():
        raise ShapeError(f"{what}: the anatomical region covers the whole image, nothing lies outside it")


def neutralise_outside(
    image: np.ndarray,
    roi: np.ndarray,
    *,
    fill: OutsideFill = "median_filter",
    window: float = DEFAULT_OUTSIDE_WINDOW,
    sigma: float = DEFAULT_OUTSIDE_SIGMA,
) -> np.ndarray:
    """The image with every pixel outside ``roi`` replaced from the outside's own pixels. Pixels inside
    ``roi`` are returned unchanged, byte for byte; the result is within the outside's own range of values.

    - ``"median_filter"`` (default): a median filter of ``window`` × shorter side (odd, in pixels) over the
      outside, the region first filled with :func:`masked_blur` of the outside so that its pixels do not
      count; computed on the outside's range quantised to 256 levels (OpenCV's large-window median is
      8-bit). Small objects (tokens, letters, tags) vanish; the body outline, diaphragm and film edge keep
      their place.
    - ``"blur"``: a normalised Gaussian blur of width ``sigma`` × shorter side over the outside pixels only
      (:func:`masked_blur`);
    - ``"median"`` / ``"mean"``: the outside's constant median or mean.

    Measured by ``python -m bench.counterfactual`` with the automatic region (flip rate of the prediction when
    the outside is neutralised, normal / nodule / effusion images): the second healthy demo model
    (``healthy_seed``) flips 5 % / 0 % / 0 % of test images with the median filter, 30 % / 0 % / 0 % with the
    blur (sigma 0.08), 35 % / 0 % / 5 % with sigma 0.15; the constant median flips the sound model on 50 % of
    normal images. The shortcut models still flip: marker letter 100 % / 100 % of nodule / effusion marker
    images, token disc 88 % / 88 % / 38 % (its effusion class is also its answer without a token)."""
    planes, layout, m = _check(image, roi, "the anatomical region")
    _nonempty(m, "neutralise_outside")
    s = _sigma(sigma, planes.shape)
    out = planes.copy()
    for c in range(planes.shape[0]):
        if fill == "median_filter":
            out[c][~m] = _median_filter_outside(planes[c], m, window, s)[~m]
        else:
            out[c][~m] = _fill(planes[c], ~m, fill, s)[~m]
    result = _merge(out, layout, np.asarray(image))
    return _keep_exact(result, np.asarray(image), m, layout)


def neutralise_inside(
    image: np.ndarray,
    roi: np.ndarray,
    *,
    fill: InsideFill = "median",
    sigma: float = DEFAULT_INSIDE_SIGMA,
) -> np.ndarray:
    """The image with every pixel inside ``roi`` replaced from the region's own pixels: ``"median"`` (default)
    or ``"mean"`` as a constant, ``"blur"`` a normalised Gaussian blur of width ``sigma`` × shorter side over
    the region only. Pixels outside ``roi`` are returned unchanged, byte for byte.

    Measured by ``python -m bench.counterfactual`` (automatic region, median fill): the three healthy demo
    models keep 0-5 % of their nodule / effusion predictions on the test split (the lesion-free twins: 0 %);
    shortcut models whose cue lies outside the lungs keep 100 % on images with their cue. A normal image
    stays normal for every model (a blank lung reads normal), so survival says nothing for that class."""
    planes, layout, m = _check(image, roi, "the anatomical region")
    _nonempty(m, "neutralise_inside")
    s = _sigma(sigma, planes.shape)
    out = planes.copy()
    for c in range(planes.shape[0]):
        out[c][m] = _fill(planes[c], m, fill, s)[m]
    result = _merge(out, layout, np.asarray(image))
    return _keep_exact(result, np.asarray(image), ~m, layout)


def _keep_exact(result: np.ndarray, image: np.ndarray, keep: np.ndarray, layout: str) -> np.ndarray:
    """Copy the kept pixels from the input itself, so they are identical whatever the dtype round trip did."""
    if layout == "hw":
        result[keep] = image[keep]
    elif layout == "chw":
        result[:, keep] = image[:, keep]
    else:
        result[keep, :] = image[keep, :]
    return result


def dilate_mask(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """(H, W) bool mask dilated by a disc of ``radius_px`` pixels (0: unchanged)."""
    m = np.asarray(mask, bool)
    if radius_px <= 0:
        return m.copy()
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))
    return cv2.dilate(m.astype(np.uint8), disc) > 0


def _inpaint(unit: np.ndarray, unknown: np.ndarray, radius: float, flag: int) -> np.ndarray:
    return np.asarray(cv2.inpaint(unit, unknown.astype(np.uint8), radius, flag), dtype=np.float64)


def _inpaint_from(
    unit: np.ndarray, grown: np.ndarray, sources: np.ndarray, radius: float, flag: int
) -> np.ndarray:
    """Inpaint ``grown`` using only ``sources`` as known pixels: everything else in a window around ``grown``
    is marked unknown too, so the fast march starts from the sources alone. (H, W) float64, valid on
    ``grown``."""
    ys, xs = np.nonzero(grown)
    h, w = grown.shape
    pad = max(int(ys.max() - ys.min()), int(xs.max() - xs.min()), int(4 * radius))
    y0, y1 = max(int(ys.min()) - pad, 0), min(int(ys.max()) + pad + 1, h)
    x0, x1 = max(int(xs.min()) - pad, 0), min(int(xs.max()) + pad + 1, w)
    if not sources[y0:y1, x0:x1].any():  # no source near the finding: march from the nearest, wherever
        y0, y1, x0, x1 = 0, h, 0, w
    out = np.zeros((h, w))
    window = (slice(y0, y1), slice(x0, x1))
    out[window] = _inpaint(np.ascontiguousarray(unit[window]), ~sources[window], radius, flag)
    return out


def remove_finding(
    image: np.ndarray,
    lesion_mask: np.ndarray,
    *,
    sources: np.ndarray | None = None,
    dilation: float = DEFAULT_FINDING_DILATION,
    radius: float = DEFAULT_INPAINT_RADIUS,
    method: Literal["telea", "ns"] = "telea",
) -> np.ndarray:
    """The image with the annotated finding inpainted from its surroundings: ``lesion_mask`` dilated by
    ``dilation`` × shorter side (at least one pixel), then OpenCV's inpainting (Telea's fast marching, or
    Navier-Stokes) with neighbourhood ``radius`` × shorter side. Only pixels in the dilated mask change; the
    result stays within the image's own range.

    ``sources`` (optional, (H, W) bool): the only pixels the fill is drawn from, e.g. the lung mask or the
    automatic method's aerated lung fields (:attr:`verification.anatomy.AnatomyROI.fields`), so an effusion at
    a lung base is filled from the lung above it and not from the dense tissue below the diaphragm. Measured
    by ``python -m bench.counterfactual`` against the demo's lesion-free twins (mean absolute error inside the
    dilated mask, grey levels): effusions 47.5 without sources, 18.6 from the true lung mask, 18.5 from the
    automatic lung fields (the lesion itself: 53.5); nodules 8.6 / 8.0 / 8.5 (the lesion: 39.0). Sources with
    no pixel outside the dilated mask are ignored."""
    planes, layout, m = _check(image, lesion_mask, "the finding's mask")
    if not m.any():
        raise ShapeError(
            "remove_finding: the finding's mask is empty; there is no annotated finding to remove"
        )
    src = None if sources is None else _check(image, sources, "the sources mask")[2]
    side = min(planes.shape[1:])
    grown = dilate_mask(m, max(round(dilation * side), 1))
    if grown.all():
        raise ShapeError(
            "remove_finding: the finding covers the whole image; nothing is left to inpaint from"
        )
    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    r = min(max(float(radius * side), 1.0), MAX_INPAINT_RADIUS)
    known = np.zeros_like(grown) if src is None else src & ~grown
    out = planes.copy()
    for c in range(planes.shape[0]):
        plane = planes[c]
        lo, hi = float(plane.min()), float(plane.max())
        # OpenCV's float inpainting assumes grey levels on a 0-255 scale: on [0, 1] values Telea's fast
        # marching overshoots to [-1, 2] (measured, OpenCV 5.0). Work on the image's range mapped to 0-255.
        scale = 255.0 / (hi - lo) if hi > lo else 1.0
        unit = ((plane - lo) * scale).astype(np.float32)
        filled = _inpaint(unit, grown, r, flag)
        if known.any():
            filled[grown] = _inpaint_from(unit, grown, known, r, flag)[grown]
        out[c][grown] = np.clip(filled[grown] / scale + lo, lo, hi)
    result = _merge(out, layout, np.asarray(image))
    return _keep_exact(result, np.asarray(image), ~grown, layout)
