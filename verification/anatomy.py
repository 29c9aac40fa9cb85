"""The anatomical region of interest of an image: where the findings can be, and everything else is "outside".

Evidence line E3 (METHODS.md §3) measures how much a model relies on what lies outside the anatomy, and
its counterfactuals (:mod:`verification.counterfactual`) neutralise the outside or the inside of this region.
One region per image, as a boolean (H, W) mask at the image's own size, from one of three sources, always
named in the record:

- ``"provided"``: a mask the user supplies (an array, or a file in a folder named after the image);
- ``"model"``: a segmentation model whose output channel is the anatomy (:func:`roi_from_model`);
- ``"automatic_lungs"``: the lung fields of a chest radiograph found with no model and no annotation
  (:func:`automatic_roi`); when they cannot be found, ``"automatic_body"``: the body (everything that is not
  the air around the patient); when neither can, ``"failed"`` with the reason — never a silent whole-image
  mask.

The automatic lung method (parameters in :class:`LungParams`, all explicit):

1. Grey image reduced to ``work_size`` pixels on its long side, smoothed (Gaussian, ``smooth`` × side).
2. Air: pixels below a two-stage Otsu threshold (Otsu of the pixels below the image's Otsu threshold) that
   touch the image border. Body: the largest connected part of the rest, holes filled.
3. Lungs: pixels of the eroded body below the Otsu threshold of the body, opened (radius ``open_radius`` ×
   side), the two largest connected parts of at least ``min_lung_area`` of the image that lie side by side
   (one part spanning both sides is split at its narrowest column).
4. Each lung's convex hull. A dense effusion at a lung base is BRIGHT, so a darkness threshold misses it and
   shortens that lung from below. Three repairs put the base back: a lung whose base lies above the other's
   is extended down to the other's base (``match_base``); each side takes the rows of the contralateral lung,
   mirrored about the midline between the lungs, that lie below its own base (``mirror="base"``); each hull is
   extended down by ``base_extension`` × lung height. Then the region is cut to the body and dilated by
   ``margin`` × side. ``fields`` keeps the dark lung fields themselves (the sources for inpainting a finding).

Measured with ``python -m bench.anatomy`` (defaults; demo images regenerated with
``assets.make_demo.make_case``, seed 1234, 60 each of test, reference and shortcut; their true lung masks
include the fluid of an effusion):

============  ====  ==========  =========  ================  =======================
class         n     IoU mean    IoU min    lungs inside      lesion inside mean/min
============  ====  ==========  =========  ================  =======================
normal        60    0.675       0.595      99.9 %            -
nodule        60    0.676       0.575      100 %             100 % / 100 %
effusion      60    0.706       0.613      99.3 %            95.9 % / 80.6 %
============  ====  ==========  =========  ================  =======================

A tighter region (``base_extension=0.05, margin=0.01``) reaches IoU 0.74 but effusion coverage 93 % / 62 %; a
looser one (0.25, the mirror of the whole contralateral lung) 97 % / 86 % at IoU 0.55 and takes in
class-coded tokens placed a few pixels below the diaphragm (47 % of their pixels; 7 % with the defaults). On
every committed chest split (incl. the cue splits and the shifts exposure, noise, blur) the lungs are found in
every image; on inverted films in 9 of 15 (IoU 0.45), and "lungs" are found in 17 of 40 out-of-distribution
images: the region does not judge the input, evidence line E0 does. pydicom-data's real PA chest CR
``RG1_UNCR.dcm`` (1955 × 1841): lungs found, region 59 % of the film, ~0.1-0.2 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from scipy import ndimage as ndi

from verification.errors import ImageLoadError, ShapeError
from verification.io.records import LoadedImage, LoadedModel

__all__ = [
    "MASK_SUFFIXES",
    "AnatomyROI",
    "LungParams",
    "RoiSource",
    "anatomy_roi",
    "as_gray",
    "automatic_roi",
    "body_region",
    "find_mask_file",
    "lung_region",
    "read_mask_file",
    "roi_from_folder",
    "roi_from_mask",
    "roi_from_model",
]

RoiSource = Literal["provided", "model", "automatic_lungs", "automatic_body", "failed"]

# File names tried, in order, for the mask of image ``<stem>.<ext>`` in a folder: ``<stem><suffix>.<ext>``.
MASK_SUFFIXES: tuple[str, ...] = ("_lung", "_lungs", "_anatomy", "_roi", "_mask", "")
_MASK_EXTS: tuple[str, ...] = (".png", ".tif", ".tiff", ".npy")


@dataclass(frozen=True)
class AnatomyROI:
    """One image's region of interest. ``mask`` is (H, W) bool at the image's size, None when ``source`` is
    ``"failed"``; ``method`` says how it was made, ``reason`` why a fallback or a failure happened;
    ``numbers`` holds what the method measured (area fractions, thresholds) for reports. ``fields`` are the
    pixels known to be aerated lung (the automatic method's dark fields before hull, mirror and margin; the
    mask itself for provided and model masks; None for the body fallback): the sources from which
    :func:`verification.counterfactual.remove_finding` may fill a finding."""

    mask: np.ndarray | None
    source: RoiSource
    method: str
    reason: str = ""
    numbers: dict[str, float] = field(default_factory=dict)
    fields: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        """True when there is a region to use."""
        return self.mask is not None and self.source != "failed"

    @property
    def area_fraction(self) -> float:
        """Share of the image inside the region (0 when failed)."""
        return float(self.mask.mean()) if self.mask is not None else 0.0


@dataclass(frozen=True)
class LungParams:
    """Parameters of the automatic lung-field method; lengths are fractions of the working image's side."""

    work_size: int = 256  # long side of the working copy, pixels
    smooth: float = 0.006  # Gaussian sigma before thresholding (1.5 px at 256)
    open_radius: float = 0.012  # opening radius that cuts thin bridges between lungs and other dark parts
    min_lung_area: float = 0.02  # a lung covers at least this share of the image
    max_lungs_body: float = 0.75  # both lungs cover at most this share of the body
    min_side_gap: float = 0.12  # the lungs' centroids are at least this far apart horizontally
    # add the contralateral lung mirrored about the midline: "full" all of it, "base" only its rows below this
    # lung's own base (restores a base an effusion hid without widening the lung laterally), "off" none
    mirror: Literal["off", "base", "full"] = "base"
    base_extension: float = 0.1  # extend each lung's hull down by this share of the lungs' height ...
    match_base: bool = (
        True  # ... and a lung whose base is higher than the other's down to the other's base first
    )
    margin: float = 0.015  # final dilation
    min_body_area: float = 0.15  # the body fallback needs at least this share of the image ...
    max_body_area: float = 0.97  # ... and at most this (a body that fills the image separates nothing)


