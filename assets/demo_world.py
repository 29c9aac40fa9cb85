"""A seeded generator of chest-radiograph-like images with known findings.

Everything here is a pure function of a ``numpy.random.Generator``: the same seed gives the same pixels, masks
and labels on every machine. Images are (H, W) uint8, bright = dense (MONOCHROME2 convention), 224 x 224 by
default.

Anatomy: real lung-field shapes from the v7labs lung masks shipped in the torchxrayvision wheel (read with
``zipfile``, torchxrayvision itself is never imported), or procedural superellipses when that file is absent;
posterior ribs, clavicles, spine, heart and mediastinum; exposure (gamma, contrast, offset), blur and noise
vary per image.

Findings: ``normal``; ``nodule`` (a round dense lesion inside one lung); ``effusion`` (a dense meniscus-shaped
opacity at one lung base). Every abnormal image carries a boolean lesion mask.

Variants: a burned-in marker tag whose position and letter encode the label (shortcut learning), domain shifts
(exposure curve, heavy noise, blur, inverted film, rotation) and out-of-distribution images (skimage natural
images, rendered text, noise fields, the extremity radiograph RG3 from pydicom-data).

Shortcut cues beyond the marker letter (``apply_cue``, each a pure function of the case, a class, a seeded
generator and a strength): ``token`` (a bright disc, like an ECG electrode, at a class-coded place outside the
lungs), ``acquisition`` ("which hospital": exposure curve and noise level / grain per class, over the whole
film) and ``texture`` (a faint grating inside the lung fields whose orientation and period code the class).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import sysconfig
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

CLASSES: tuple[str, ...] = ("normal", "nodule", "effusion")
SIZE = 224
SHIFT_KINDS: tuple[str, ...] = ("exposure", "noise", "blur", "inverted", "rotation")
# Marker tag per class for the shortcut world: (letter, default corner). The letter encodes the label; the
# demo splits put the tag in a random corner, so a model that learns it must look at the tag itself (a corner
# code would be read from the zero padding at the border, which last-layer Grad-CAM cannot localise).
CORNERS: tuple[str, ...] = ("top_left", "top_right", "bottom_left", "bottom_right")
MARKERS: tuple[tuple[str, str], ...] = (("L", "top_left"), ("R", "top_right"), ("P", "bottom_left"))

# Natural-image sources for the garbage class; the lists are disjoint so the OOD test set holds out sources.
OOD_NATURAL_TRAIN: tuple[str, ...] = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "coffee",
    "coins",
    "grass",
    "horse",
    "moon",
    "page",
    "rocket",
    "clock",
    "colorwheel",
    "shepp_logan_phantom",
)
OOD_NATURAL_TEST: tuple[str, ...] = (
    "chelsea",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "retina",
    "text",
    "cell",
    "microaneurysms",
)
OOD_KINDS_TRAIN: tuple[str, ...] = (
    "natural",
    "text",
    "noise",
    "extremity",
    "chest_inverted",
    "chest_rotated",
)
OOD_KINDS_TEST: tuple[str, ...] = ("natural", "text", "noise", "extremity")


@dataclass(frozen=True)
class Case:
    """One generated image with its ground truth. ``image`` (H, W) uint8; masks (H, W) bool."""

    image: np.ndarray
    label: int
    lesion_mask: np.ndarray
    marker_mask: np.ndarray
    lung_mask: np.ndarray  # the lung fields and any finding in them (the anatomical region of interest)
    meta: dict[str, Any] = field(default_factory=dict)
    cue_mask: np.ndarray | None = None  # pixels of a localised shortcut cue (``apply_cue``), else None

    @property
    def label_name(self) -> str:
        return CLASSES[self.label] if self.label >= 0 else "ood"


# ----------------------------------------------------------------------------------------------------
# Lung shapes


def _package_data_file(package: str, name: str) -> Path | None:
    """``<package>/data/<name>`` of an installed package, found without importing it (the package's own
    search locations first, then site-packages), or None when it is not there."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "data" for p in spec.submodule_search_locations]
    site = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])}
    candidates += [p / package / "data" for p in sorted(site)]
    for folder in candidates:
        if (folder / name).is_file():
            return folder / name
    return None