# ----------------------------------------------------------------------------------------------------
# Input


def as_gray(image: np.ndarray | LoadedImage | torch.Tensor) -> np.ndarray:
    """(H, W) float32 from an (H, W), channels-first (C, H, W) or channels-last (H, W, C) image, C in {1, 3},
    or a LoadedImage; channels are averaged. uint8/uint16 are scaled to [0, 1]; other values are kept."""
    if isinstance(image, LoadedImage):
        image = image.pixels
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3:
        if arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.mean(axis=0)
        elif arr.shape[-1] in (1, 3):
            arr = arr.mean(axis=-1) if arr.dtype.kind == "f" else arr.astype(np.float32).mean(axis=-1)
        else:
            raise ShapeError(
                f"image has shape {arr.shape}; expected (H, W), (C, H, W) or (H, W, C) with C = 1 or 3"
            )
    elif arr.ndim != 2:
        raise ShapeError(f"image has {arr.ndim} dimensions ({arr.shape}); expected a 2-D grey image")
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    elif arr.dtype.kind in "biuf":
        out = arr.astype(np.float32)
    else:
        raise ShapeError(f"image samples of type {arr.dtype} are not numbers")
    if min(out.shape) < 8:
        raise ShapeError(f"image of {out.shape[1]}×{out.shape[0]} pixels is too small for an anatomy mask")
    if not np.isfinite(out).all():
        raise ShapeError("image contains NaN or infinite values; the anatomy cannot be found")
    return out