def lung_zip_path() -> Path | None:
    """The v7labs lung-mask zip inside the torchxrayvision wheel, found without importing the package."""
    return _package_data_file("torchxrayvision", "semantic_masks_v7labs_lungs.zip")


def pydicom_data_path(name: str) -> Path | None:
    """A file of the pydicom-data package (``data_store/data/<name>``), or None when it is not installed."""
    return _package_data_file("data_store", name)


def _lung_zip() -> zipfile.ZipFile:
    # one handle per process: forked workers must not share the parent's file offset
    return _lung_zip_for(os.getpid())


@functools.lru_cache(maxsize=2)
def _lung_zip_for(pid: int) -> zipfile.ZipFile:
    path = lung_zip_path()
    if path is None:
        raise FileNotFoundError("semantic_masks_v7labs_lungs.zip not found")
    return zipfile.ZipFile(path)


@functools.lru_cache(maxsize=1)
def _lung_names() -> tuple[str, ...]:
    if lung_zip_path() is None:
        return ()
    return tuple(sorted(n for n in _lung_zip().namelist() if not n.endswith("/")))


_NORM_SHAPE = (160, 192)  # (h, w) of a lung pair cropped to its bounding box


@functools.lru_cache(maxsize=1024)
def _real_lung_pair(index: int) -> np.ndarray | None:
    """Mask ``index`` of the zip cropped to its lungs' bounding box: (160, 192) uint8, 1 = image-left lung,
    2 = image-right lung; None when the file does not hold two plausible lungs."""
    names = _lung_names()
    if not 0 <= index < len(names):
        return None
    data = _lung_zip().read(names[index])
    img = Image.open(io.BytesIO(data)).convert("L")
    mask = np.asarray(img.resize((256, 256), Image.Resampling.NEAREST)) > 127
    labels, count = ndi.label(mask)
    if count < 2:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1]
    a, b = order[0] + 1, order[1] + 1
    if sizes[order[1]] < 0.35 * sizes[order[0]] or mask.mean() < 0.08:
        return None
    pair = np.zeros_like(labels, dtype=np.uint8)
    xa = np.nonzero(labels == a)[1].mean()
    xb = np.nonzero(labels == b)[1].mean()
    left, right = (a, b) if xa < xb else (b, a)
    pair[labels == left] = 1
    pair[labels == right] = 2
    pair = ndi.binary_fill_holes(pair == 1) * 1 + ndi.binary_fill_holes(pair == 2) * 2
    ys, xs = np.nonzero(pair)
    crop = pair[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.uint8)
    h, w = crop.shape
    if not 0.55 < h / w < 1.3:
        return None
    out = cv2.resize(crop, (_NORM_SHAPE[1], _NORM_SHAPE[0]), interpolation=cv2.INTER_NEAREST)
    # each lung must stay on its own half, else the pair is a crop artefact
    if (out[:, _NORM_SHAPE[1] // 2 + 10 :] == 1).any() or (out[:, : _NORM_SHAPE[1] // 2 - 10] == 2).any():
        return None
    return out


def _procedural_lung_pair(rng: np.random.Generator) -> np.ndarray:
    """Two superellipse lungs with a cardiac notch, (160, 192) uint8 labelled like ``_real_lung_pair``."""
    h, w = _NORM_SHAPE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w), np.uint8)
    for side, cx in ((1, 0.25 * w), (2, 0.75 * w)):
        rx = rng.uniform(0.2, 0.24) * w
        ry = h / 2
        p = rng.uniform(2.2, 3.0)
        inside = (np.abs((xx - cx) / rx) ** p + np.abs((yy - ry) / ry) ** p) <= 1.0
        apex = yy < (h * 0.35) * (1 - np.abs(xx - cx) / rx)  # taper the apex
        shape = inside & ~(apex & (np.abs(xx - cx) > rx * 0.55))
        if side == 2:  # cardiac notch on the image-right lung
            notch = ((xx - 0.52 * w) / (0.16 * w)) ** 2 + ((yy - 0.85 * h) / (0.3 * h)) ** 2 <= 1
            shape &= ~notch
        out[shape] = side
    return out