def _fit_mask(mask: np.ndarray, shape: tuple[int, int], what: str) -> np.ndarray:
    """A 2-D mask brought to ``shape`` (nearest neighbour); refuses another aspect ratio (a wrong file)."""
    m = np.asarray(mask)
    if m.ndim == 3 and 1 in (m.shape[0], m.shape[-1]):
        m = m.reshape(m.shape[1:] if m.shape[0] == 1 else m.shape[:2])
    if m.ndim != 2:
        raise ShapeError(f"{what} has shape {m.shape}; expected a 2-D (H, W) mask")
    m = m > (0.5 if m.dtype.kind == "f" else 0)
    if m.shape == shape:
        return m
    ratio_m, ratio_i = m.shape[1] / m.shape[0], shape[1] / shape[0]
    if abs(ratio_m / ratio_i - 1.0) > 0.05:
        raise ShapeError(
            f"{what} is {m.shape[1]}×{m.shape[0]} but the image is {shape[1]}×{shape[0]}: a different aspect "
            "ratio, so it belongs to another image; supply the mask made for this image"
        )
    return cv2.resize(m.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


# ----------------------------------------------------------------------------------------------------
# Provided masks


def roi_from_mask(mask: np.ndarray, shape: tuple[int, int], *, name: str = "provided mask") -> AnatomyROI:
    """A provided (h, w) mask (bool, 0/1, 0/255 or probabilities > 0.5) as the region of an image of ``shape``
    (H, W); resized by nearest neighbour when only the scale differs. An empty mask is a failure."""
    m = _fit_mask(mask, (int(shape[0]), int(shape[1])), name)
    if not m.any():
        return AnatomyROI(None, "failed", name, reason=f"{name} is empty (no pixel inside the anatomy)")
    return AnatomyROI(m, "provided", name, numbers={"area_fraction": float(m.mean())}, fields=m)


def find_mask_file(
    folder: str | Path, image_name: str, suffixes: Sequence[str] = MASK_SUFFIXES
) -> Path | None:
    """The mask of ``image_name`` (a file name or a path) in ``folder``: ``<stem><suffix><ext>`` for the first
    suffix in ``suffixes`` and an extension that exists. A file with the image's own name counts only in a
    mask folder that is not the image's (``image_name`` given with its folder, or a bare name)."""
    folder = Path(folder)
    name = Path(image_name)
    own = (name.parent if str(name.parent) not in ("", ".") else None, name.name)
    for suffix in suffixes:
        for ext in _MASK_EXTS:
            path = folder / f"{name.stem}{suffix}{ext}"
            if not path.is_file():
                continue
            same_file = path.name == own[1] and own[0] is not None and own[0].resolve() == folder.resolve()
            if not same_file:
                return path
    return None


MAX_MASK_NPY_BYTES = 256 << 20
"""The largest ``.npy`` mask read: a float32 mask of the largest image ``load_image`` accepts (64 Mpx), a
float64 one of 32 Mpx. Reading one holds the file and its array at once (at most twice this)."""


def read_mask_file(path: Path) -> np.ndarray:
    """A mask file's values as found by :func:`find_mask_file`: a ``.npy`` array or an image's pixels (the
    mean over colour channels). A ``.npy`` is read by its header first (``verification.io.files.read_npy``:
    never unpickled, an object array refused, at most :data:`MAX_MASK_NPY_BYTES`, a shape that must match
    the file's size); any failure is an ImageLoadError (InputTooLargeError for the size) naming the file."""
    if path.suffix == ".npy":
        from verification.io.files import read_npy, read_regular_file

        data = read_regular_file(
            path, kind="mask file", advice="give a .npy or image file", max_bytes=MAX_MASK_NPY_BYTES + 4096,
            too_large=lambda n: f"mask file '{path}' is {n:,} bytes; a .npy mask is at most "
            f"{MAX_MASK_NPY_BYTES:,} bytes of data",
            error=ImageLoadError,
        )  # fmt: skip
        arr = read_npy(data, f"mask file '{path}'", max_bytes=MAX_MASK_NPY_BYTES, error=ImageLoadError)
        if arr.ndim not in (2, 3) or arr.dtype.kind not in "biuf":
            raise ImageLoadError(
                f"mask file '{path}' holds a {arr.dtype} array of shape {arr.shape}; a mask is a 2-D array "
                "of numbers or booleans"
            )
        return arr
    from verification.io.images import load_image

    loaded = load_image(path)
    px = loaded.pixels
    return px if px.ndim == 2 else px.mean(axis=-1)


def roi_from_folder(
    folder: str | Path, image_name: str, shape: tuple[int, int], suffixes: Sequence[str] = MASK_SUFFIXES
) -> AnatomyROI:
    """The region from the mask file of ``image_name`` in ``folder`` (see :func:`find_mask_file`); a failed
    record naming the file patterns tried when there is none."""
    path = find_mask_file(folder, image_name, suffixes)
    if path is None:
        stem = Path(image_name).stem
        tried = ", ".join(f"{stem}{s}.png" for s in suffixes[:3])
        return AnatomyROI(
            None, "failed", f"mask folder '{folder}'", reason=f"no mask file ({tried}, ...) found"
        )
    return roi_from_mask(read_mask_file(path), shape, name=f"provided mask '{path.name}'")


# ----------------------------------------------------------------------------------------------------
# Segmentation model


def roi_from_model(
    image: np.ndarray | LoadedImage,
    model: LoadedModel,
    channel: int | str,
    *,
    threshold: float = 0.5,
) -> AnatomyROI:
    """The region where a segmentation model's ``channel`` (index or class name) has probability above
    ``threshold``: softmax over the channels (sigmoid when the model has one channel), resized bilinearly to
    the image. The model sees the image as :func:`verification.io.to_tensor` prepares it."""
    from verification.errors import ModelForwardError
    from verification.io.images import to_tensor

    if isinstance(channel, str):
        if channel not in model.class_names:
            raise ShapeError(
                f"segmentation model '{model.name}' has no output named '{channel}'; its outputs are "
                f"{', '.join(model.class_names)}"
            )
        index = model.class_names.index(channel)
    else:
        index = int(channel)
    if not 0 <= index < max(model.num_classes, 1):
        raise ShapeError(f"channel {index} is out of range for a model with {model.num_classes} outputs")
    if isinstance(image, LoadedImage):
        loaded = image
    else:
        gray = as_gray(image)
        loaded = LoadedImage(
            pixels=np.clip(gray, 0.0, 1.0),
            display=np.round(np.clip(gray, 0.0, 1.0) * 255).astype(np.uint8),
            name="image",
            source_format="array",
            content_hash="",
        )
    height, width = loaded.size
    x = to_tensor(loaded, model)
    try:
        from verification.cam.chunking import run_chunked

        with torch.no_grad():
            out = run_chunked(model, x, model.module)  # pads to a fixed batch size
    except Exception as exc:  # the user's model: report, do not crash
        raise ModelForwardError(f"segmentation model '{model.name}' failed on the image: {exc}") from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        raise ShapeError(
            f"segmentation model '{model.name}' returned {getattr(out, 'shape', type(out))}; expected "
            "(1, C, h, w) maps"
        )
    prob = (
        torch.sigmoid(out[:, :1])
        if out.shape[1] == 1
        else torch.softmax(out.float(), dim=1)[:, index : index + 1]
    )
    prob = torch.nn.functional.interpolate(
        prob.float(), size=(height, width), mode="bilinear", align_corners=False
    )
    m = prob[0, 0].numpy() > threshold
    method = f"segmentation model '{model.name}', output '{model.class_name(index)}' > {threshold:g}"
    if not m.any():
        return AnatomyROI(
            None, "failed", method, reason="the segmentation model found no anatomy in the image"
        )
    return AnatomyROI(m, "model", method, numbers={"area_fraction": float(m.mean())}, fields=m)


# ----------------------------------------------------------------------------------------------------
# Automatic


def _disk(radius: int) -> np.ndarray:
    r = max(int(radius), 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of ``values`` (256 bins over their range), as skimage.filters.threshold_otsu."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=256, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    hist = hist.astype(np.float64)
    w0 = np.cumsum(hist)
    w1 = np.cumsum(hist[::-1])[::-1]
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1e-12)
    m1 = (np.cumsum((hist * centres)[::-1]) / np.maximum(np.cumsum(hist[::-1]), 1e-12))[::-1]
    between = w0[:-1] * w1[1:] * (m0[:-1] - m1[1:]) ** 2
    return float(centres[:-1][int(np.argmax(between))])


def _border_connected(mask: np.ndarray) -> np.ndarray:
    labels, _ = ndi.label(mask)
    ids = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, ids[ids > 0])


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, count = ndi.label(mask)
    if count == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _hull(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    out = np.zeros(mask.shape, np.uint8)
    if ys.size == 0:
        return out > 0
    pts = np.stack([xs, ys], axis=1).astype(np.int32)
    cv2.fillConvexPoly(out, cv2.convexHull(pts), 1)
    return out > 0


def _mirror(mask: np.ndarray, mid: float) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    xs2 = np.round(2.0 * mid - xs).astype(int)
    keep = (xs2 >= 0) & (xs2 < mask.shape[1])
    out = np.zeros_like(mask)
    out[ys[keep], xs2[keep]] = True
    return out


def _shift_down(mask: np.ndarray, k: int) -> np.ndarray:
    if k <= 0:
        return mask.copy()
    out = np.zeros_like(mask)
    out[k:] = mask[: mask.shape[0] - k]
    return out


@dataclass(frozen=True)
class _Parts:
    body: np.ndarray
    lungs: tuple[np.ndarray, ...]
    reason: str
    numbers: dict[str, float]


def _split_joined(comp: np.ndarray, min_area: int) -> tuple[np.ndarray, ...]:
    """One dark part spanning both lungs (joined across the mediastinum): cut it at its narrowest column in
    the middle 40 % of its width."""
    xs = np.nonzero(comp)[1]
    x0, x1 = int(xs.min()), int(xs.max())
    a, b = x0 + int(0.3 * (x1 - x0)), x0 + int(0.7 * (x1 - x0))
    if b <= a:
        return ()
    counts = comp[:, a : b + 1].sum(axis=0)
    cut = a + int(np.argmin(counts))
    left, right = comp.copy(), comp.copy()
    left[:, cut:] = False
    right[:, : cut + 1] = False
    left, right = _largest(left), _largest(right)
    if left.sum() < min_area or right.sum() < min_area:
        return ()
    return (left, right)


def _find_parts(gray: np.ndarray, p: LungParams) -> _Parts:
    """Body and lungs of a working-size grey image (see the module docstring)."""
    h, w = gray.shape
    side = min(h, w)
    numbers: dict[str, float] = {}
    s = ndi.gaussian_filter(gray, max(p.smooth * side, 0.5))
    if float(s.max() - s.min()) < 1e-6:
        return _Parts(np.zeros_like(s, bool), (), "the image is flat (one grey value)", numbers)
    t1 = _otsu(s.ravel())
    below = s[s < t1]
    t_air = _otsu(below) if below.size > 16 else t1
    air = _border_connected(s < t_air)
    body = ndi.binary_fill_holes(_largest(~air))
    numbers["body_fraction"] = float(body.mean())
    radius = max(round(p.open_radius * side), 1)
    inner = cv2.erode(body.astype(np.uint8), _disk(radius)) > 0
    if inner.sum() < 64:
        return _Parts(body, (), "no body found (the image is mostly air or background)", numbers)
    t2 = _otsu(s[inner])
    numbers["lung_threshold"] = t2
    dark = cv2.morphologyEx((inner & (s < t2)).astype(np.uint8), cv2.MORPH_OPEN, _disk(radius)) > 0
    labels, _count = ndi.label(dark)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    min_area = int(p.min_lung_area * h * w)
    order = [int(i) for i in np.argsort(sizes)[::-1] if sizes[i] >= min_area]
    comps = [ndi.binary_fill_holes(labels == i) for i in order[:2]]
    gap = p.min_side_gap * w

    def side_by_side(a: np.ndarray, b: np.ndarray) -> bool:
        ya, xa = np.nonzero(a)
        yb, xb = np.nonzero(b)
        overlap = min(ya.max(), yb.max()) - max(ya.min(), yb.min())
        shorter = min(ya.max() - ya.min(), yb.max() - yb.min())
        return abs(xa.mean() - xb.mean()) >= gap and overlap >= 0.3 * shorter

    lungs: tuple[np.ndarray, ...] = ()
    if len(comps) == 2 and side_by_side(*comps):
        lungs = tuple(comps)
    elif comps:
        split = _split_joined(comps[0], min_area)
        if split and side_by_side(*split):
            lungs = split
    if not lungs:
        found = "no dark field" if not comps else f"{len(comps)} dark field(s) not side by side"
        return _Parts(
            body, (), f"two lung fields not found ({found} of at least {p.min_lung_area:.0%})", numbers
        )
    lungs = tuple(sorted(lungs, key=lambda m: float(np.nonzero(m)[1].mean())))
    share = float(sum(m.sum() for m in lungs) / max(body.sum(), 1))
    numbers["lungs_in_body"] = share
    if share > p.max_lungs_body:
        return _Parts(body, (), f"dark fields cover {share:.0%} of the body: not lungs", numbers)
    return _Parts(body, lungs, "", numbers)


def _resize_to(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    up = cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return up >= 0.5


def _working_copy(gray: np.ndarray, work_size: int) -> np.ndarray:
    h, w = gray.shape
    scale = work_size / max(h, w)
    if scale >= 1.0:
        return gray
    size = (max(round(w * scale), 8), max(round(h * scale), 8))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def _lungs_roi(parts: _Parts, p: LungParams, side: int) -> np.ndarray:
    left, right = parts.lungs
    hl, hr = _hull(left), _hull(right)
    ys = np.nonzero(hl | hr)[0]
    shift = round(p.base_extension * float(ys.max() - ys.min()))
    bottoms = (int(np.nonzero(hl)[0].max()), int(np.nonzero(hr)[0].max()))
    mid = (float(np.nonzero(left)[1].mean()) + float(np.nonzero(right)[1].mean())) / 2
    sides = []
    for k, (own, other) in enumerate(((hl, hr), (hr, hl))):
        # a lung whose base lies above the other's (shortened from below) reaches down to the other's base
        lift = max(bottoms[1 - k] - bottoms[k], 0) if p.match_base else 0
        parts_ = own | _shift_down(own, shift + lift)
        if p.mirror == "full":
            parts_ |= _mirror(other, mid)
        elif p.mirror == "base":
            below = _mirror(other, mid)
            below[: bottoms[k] + 1] = False
            parts_ |= below
        sides.append(_hull(parts_))
    roi = (sides[0] | sides[1]) & parts.body
    margin = round(p.margin * side)
    if margin > 0:
        roi = cv2.dilate(roi.astype(np.uint8), _disk(margin)) > 0
    return roi


def _describe(p: LungParams) -> str:
    return (
        "automatic lung fields (two-stage Otsu, per-lung convex hull"
        + {"full": ", mirrored contralateral lung", "base": ", mirrored contralateral base", "off": ""}[
            p.mirror
        ]
        + f", base extension {p.base_extension:g}, margin {p.margin:g})"
    )


def lung_region(
    image: np.ndarray | LoadedImage | torch.Tensor, params: LungParams | None = None
) -> AnatomyROI:
    """The automatic lung region of a chest radiograph (module docstring), or a failed record saying why."""
    p = params or LungParams()
    gray = as_gray(image)
    work = _working_copy(gray, p.work_size)
    parts = _find_parts(work, p)
    if not parts.lungs:
        return AnatomyROI(None, "failed", _describe(p), reason=parts.reason, numbers=parts.numbers)
    return _lungs_record(parts, p, work, gray.shape)


def _lungs_record(parts: _Parts, p: LungParams, work: np.ndarray, shape: tuple[int, int]) -> AnatomyROI:
    roi = _resize_to(_lungs_roi(parts, p, min(work.shape)), shape)
    fields = _resize_to(np.logical_or.reduce(parts.lungs), shape)
    numbers = {**parts.numbers, "area_fraction": float(roi.mean())}
    return AnatomyROI(roi, "automatic_lungs", _describe(p), numbers=numbers, fields=fields)


def body_region(
    image: np.ndarray | LoadedImage | torch.Tensor, params: LungParams | None = None
) -> AnatomyROI:
    """Everything that is not the air around the patient (step 2 of the module docstring), or a failed record
    when the body is too small or fills the image (then it separates nothing)."""
    p = params or LungParams()
    gray = as_gray(image)
    work = _working_copy(gray, p.work_size)
    parts = _find_parts(work, p)
    return _body_record(parts, p, gray.shape)


def _body_record(parts: _Parts, p: LungParams, shape: tuple[int, int], prefix: str = "") -> AnatomyROI:
    method = "automatic body (not the air around the patient, two-stage Otsu)"
    frac = float(parts.body.mean())
    numbers = {**parts.numbers, "area_fraction": frac}
    if not p.min_body_area <= frac <= p.max_body_area:
        why = "fills the image" if frac > p.max_body_area else "is too small"
        return AnatomyROI(
            None,
            "failed",
            method,
            reason=f"{prefix}the body {why} ({frac:.0%} of the image)",
            numbers=numbers,
        )
    return AnatomyROI(
        _resize_to(parts.body, shape), "automatic_body", method, reason=prefix.rstrip("; "), numbers=numbers
    )


def automatic_roi(
    image: np.ndarray | LoadedImage | torch.Tensor,
    params: LungParams | None = None,
    *,
    fallback_body: bool = True,
) -> AnatomyROI:
    """Lung fields; when they cannot be found and ``fallback_body``, the body; else a failed record."""
    p = params or LungParams()
    gray = as_gray(image)
    work = _working_copy(gray, p.work_size)
    parts = _find_parts(work, p)
    if parts.lungs:
        return _lungs_record(parts, p, work, gray.shape)
    if not fallback_body:
        return AnatomyROI(None, "failed", _describe(p), reason=parts.reason, numbers=parts.numbers)
    return _body_record(parts, p, gray.shape, prefix=f"lungs: {parts.reason}; ")


def anatomy_roi(
    image: np.ndarray | LoadedImage | torch.Tensor,
    *,
    mask: np.ndarray | None = None,
    mask_folder: str | Path | None = None,
    image_name: str | None = None,
    model: LoadedModel | None = None,
    channel: int | str | None = None,
    params: LungParams | None = None,
    fallback_body: bool = True,
) -> AnatomyROI:
    """The region of one image from the first source given: ``mask`` (array), ``mask_folder`` (file named
    after ``image_name``, or the LoadedImage's name), ``model`` + ``channel`` (segmentation model), else
    automatic. A provided source that yields nothing is returned as failed (with its reason), not silently
    replaced."""
    gray = as_gray(image)
    if mask is not None:
        return roi_from_mask(mask, gray.shape)
    if mask_folder is not None:
        name = image_name or (image.name if isinstance(image, LoadedImage) else None)
        if name is None:
            raise ShapeError("a mask folder needs the image's file name (image_name) to find its mask")
        return roi_from_folder(mask_folder, name, gray.shape)
    if model is not None:
        if channel is None:
            raise ShapeError(
                "a segmentation model needs the output channel (index or name) that is the anatomy"
            )
        src = image if isinstance(image, LoadedImage) else gray
        return roi_from_model(src, model, channel)
    return automatic_roi(gray, params, fallback_body=fallback_body)