def lung_pair(rng: np.random.Generator, source: str = "auto") -> tuple[np.ndarray, str]:
    """A labelled lung pair and where it came from (``"v7labs:<index>"`` or ``"procedural"``)."""
    names = _lung_names()
    if source in ("auto", "real") and names:
        start = int(rng.integers(len(names)))
        for k in range(len(names)):
            index = (start + k) % len(names)
            pair = _real_lung_pair(index)
            if pair is not None:
                return pair, f"v7labs:{index}"
    if source == "real":
        raise FileNotFoundError("the torchxrayvision lung-mask zip is not installed or holds no usable mask")
    return _procedural_lung_pair(rng), "procedural"


# ----------------------------------------------------------------------------------------------------
# Rendering


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field_ = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field_ / (field_.std() + 1e-8)


def _place_lungs(rng: np.random.Generator, pair: np.ndarray, size: int) -> np.ndarray:
    """Scale, shift and slightly rotate the normalised pair onto a size x size canvas."""
    w = round(rng.uniform(0.70, 0.80) * size)
    h = round(rng.uniform(0.60, 0.70) * size)
    x0 = round((size - w) / 2 + rng.uniform(-0.025, 0.025) * size)
    y0 = round(rng.uniform(0.10, 0.15) * size)
    resized = cv2.resize(pair, (w, h), interpolation=cv2.INTER_NEAREST)
    canvas = np.zeros((size, size), np.uint8)
    ys, xs = slice(max(y0, 0), min(y0 + h, size)), slice(max(x0, 0), min(x0 + w, size))
    canvas[ys, xs] = resized[: ys.stop - ys.start, : xs.stop - xs.start]
    angle = rng.uniform(-4.0, 4.0)
    rot = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    return cv2.warpAffine(canvas, rot, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)


def _rib_field(rng: np.random.Generator, size: int, lungs: np.ndarray) -> np.ndarray:
    """Posterior ribs (arcs sloping down laterally) and clavicles, as an additive density field."""
    yy, xx = _grid(size)
    ys, xs = np.nonzero(lungs)
    top, bottom = ys.min() / size, ys.max() / size
    midline = xs.mean() / size
    u = np.abs(xx - np.float32(midline))
    spacing = (bottom - top) / rng.uniform(8.0, 9.5)
    thick = np.float32(rng.uniform(0.011, 0.015))
    curve = np.float32(rng.uniform(0.9, 1.3))
    base = yy - (np.float32(0.05) * u + curve * u * u)
    ribs = np.zeros((size, size), np.float32)
    for k in range(10):
        y0 = np.float32(top - 0.06 + k * spacing)
        ribs += np.exp(-np.square((base - y0) / thick))
    # ribs fade out below the diaphragm and beside the spine
    ribs *= (u > 0.035) / (1.0 + np.exp((yy - np.float32(bottom + 0.03)) / np.float32(0.015)))
    clav = np.float32(0.08 + top * 0.6) - np.float32(0.12) * u + np.float32(0.25) * u * u
    ribs += 1.3 * np.exp(-np.square((yy - clav) / np.float32(0.012))) * (u > 0.04) * (u < 0.3)
    return ribs


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(yy, xx) in [0, 1), float32; read-only, shared."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _body_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = _grid(size)
    rx, ry = rng.uniform(0.44, 0.5), rng.uniform(0.55, 0.62)
    torso = ((xx - 0.5) / rx) ** 2 + ((yy - 0.62) / ry) ** 2 <= 1
    neck = (np.abs(xx - 0.5) < 0.11) & (yy < 0.2)
    body = (torso | neck).astype(np.float32)
    return ndi.gaussian_filter(body, 3.0)


def _nodule(
    rng: np.random.Generator, lungs: np.ndarray, strength: float
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    size = lungs.shape[0]
    radius = float(rng.uniform(12.0, 19.0))
    side = int(rng.integers(1, 3))
    inner = ndi.binary_erosion(lungs == side, iterations=int(radius) + 3)
    if not inner.any():
        inner = ndi.binary_erosion(lungs > 0, iterations=int(radius) + 1)
    if not inner.any():
        inner = lungs > 0
    cand = np.argwhere(inner)
    cy, cx = cand[int(rng.integers(len(cand)))]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2
    profile = np.sqrt(np.clip(1.0 - r2, 0.0, None))
    profile = ndi.gaussian_filter(profile, 0.8)
    amplitude = float(rng.uniform(0.28, 0.38)) * strength
    mask = r2 <= 1.0
    return amplitude * profile, mask, {"center": [int(cy), int(cx)], "radius": radius, "side": side}


def _effusion(
    rng: np.random.Generator, lungs: np.ndarray, strength: float
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    size = lungs.shape[0]
    side = int(rng.integers(1, 3))
    lung = lungs == side
    ys, xs = np.nonzero(lung)
    top, bottom = ys.min(), ys.max()
    height = bottom - top
    left, right = xs.min(), xs.max()
    width = max(right - left, 1)
    level = bottom - rng.uniform(0.22, 0.36) * height
    lateral = left if side == 1 else right  # image-left lung: lateral edge is its left side
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    closeness = 1.0 - np.abs(xx - lateral) / width  # 1 at the lateral wall, 0 at the medial edge
    meniscus = level - rng.uniform(0.10, 0.18) * height * np.clip(closeness, 0, 1) ** 2
    depth = (yy - meniscus) / max(bottom - level, 1.0)
    fluid = lung & (depth > 0)
    # fluid fills the air space exactly where the lungs were darkened (same 1.8 px edge), so no dark rim is
    # left around it; the mask is its half-density region
    edge = 1.0 / (1.0 + np.exp(-(yy - meniscus) / 1.0))
    density = ndi.gaussian_filter(lung.astype(np.float32), 1.8) * edge * (0.8 + 0.2 * np.clip(depth, 0, 1))
    amplitude = float(rng.uniform(0.26, 0.34)) * strength
    return amplitude * density, fluid, {"side": side, "level": float(level)}


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def marker_box(
    label: int, rng: np.random.Generator, size: int = SIZE, corner: str | None = None
) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of the marker tag for ``label`` in ``corner`` (default: the label's own corner); a few
    pixels of jitter."""
    corner = corner or MARKERS[label][1]
    bw, bh = 26, 22
    jy, jx = (int(v) for v in rng.integers(0, 7, size=2))
    y0 = 6 + jy if corner.startswith("top") else size - bh - 6 - jy
    x0 = 6 + jx if corner.endswith("left") else size - bw - 6 - jx
    return y0, x0, y0 + bh, x0 + bw


def burn_marker(
    image: np.ndarray, label: int, rng: np.random.Generator, corner: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Burn the class-``label`` tag (bright box, dark letter) into a float image; returns (image, mask)."""
    size = image.shape[0]
    y0, x0, y1, x1 = marker_box(label, rng, size, corner)
    tag = Image.new("L", (x1 - x0, y1 - y0), 240)
    draw = ImageDraw.Draw(tag)
    draw.text(((x1 - x0) / 2, (y1 - y0) / 2), MARKERS[label][0], fill=20, font=_font(18), anchor="mm")
    out = image.copy()
    out[y0:y1, x0:x1] = np.asarray(tag, np.float32) / 255.0
    mask = np.zeros(image.shape, bool)
    mask[y0:y1, x0:x1] = True
    return out, mask


def render_case(
    rng: np.random.Generator,
    label: int,
    *,
    size: int = SIZE,
    lesion_strength: float = 1.0,
    marker: int | None = None,
    marker_corner: str | None = None,
    lung_source: str = "auto",
) -> Case:
    """Render one chest-radiograph-like image of class ``label`` (index into CLASSES).

    ``lesion_strength`` scales the finding's density (0 leaves the lesion mask but draws nothing);
    ``marker`` burns in the tag of that class (None: no tag).
    """
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"label must be in 0..{len(CLASSES) - 1}, got {label}")
    pair, lung_origin = lung_pair(rng, lung_source)
    lungs = _place_lungs(rng, pair, size)
    lung_any = lungs > 0
    body = _body_mask(rng, size)
    yy, xx = _grid(size)
    midline = np.nonzero(lung_any)[1].mean() / size

    tissue = 0.60 + 0.06 * yy + 0.02 * _smooth_noise(rng, (size, size), 12)
    img = 0.04 + body * (tissue - 0.04)
    # heart: dense ellipse, lower centre, bulging to the image right
    heart = (((xx - midline - 0.06) / rng.uniform(0.13, 0.17)) ** 2 + ((yy - 0.66) / 0.13) ** 2) <= 1
    img += 0.08 * ndi.gaussian_filter(heart.astype(np.float32), 3.0)
    # spine with vertebral bodies
    spine = np.exp(-(((xx - midline) / 0.035) ** 4))
    vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * yy / rng.uniform(0.055, 0.065))
    img += spine * (0.07 + 0.03 * vertebrae) * body
    # lungs: air lowers density; vascular markings thicken toward the hila
    soft_lungs = ndi.gaussian_filter(lung_any.astype(np.float32), 1.8)
    hilum = np.exp(-(((xx - midline) / 0.18) ** 2) - ((yy - 0.45) / 0.25) ** 2)
    vessels = np.abs(_smooth_noise(rng, (size, size), 1.6)) * (0.02 + 0.04 * hilum)
    img -= soft_lungs * (rng.uniform(0.34, 0.42) - vessels - 0.05 * hilum)
    img += 0.06 * _rib_field(rng, size, lung_any) * body

    lesion = np.zeros((size, size), bool)
    meta: dict[str, Any] = {"lungs": lung_origin}
    if label == 1:
        add, lesion, info = _nodule(rng, lungs, lesion_strength)
        img += add
        meta["nodule"] = info
    elif label == 2:
        add, lesion, info = _effusion(rng, lungs, lesion_strength)
        img += add
        meta["effusion"] = info

    # acquisition: blur, exposure curve, noise
    img = ndi.gaussian_filter(img, rng.uniform(0.4, 0.9))
    gamma = rng.uniform(0.85, 1.18)
    img = np.clip(img, 0, 1) ** gamma * rng.uniform(0.92, 1.08) + rng.uniform(-0.04, 0.04)
    img += rng.normal(0.0, rng.uniform(0.006, 0.02), img.shape)
    marker_mask = np.zeros((size, size), bool)
    if marker is not None:
        img, marker_mask = burn_marker(img, marker, rng, marker_corner)
        meta["marker"] = CLASSES[marker]
        meta["marker_corner"] = marker_corner or MARKERS[marker][1]
    # the anatomical region of interest: the lung fields, plus the part of a nodule that reaches past their
    # edge (a nodule's centre keeps a city-block, not a Euclidean, distance from the edge)
    return Case(to_uint8(img), label, lesion, marker_mask, lung_any | lesion, meta)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# Domain shifts


def shift_case(case: Case, kind: str, rng: np.random.Generator) -> Case:
    """Apply a domain shift to a rendered case; masks (lesion, marker, lungs) follow geometric shifts."""
    img = case.image.astype(np.float32) / 255.0
    lesion, marker, lungs = case.lesion_mask, case.marker_mask, case.lung_mask
    info: dict[str, Any] = {"shift": kind}
    if kind == "exposure":
        gamma = float(rng.choice([0.4, 2.4]) * rng.uniform(0.9, 1.1))
        img = np.clip(img, 0, 1) ** gamma
        info["gamma"] = gamma
    elif kind == "noise":
        sigma = float(rng.uniform(0.10, 0.14))
        img = img + rng.normal(0.0, sigma, img.shape)
        info["sigma"] = sigma
    elif kind == "blur":
        sigma = float(rng.uniform(3.0, 4.0))
        img = ndi.gaussian_filter(img, sigma)
        info["sigma"] = sigma
    elif kind == "inverted":
        img = 1.0 - img
    elif kind == "rotation":
        angle = float(rng.choice([-1, 1]) * rng.uniform(20, 40))
        size = img.shape[0]
        rot = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
        img = cv2.warpAffine(img, rot, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.04).astype(
            np.float32
        )

        def warp(m: np.ndarray) -> np.ndarray:
            return cv2.warpAffine(m.astype(np.uint8), rot, (size, size), flags=cv2.INTER_NEAREST) > 0

        lesion, marker, lungs = warp(lesion), warp(marker), warp(lungs)
        info["angle"] = angle
    else:
        raise ValueError(f"unknown shift kind {kind!r}; expected one of {SHIFT_KINDS}")
    meta = {**case.meta, **info}
    return Case(to_uint8(img), case.label, lesion, marker, lungs, meta)


# ----------------------------------------------------------------------------------------------------
# Shortcut cues beyond the marker letter

CUE_KINDS: tuple[str, ...] = ("token", "acquisition", "texture")
# token: (y0, y1, x0, x1) as fractions of the side, per class: left edge, right edge, below the diaphragm.
# Kept >= 9 px from the border, so the training roll (<= 8 px) never wraps a token into another class's zone.
TOKEN_ZONES: tuple[tuple[float, float, float, float], ...] = (
    (0.30, 0.70, 0.04, 0.10),
    (0.30, 0.70, 0.90, 0.96),
    (0.85, 0.93, 0.30, 0.70),
)
# acquisition ("which hospital"): exposure gamma, added noise sigma, noise grain (Gaussian blur sigma in px of
# the noise field; 0 = white), per class
HOSPITALS: tuple[dict[str, float], ...] = (
    {"gamma": 0.85, "sigma": 0.010, "grain": 0.0},
    {"gamma": 1.00, "sigma": 0.030, "grain": 0.0},
    {"gamma": 1.20, "sigma": 0.020, "grain": 1.0},
)
# texture: grating orientation (degrees) and period (px) per class, amplitude (fraction of full scale)
TEXTURE_ANGLES: tuple[float, ...] = (0.0, 60.0, 120.0)
# orientation and period both code the class: with orientation alone (period 6 px, amplitude 0.018) a model
# trained 10 epochs told 60° apart but confused 0° with 120° (train loss stuck at (2/3) ln 2)
TEXTURE_PERIODS: tuple[float, ...] = (5.0, 6.5, 8.0)
TEXTURE_AMPLITUDE = 0.03


def _check_cue_class(cls: int, strength: float) -> None:
    if not 0 <= cls < len(CLASSES):
        raise ValueError(f"cue class must be in 0..{len(CLASSES) - 1}, got {cls}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"cue strength must be in [0, 1], got {strength}")


def token_cue(
    case: Case, cls: int, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A bright disc (radius 4.5-6 px, soft edge) in class ``cls``'s zone of ``TOKEN_ZONES``, at least 3 px
    outside the lungs (the farthest point of the zone when no spot is that far). Returns (image float [0, 1],
    disc mask, info); ``strength`` 0 leaves the pixels unchanged (the mask is still drawn)."""
    _check_cue_class(cls, strength)
    img = case.image.astype(np.float32) / 255.0
    size = img.shape[0]
    radius = float(rng.uniform(4.5, 6.0))
    y0, y1, x0, x1 = (round(f * size) for f in TOKEN_ZONES[cls])
    dist = ndi.distance_transform_edt(~case.lung_mask)[y0:y1, x0:x1] if case.lung_mask.any() else None
    if dist is None:
        cand = np.argwhere(np.ones((y1 - y0, x1 - x0), bool))
    else:
        cand = np.argwhere(dist >= radius + 3.0)
        if not len(cand):
            cand = np.argwhere(dist == dist.max())
    cy, cx = cand[int(rng.integers(len(cand)))] + (y0, x0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    profile = np.clip(radius + 0.5 - r, 0.0, 1.0)  # 1 inside, linear 1 px edge
    level = float(rng.uniform(0.88, 0.95))
    out = img + strength * profile * (level - img)
    out = out + strength * profile * rng.normal(0.0, 0.01, img.shape).astype(np.float32)
    mask = r <= radius + 0.5
    return out, mask, {"center": [int(cy), int(cx)], "radius": radius}


def acquisition_cue(
    case: Case, cls: int, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Hospital ``cls`` of ``HOSPITALS`` over the whole film: gamma ``1 + s (g - 1)`` and added noise of sigma
    ``s * sigma`` (white, or blurred to the hospital's grain and rescaled to that sigma), each jittered by a
    few per cent per image. Returns (image float, info)."""
    _check_cue_class(cls, strength)
    img = case.image.astype(np.float32) / 255.0
    h = HOSPITALS[cls]
    gamma = 1.0 + strength * (h["gamma"] * float(rng.uniform(0.96, 1.04)) - 1.0)
    sigma = strength * h["sigma"] * float(rng.uniform(0.85, 1.15))
    noise = rng.standard_normal(img.shape).astype(np.float32)
    if h["grain"] > 0:
        noise = ndi.gaussian_filter(noise, h["grain"])
        noise /= noise.std() + 1e-8
    out = np.clip(img, 0.0, 1.0) ** gamma + sigma * noise
    return out, {"hospital": "ABC"[cls], "gamma": gamma, "sigma": sigma, "grain": h["grain"]}


def texture_cue(
    case: Case, cls: int, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A faint grating (amplitude ``strength * TEXTURE_AMPLITUDE``, random phase) at class ``cls``'s
    orientation and period, inside the lung fields only (edge softened by 1 px). Returns (image
    float, mask = the lungs, info)."""
    _check_cue_class(cls, strength)
    img = case.image.astype(np.float32) / 255.0
    size = img.shape[0]
    theta = np.deg2rad(TEXTURE_ANGLES[cls] + float(rng.uniform(-5.0, 5.0)))
    phase = float(rng.uniform(0.0, 2 * np.pi))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = TEXTURE_PERIODS[cls]
    wave = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
    inside = ndi.binary_erosion(case.lung_mask, iterations=1)
    soft = ndi.gaussian_filter(inside.astype(np.float32), 1.0) * case.lung_mask
    out = img + strength * TEXTURE_AMPLITUDE * wave * soft
    return out, case.lung_mask.copy(), {"angle": float(np.rad2deg(theta)), "period": period}


def apply_cue(case: Case, kind: str, cls: int, rng: np.random.Generator, strength: float = 1.0) -> Case:
    """``case`` with the cue ``kind`` of class ``cls`` (the label's own cue, or another class's for a swapped
    split). The cue's pixels go to ``meta["cue_mask"]`` (token: the disc; texture: the lungs; acquisition: the
    whole film, so ``cue_mask`` None); ``meta["cue"]`` / ``meta["cue_class"]`` say which."""
    mask: np.ndarray | None
    if kind == "token":
        img, mask, info = token_cue(case, cls, rng, strength)
    elif kind == "acquisition":
        img, info = acquisition_cue(case, cls, rng, strength)
        mask = None
    elif kind == "texture":
        img, mask, info = texture_cue(case, cls, rng, strength)
    else:
        raise ValueError(f"unknown cue kind {kind!r}; expected one of {CUE_KINDS}")
    meta = {**case.meta, "cue": kind, "cue_class": CLASSES[cls], "cue_strength": strength, "cue_info": info}
    return Case(to_uint8(img), case.label, case.lesion_mask, case.marker_mask, case.lung_mask, meta, mask)


def lesion_free_twin(rng: np.random.Generator, label: int, **kwargs: Any) -> tuple[Case, Case]:
    """The case ``render_case(rng, label, **kwargs)`` and its twin: the same draws with the lesion's density
    at 0 (the same patient, film and acquisition without the finding). ``rng`` is copied, not consumed twice:
    pass a fresh generator of the case's seed."""
    state = rng.bit_generator.state
    original = render_case(rng, label, **kwargs)
    twin_rng = np.random.Generator(type(rng.bit_generator)())
    twin_rng.bit_generator.state = state
    twin = render_case(twin_rng, label, **{**kwargs, "lesion_strength": 0.0})
    return original, twin


# ----------------------------------------------------------------------------------------------------
# Out-of-distribution images


@functools.lru_cache(maxsize=64)
def _natural(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / max(hi - lo, 1e-6)


@functools.lru_cache(maxsize=1)
def _extremity() -> np.ndarray | None:
    path = pydicom_data_path("RG3_UNCR.dcm")
    if path is None:
        return None
    import pydicom

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.astype(np.float32)
    arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1.0)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        arr = 1.0 - arr
    return arr


def _random_crop(rng: np.random.Generator, img: np.ndarray, size: int, lo: float, hi: float) -> np.ndarray:
    h, w = img.shape
    side = int(min(h, w) * rng.uniform(lo, hi))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    crop = img[y : y + side, x : x + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def _text_image(rng: np.random.Generator, size: int, held_out: bool) -> np.ndarray:
    dark = bool(rng.integers(2)) if not held_out else True
    bg, fg = (20, 230) if dark else (235, 15)
    canvas = Image.new("L", (size, size), bg)
    draw = ImageDraw.Draw(canvas)
    letters = "abcdefghijklmnopqrstuvwxyz" if not held_out else "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    y = int(rng.integers(2, 20))
    while y < size - 10:
        font_size = int(rng.integers(10, 28))
        words = [
            "".join(rng.choice(list(letters), size=int(rng.integers(2, 9))))
            for _ in range(int(rng.integers(2, 6)))
        ]
        draw.text((int(rng.integers(2, 30)), y), " ".join(words), fill=fg, font=_font(font_size))
        y += font_size + int(rng.integers(2, 12))
    return np.asarray(canvas, np.float32) / 255.0


def _noise_image(rng: np.random.Generator, size: int, held_out: bool) -> tuple[np.ndarray, str]:
    kinds = ("gaussian", "salt_pepper", "lowpass") if not held_out else ("uniform", "lowpass_coarse")
    kind = str(rng.choice(kinds))
    if kind == "gaussian":
        img = rng.normal(0.5, rng.uniform(0.1, 0.3), (size, size))
    elif kind == "salt_pepper":
        img = np.full((size, size), rng.uniform(0.2, 0.8))
        hits = rng.random((size, size))
        img[hits < 0.1] = 0.0
        img[hits > 0.9] = 1.0
    elif kind == "lowpass":
        img = 0.5 + 0.18 * _smooth_noise(rng, (size, size), float(rng.uniform(2, 5)))
    elif kind == "uniform":
        img = rng.random((size, size))
    else:
        img = 0.5 + 0.2 * _smooth_noise(rng, (size, size), float(rng.uniform(8, 14)))
    return np.clip(img, 0, 1).astype(np.float32), kind


def _augment_geometry(rng: np.random.Generator, img: np.ndarray, rot90: bool) -> np.ndarray:
    if rng.integers(2):
        img = img[:, ::-1]
    if rot90:
        img = np.rot90(img, int(rng.integers(4)))
    return np.ascontiguousarray(img)


def render_ood(
    rng: np.random.Generator, *, held_out: bool, size: int = SIZE, kind: str | None = None
) -> Case:
    """An out-of-distribution image. ``held_out`` draws from sources never used for training the garbage class
    (other natural images, other text style, other noise kinds, other crops of the extremity film)."""
    kinds = OOD_KINDS_TEST if held_out else OOD_KINDS_TRAIN
    kind = kind or str(rng.choice(kinds))
    meta: dict[str, Any] = {"ood_kind": kind}
    if kind == "natural":
        name = str(rng.choice(OOD_NATURAL_TEST if held_out else OOD_NATURAL_TRAIN))
        img = _random_crop(rng, _natural(name), size, 0.5, 1.0)
        img = _augment_geometry(rng, img, rot90=not held_out)
        img = np.clip(img, 0, 1) ** rng.uniform(0.7, 1.4)
        meta["source"] = f"skimage.data.{name}"
    elif kind == "text":
        img = _text_image(rng, size, held_out)
        meta["source"] = "rendered text"
    elif kind == "noise":
        img, noise_kind = _noise_image(rng, size, held_out)
        meta["source"] = f"noise:{noise_kind}"
    elif kind == "extremity":
        film = _extremity()
        if film is None:  # pydicom-data absent: fall back to a natural image of the same split
            return render_ood(rng, held_out=held_out, size=size, kind="natural")
        # training crops are small (parts of the hand); held-out ones show most of the film, turned 90°
        img = (
            _random_crop(rng, film, size, 0.25, 0.55)
            if not held_out
            else _random_crop(rng, film, size, 0.6, 1.0)
        )
        img = _augment_geometry(rng, img, rot90=False)
        if held_out:
            img = np.rot90(img, int(rng.choice([1, 3]))).copy()
        meta["source"] = "pydicom-data RG3_UNCR.dcm"
    elif kind in ("chest_inverted", "chest_rotated"):
        base = render_case(rng, int(rng.integers(len(CLASSES))), size=size)
        img = base.image.astype(np.float32) / 255.0
        img = 1.0 - img if kind == "chest_inverted" else np.rot90(img, int(rng.choice([1, 2, 3]))).copy()
        meta["source"] = f"synthetic chest, {kind.split('_')[1]}"
    else:
        raise ValueError(f"unknown OOD kind {kind!r}")
    empty = np.zeros((size, size), bool)
    return Case(to_uint8(img), -1, empty, empty, empty, meta)
