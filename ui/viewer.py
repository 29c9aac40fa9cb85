"""The radiologist's viewer on the Attention page: window/level, linked zoom and pan over the image,
heatmap and reference panels at native resolution, the map's own grid on request, and the expected region
drawn on the image (box or lasso) as a per-image annotation that the numbers are recomputed against at once.

Window/level changes only what is drawn: the model's input stays the loader's ``LoadedImage.pixels``. Zoom and
pan are one crop rectangle in native pixels shared by every panel (so the panels are linked by construction);
a zoomed crop is sent at native pixels up to :data:`VIEW_MAX_SIDE` per side.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from ui.figures import DISPLAY_MAX_SIDE, PLOT_TEMPLATE
from verification import metrics, render
from verification.annotations import (
    Annotation,
    AnnotationStore,
    Region,
    dicom_seg,
    mask_from_png,
    mask_png,
)
from verification.errors import VerificationError
from verification.io.dicom import ModalityFrame, WindowPreset, apply_preset, modality_frame, window_unit
from verification.io.images import DEFAULT_MAX_PIXELS
from verification.io.records import LoadedImage, LoadedModel
from verification.reference import ReferenceBundle
from verification.verdict import VerdictConfig, VerificationReport, verify

ZOOMS: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
VIEW_MAX_SIDE = 1024  # a zoomed crop up to this many pixels per side travels at native resolution
AUTO_PERCENTILES: dict[str, tuple[float, float]] = {
    "auto (0.5–99.5 %)": (0.5, 99.5),
    "auto (2–98 %)": (2.0, 98.0),
}
LOADER = "as loaded (what the model sees)"
MANUAL = "manual"
REGION_COLOR = (0, 255, 255)
_STORE = "viewer_annotations"


# ------------------------------------------------------------------------------------------- the crop


@dataclass(frozen=True)
class View:
    """The crop ``[x0, x1) × [y0, y1)`` in native pixels and the picture size ``out`` = (h, w) it is drawn at
    (native when the crop fits ``max_side``, else shrunk)."""

    x0: int
    y0: int
    x1: int
    y1: int
    out: tuple[int, int]

    @property
    def scale(self) -> float:
        """Drawn pixels per native pixel (1.0: native)."""
        return self.out[1] / (self.x1 - self.x0)

    def describe(self, size: tuple[int, int]) -> str:
        h, w = size
        shown = "native pixels (1:1)" if abs(self.scale - 1.0) < 1e-9 else f"{self.scale:.2f}× native"
        if (self.x0, self.y0, self.x1, self.y1) == (0, 0, w, h):
            return f"whole image {w}×{h}, drawn at {self.out[1]}×{self.out[0]} ({shown})"
        return (
            f"x {self.x0}–{self.x1}, y {self.y0}–{self.y1} of {w}×{h}, drawn at {self.out[1]}×{self.out[0]} "
            f"({shown})"
        )


def view_for(size: tuple[int, int], zoom: float, cx: float = 0.5, cy: float = 0.5) -> View:
    """The crop of an image of ``size`` = (H, W) at ``zoom`` (1 = whole image) centred at the fractions
    ``cx``, ``cy`` of its width and height (moved inside the image when it would leave it)."""
    h, w = size
    zoom = max(1.0, float(zoom))
    cw, ch = max(1, min(w, round(w / zoom))), max(1, min(h, round(h / zoom)))
    x0 = int(np.clip(round(cx * w - cw / 2), 0, w - cw))
    y0 = int(np.clip(round(cy * h - ch / 2), 0, h - ch))
    cap = DISPLAY_MAX_SIDE if zoom == 1.0 else VIEW_MAX_SIDE
    s = min(1.0, cap / max(cw, ch))
    return View(x0, y0, x0 + cw, y0 + ch, (max(1, round(ch * s)), max(1, round(cw * s))))


def sample_map(map01: np.ndarray, size: tuple[int, int], view: View, *, nearest: bool = False) -> np.ndarray:
    """The map (h, w) as seen through ``view`` on an image of ``size``: each drawn pixel takes the map's value
    at its centre in native coordinates (bilinear, the half-pixel convention of ``cv2.resize``; ``nearest``
    shows the map's cells as computed). On the whole image this equals ``cv2.resize`` to the drawn size."""
    h_img, w_img = size
    m = np.ascontiguousarray(np.asarray(map01, dtype=np.float32))
    mh, mw = m.shape
    oh, ow = view.out
    xs = view.x0 + (np.arange(ow) + 0.5) * (view.x1 - view.x0) / ow
    ys = view.y0 + (np.arange(oh) + 0.5) * (view.y1 - view.y0) / oh
    if nearest:
        u = np.clip(np.floor(xs * mw / w_img), 0, mw - 1).astype(np.intp)
        v = np.clip(np.floor(ys * mh / h_img), 0, mh - 1).astype(np.intp)
        return m[v[:, None], u[None, :]]
    mapx = np.broadcast_to((xs * mw / w_img - 0.5).astype(np.float32)[None, :], (oh, ow))
    mapy = np.broadcast_to((ys * mh / h_img - 0.5).astype(np.float32)[:, None], (oh, ow))
    return cv2.remap(
        m,
        np.ascontiguousarray(mapx),
        np.ascontiguousarray(mapy),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def crop_mask(mask: np.ndarray, size: tuple[int, int], view: View) -> np.ndarray:
    """A bool mask (any size; native size expected) as seen through ``view`` (nearest)."""
    m = np.asarray(mask, dtype=bool)
    if m.shape != tuple(size):
        m = cv2.resize(m.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST).astype(bool)
    sub = m[view.y0 : view.y1, view.x0 : view.x1].astype(np.uint8)
    return cv2.resize(sub, (view.out[1], view.out[0]), interpolation=cv2.INTER_NEAREST).astype(bool)


def grid_lines(picture: np.ndarray, grid: tuple[int, int], size: tuple[int, int], view: View) -> np.ndarray:
    """``picture`` with the map's cell boundaries (native x = j·W/w, y = i·H/h) drawn as inverted pixels
    (visible on any colour); nothing when a cell would be narrower than 4 drawn pixels."""
    out = picture.copy()
    gh, gw = grid
    h_img, w_img = size
    oh, ow = view.out
    if min(w_img / gw, h_img / gh) * view.scale < 4.0:
        return out
    for j in range(1, gw):
        px = round((j * w_img / gw - view.x0) * view.scale)
        if 0 <= px < ow:
            out[:, px] = 255 - out[:, px]
    for i in range(1, gh):
        py = round((i * h_img / gh - view.y0) * view.scale)
        if 0 <= py < oh:
            out[py, :] = 255 - out[py, :]
    return out


# ------------------------------------------------------------------------------------------- window / level


@dataclass(frozen=True)
class Window:
    """How grey values are drawn: the loader's picture, one of the file's presets, or a window on the
    source values (``center``/``width``, LINEAR_EXACT) from an automatic percentile rule or the sliders."""

    kind: str  # "loader" | "preset" | "window"
    label: str
    center: float = 0.5
    width: float = 1.0
    preset: WindowPreset | None = None

    def describe(self, units: str) -> str:
        if self.kind == "loader":
            return "window: as loaded (the model's input)"
        if self.kind == "preset":
            return f"window: {self.label}"
        return f"window: {self.label}, level {self.center:.4g} / width {self.width:.4g} ({units})"


@dataclass(frozen=True, eq=False)
class DisplaySource:
    """The values window/level works on: a grey DICOM's modality values (file units; with its presets), else
    the loader's pixels in [0, 1]. ``lo``/``hi`` bound the sliders; ``percentiles`` for the auto rules."""

    values: np.ndarray
    frame: ModalityFrame | None
    units: str
    lo: float
    hi: float
    percentiles: dict[float, float]


@st.cache_resource(show_spinner=False, max_entries=8)
def _source(content_hash: str, _image: LoadedImage, _data: bytes | None) -> DisplaySource:
    frame = None
    if _data is not None and _image.source_format == "DICOM":
        try:
            frame = modality_frame(_data, name=_image.name, max_pixels=DEFAULT_MAX_PIXELS)
        except VerificationError:
            frame = None  # the loader read it; the viewer falls back to the loader's pixels
    values = frame.values if frame is not None else _image.pixels
    qs = sorted({q for pair in AUTO_PERCENTILES.values() for q in pair})
    pct = dict(zip(qs, (float(v) for v in np.percentile(values, qs)), strict=True))
    units = frame.units if frame is not None else "loader scale 0–1"
    return DisplaySource(values, frame, units, float(values.min()), float(values.max()), pct)


def display_source(image: LoadedImage, data: bytes | None = None) -> DisplaySource:
    return _source(image.content_hash, image, data)


def windowed(image: LoadedImage, src: DisplaySource, window: Window, view: View) -> np.ndarray:
    """The crop of ``image`` through ``window`` as drawn: uint8 RGB of size ``view.out``."""
    sl = (slice(view.y0, view.y1), slice(view.x0, view.x1))
    if window.kind == "loader":
        grey = image.display[sl]
    else:
        vals = src.values[sl]
        if window.kind == "preset" and window.preset is not None and src.frame is not None:
            frame = ModalityFrame(vals, src.frame.presets, src.frame.invert, src.units, src.frame.header)
            unit = apply_preset(frame, window.preset)
        else:
            unit = window_unit(vals, window.center, window.width, "LINEAR_EXACT")
            if src.frame is not None and src.frame.invert:
                unit = 1.0 - unit
        grey = np.rint(unit * 255.0).astype(np.uint8)
    rgb = render.to_rgb(np.ascontiguousarray(grey))
    if rgb.shape[:2] != view.out:
        rgb = cv2.resize(rgb, (view.out[1], view.out[0]), interpolation=cv2.INTER_AREA)
    return rgb


# ------------------------------------------------------------------------------------------- controls


@dataclass(frozen=True)
class ViewerState:
    window: Window
    view: View
    grid: bool
    nearest: bool


def controls(image: LoadedImage, src: DisplaySource) -> ViewerState:
    """Window/level, zoom, pan, grid and upsampling controls (one row); returns what they chose."""
    presets: dict[str, Window] = {LOADER: Window("loader", LOADER)}
    if src.frame is not None:
        for i, p in enumerate(src.frame.presets):
            label = p.label + (" — as loaded" if i == 0 else "")
            presets[label] = Window("preset", label, p.center, p.width, p)
    for label, (qa, qb) in AUTO_PERCENTILES.items():
        lo, hi = src.percentiles[qa], src.percentiles[qb]
        if hi > lo:
            presets[label] = Window("window", label, (lo + hi) / 2.0, hi - lo)
    presets[MANUAL] = Window("window", MANUAL)
    c1, c2, c3, c4, c5 = st.columns([1.6, 1.4, 0.7, 1.0, 1.0])
    choice = c1.selectbox(
        "Window / level",
        list(presets),
        key="viewer_window",
        help="Changes only what is drawn. The model always sees the loader's picture ('as loaded'): for a "
        "DICOM its first VOI LUT or window (without one, the 0.5–99.5 % percentiles of its values), else the "
        "file's full range. Auto: a window from percentiles of this image's values; manual: level and width "
        "in the file's units.",
    )
    window = presets.get(str(choice), presets[LOADER])
    if window.kind == "window" and window.label == MANUAL:
        span = max(src.hi - src.lo, 1e-6)
        step = float(10 ** np.floor(np.log10(span / 200.0)))
        lo_s, hi_s = float(np.floor(src.lo / step) * step), float(np.ceil(src.hi / step) * step)
        level = c2.slider(
            f"Level ({src.units})",
            lo_s,
            hi_s,
            float(np.round((lo_s + hi_s) / 2 / step) * step),
            step,
            key=f"viewer_level_{image.content_hash[:12]}",
        )
        width = c2.slider(
            f"Width ({src.units})",
            step,
            hi_s - lo_s,
            float(np.round((hi_s - lo_s) / step) * step),
            step,
            key=f"viewer_width_{image.content_hash[:12]}",
        )
        window = Window("window", MANUAL, float(level), max(float(width), step))
    else:
        c2.caption(window.describe(src.units))
    zoom = c3.selectbox("Zoom", ZOOMS, format_func=lambda z: f"{z:g}×", key="viewer_zoom")
    cx = c4.slider("Pan ←→ (% of width)", 0, 100, 50, key="viewer_pan_x", disabled=zoom == 1.0)
    cy = c4.slider("Pan ↑↓ (% of height)", 0, 100, 50, key="viewer_pan_y", disabled=zoom == 1.0)
    grid = c5.toggle(
        "Show the map's grid", key="viewer_grid", help="Lines at the cells the map was computed on."
    )
    nearest = c5.toggle(
        "Cells as computed",
        key="viewer_nearest",
        help="Draw each cell of the map in one colour (nearest) instead of the smooth bilinear upsampling.",
    )
    view = view_for(image.size, float(zoom), cx / 100.0, cy / 100.0)
    return ViewerState(window, view, bool(grid), bool(nearest))


# ------------------------------------------------------------------------------------------- pictures


@st.cache_data(show_spinner=False, max_entries=64)
def _base(
    key: tuple[Any, ...], _image: LoadedImage, _src: DisplaySource, _window: Window, _view: View
) -> np.ndarray:
    return windowed(_image, _src, _window, _view)


def base_picture(image: LoadedImage, src: DisplaySource, state: ViewerState) -> np.ndarray:
    key = (image.content_hash, state.window, state.view)
    return _base(key, image, src, state.window, state.view)


def cells(raw: np.ndarray) -> np.ndarray:
    """A map at the grid it was computed on, as drawn cell by cell: ReLU, then min-max to [0, 1] within the
    image (the same steps the upsampled map went through, without the upsampling)."""
    r = np.maximum(np.nan_to_num(np.asarray(raw, dtype=np.float32)), 0.0)
    lo, hi = float(r.min()), float(r.max())
    return (r - lo) / (hi - lo) if hi > lo else np.zeros_like(r)


@st.cache_data(show_spinner=False, max_entries=128)
def _overlay(
    key: tuple[Any, ...],
    _base_rgb: np.ndarray,
    _map: np.ndarray,
    _size: tuple[int, int],
    _view: View,
    opacity: float,
    colormap: str,
    grid_shape: tuple[int, int] | None,
) -> np.ndarray:
    sampled = sample_map(_map, _size, _view, nearest=key[-1])
    pic = render.overlay(_base_rgb, sampled, opacity=opacity, colormap=colormap, max_side=max(_view.out))
    return grid_lines(pic, grid_shape, _size, _view) if grid_shape is not None else pic


def overlay_picture(
    map_key: tuple[Any, ...],
    base: np.ndarray,
    map01: np.ndarray,
    image: LoadedImage,
    state: ViewerState,
    *,
    opacity: float,
    colormap: str,
    raw: np.ndarray | None = None,
) -> np.ndarray:
    """The map over the windowed crop (cached by the map's key, the image's hash, the view and the window).

    ``raw`` is the map at the grid it was computed on (a CAM's ``raw``): with it, "cells as computed" draws
    those cells and "show the map's grid" draws their boundaries. Without it (a reference map) the smooth map
    is drawn and no grid."""
    nearest = state.nearest and raw is not None
    grid_shape = tuple(np.asarray(raw).shape[-2:]) if state.grid and raw is not None else None
    source = cells(raw) if nearest and raw is not None else map01
    key = (map_key, image.content_hash, state.window, state.view, nearest)
    return _overlay(key, base, source, image.size, state.view, opacity, colormap, grid_shape)


def outlined(
    picture: np.ndarray, mask: np.ndarray | None, size: tuple[int, int], view: View, color: Any
) -> np.ndarray:
    if mask is None or not np.asarray(mask).any():
        return picture
    return render.outline(picture, crop_mask(mask, size, view), color=color)


def grid_caption(
    map_shape: tuple[int, int],
    layer: str | None,
    size: tuple[int, int],
    nearest: bool,
    *,
    stored: bool = False,
) -> str:
    """Where the map's numbers come from: ``computed on a 7×7 grid at layer X, upsampled ...`` (a reference
    map, ``stored``: the grid the bundle keeps its mean map on; a bundle that names no layer says so)."""
    h, w = map_shape
    how = "drawn cell by cell (nearest)" if nearest else "upsampled (bilinear)"
    named = layer not in (None, "", "None")
    if stored:
        where = f"kept on a {w}×{h} grid" + (f" (maps of layer {layer})" if named else "")
    else:
        where = f"computed on a {w}×{h} grid" + (f" at layer {layer}" if named else "")
    return f"{where}, {how} to {size[1]}×{size[0]}"


def panel(
    title: str, picture: np.ndarray, view: View, size: tuple[int, int], *, caption: str | None = None
) -> None:
    """A viewer panel: a zoomed crop travels as PNG (its native pixels exact), the whole image as JPEG."""
    st.markdown(f"**{title}**")
    zoomed = (view.x1 - view.x0, view.y1 - view.y0) != (size[1], size[0])
    st.image(picture, caption=caption, width="stretch", output_format="PNG" if zoomed else "JPEG")


PER_IMAGE_SCALE = (
    "Colours are normalised per image: 0 is the lowest and 1 the highest value of this image's map "
    "(the reference: the mean of such maps), so colours do not compare strengths across images."
)


def _static_chunk(stem: str) -> str | None:
    """The file name of a chunk Streamlit imports lazily, in its static folder (hashed per release)."""
    found = sorted((Path(st.__file__).parent / "static" / "static" / "js").glob(f"{stem}.*.js"))
    return found[0].name if len(found) == 1 else None


@functools.cache
def _chart_chunk() -> str | None:
    """The file name of Streamlit's plotly chunk in its static folder (hashed per release), or None."""
    return _static_chunk("PlotlyChart")


@functools.cache
def _preload_chunks() -> tuple[str, ...]:
    """The chunks to preload, in order: plotly (the drawing chart, Feature maps' and the other pages' charts),
    then the dataframe grid's (st.dataframe: Feature maps, Compare models, Consistency, Dataset check), then
    st.metric's and st.segmented_control's (small; Feature maps). Since the Similarity page draws none of
    them, the first of those pages a reader opened after it paid ~1.6 MB of grid JavaScript to fetch, parse
    and run: the Feature maps switch took 0.85-1.04 s the first time in a tab against 0.37 s the second."""
    stems = ("DataFrame", "Metric", "ButtonGroup")
    return tuple(c for c in (_chart_chunk(), *map(_static_chunk, stems)) if c is not None)


# Runs once per browser tab: once the app is quiet (no run, every picture decoded) for QUIET ms, import the
# chunks one after the other the way Streamlit's own code does (same URL, so the same module), when the
# browser is idle.
_PRELOAD_JS = """<script>
(() => {
  if (window.__preloadCharts) return;
  window.__preloadCharts = 'waiting';
  const QUIET = %(quiet)d;
  let quietSince = null;
  const timer = setInterval(() => {
    const app = document.querySelector('[data-testid="stApp"]');
    const quiet = !!app && app.getAttribute('data-test-script-state') === 'notRunning' &&
      Array.from(app.querySelectorAll('img')).every((i) => i.complete && i.naturalWidth > 0);
    const now = performance.now();
    if (!quiet) { quietSince = null; return; }
    if (quietSince === null) quietSince = now;
    if (now - quietSince < QUIET) return;
    clearInterval(timer);
    const index = document.querySelector('script[type="module"][src*="/static/js/index."]');
    if (!index) { window.__preloadCharts = 'no index'; return; }
    const chunks = %(chunks)s;
    const load = () => {
      window.__preloadCharts = 'loading';
      const next = (p, c) => p.then(() => import(new URL('./' + c, index.src).href));
      chunks.reduce(next, Promise.resolve()).then(
        () => { window.__preloadCharts = 'done'; }, () => { window.__preloadCharts = 'failed'; });
    };
    (window.requestIdleCallback || window.setTimeout)(load);
  }, 100);
})();
</script>"""


def preload_charts(quiet_ms: int = 300) -> None:
    """Load the charting library (plotly, 4.7 MB of JavaScript) and then the dataframe grid's (~1.6 MB) in the
    background once this page is quiet, so the first chart or grid the reader opens (the drawing chart, the
    Feature maps page's) does not wait for them, and the first heatmap is not held back by them either.
    Nothing is drawn; without the chunks, nothing happens."""
    chunks = _preload_chunks()
    if chunks:
        st.html(_PRELOAD_JS % {"quiet": quiet_ms, "chunks": json.dumps(chunks)}, unsafe_allow_javascript=True)


def zoom_css() -> None:
    """Native pixels stay square when the browser enlarges a small crop (no smoothing of what is drawn)."""
    st.html("<style>.st-key-viewer_panels img{image-rendering:pixelated;}</style>")


# ------------------------------------------------------------------------------------------- the region


def store() -> AnnotationStore:
    s = st.session_state.get(_STORE)
    if not isinstance(s, AnnotationStore):
        s = AnnotationStore()
        st.session_state[_STORE] = s
    return s


def regions_from_selection(selection: Any) -> list[Region]:
    """The box and lasso geometry of a plotly selection event (native pixel coordinates) as regions."""
    out: list[Region] = []
    sel = selection or {}
    for box in sel.get("box", []) or []:
        xs, ys = box.get("x") or [], box.get("y") or []
        if len(xs) == 2 and len(ys) == 2:
            out.append(Region.box(xs[0], ys[0], xs[1], ys[1]))
    for lasso in sel.get("lasso", []) or []:
        xs, ys = lasso.get("x") or [], lasso.get("y") or []
        if len(xs) >= 3 and len(xs) == len(ys):
            out.append(Region.polygon(xs, ys))
    return out


def apply_selection(
    annotations: AnnotationStore,
    image: LoadedImage,
    regions: Sequence[Region],
    *,
    replace: bool,
    finding: str,
) -> Annotation | None:
    """Replace the image's annotation with ``regions`` (or add them to it); returns the new annotation."""
    old = annotations.get(image.content_hash)
    keep = () if replace or old is None else old.regions
    imported = None if replace or old is None else old.imported
    new = Annotation(image.content_hash, image.name, image.size, (*keep, *regions), finding, imported)
    annotations.set(new)
    return annotations.get(image.content_hash)


def drawing_figure(base: np.ndarray, view: View, annotation: Annotation | None) -> go.Figure:
    """The windowed crop in native pixel coordinates (box/lasso select draws the region), with the current
    annotation's regions outlined."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(base).save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    oh, ow = view.out
    dx = (view.x1 - view.x0) / ow
    dy = (view.y1 - view.y0) / oh
    fig = go.Figure(
        go.Image(source=uri, x0=view.x0 + dx / 2, dx=dx, y0=view.y0 + dy / 2, dy=dy, hoverinfo="skip")
    )
    # invisible points over the picture: plotly reports a box/lasso only where a trace can be selected
    n = 24
    gx, gy = np.meshgrid(
        view.x0 + (np.arange(n) + 0.5) * (view.x1 - view.x0) / n,
        view.y0 + (np.arange(n) + 0.5) * (view.y1 - view.y0) / n,
    )
    fig.add_trace(
        go.Scatter(
            x=gx.ravel(),
            y=gy.ravel(),
            mode="markers",
            marker={"size": 2, "opacity": 0.0},
            hoverinfo="none",
            showlegend=False,
        )
    )
    for region in annotation.regions if annotation is not None else ():
        pts = np.asarray(region.points)
        style = {"line": {"color": "#00ffff", "width": 2}, "fillcolor": "rgba(0,255,255,0.12)"}
        if region.kind == "box":
            fig.add_shape(type="rect", x0=pts[0, 0], y0=pts[0, 1], x1=pts[1, 0], y1=pts[1, 1], **style)
        else:
            path = "M " + " L ".join(f"{x:.2f},{y:.2f}" for x, y in pts) + " Z"
            fig.add_shape(type="path", path=path, **style)
    fig.update_layout(
        template=PLOT_TEMPLATE,
        dragmode="select",
        height=min(640, max(320, int(560 * oh / max(ow, 1)))),
        margin={"l": 40, "r": 10, "t": 10, "b": 30},
        xaxis={
            "range": [view.x0, view.x1],
            "showgrid": False,
            "zeroline": False,
            "constrain": "domain",
            "fixedrange": True,
        },
        yaxis={
            "range": [view.y1, view.y0],
            "showgrid": False,
            "zeroline": False,
            "scaleanchor": "x",
            "constrain": "domain",
            "fixedrange": True,
        },
        newselection={"line": {"color": "#00ffff", "width": 2}},
        activeselection={"fillcolor": "rgba(0,255,255,0.15)"},
    )
    return fig


REGION_MAX_SIDE = 1024  # a drawn region is compared with the map at the image's size, capped at this side


def region_grid_size(size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the grid a drawn region is measured on: the image's ``size``, longest side at most
    :data:`REGION_MAX_SIDE`."""
    h, w = size
    s = min(1.0, REGION_MAX_SIDE / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def region_grid(map01: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The map (any grid) and the drawn region's mask (the image's size) on :func:`region_grid_size`: the map
    bilinear, the mask nearest (its edges stay where drawn)."""
    gh, gw = region_grid_size((int(mask.shape[0]), int(mask.shape[1])))
    m = cv2.resize(np.asarray(map01, np.float32), (gw, gh), interpolation=cv2.INTER_LINEAR)
    k = cv2.resize(mask.astype(np.uint8), (gw, gh), interpolation=cv2.INTER_NEAREST).astype(np.float32)
    return np.ascontiguousarray(m), k


def region_numbers(map01: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The map against the drawn region on :func:`region_grid`: energy inside, the region's area share (what a
    uniform map would put inside), their difference, pointing game, IoU and Dice at the map's Otsu
    threshold."""
    grid_map, grid_mask = region_grid(map01, mask)
    m, k = torch.from_numpy(grid_map)[None], torch.from_numpy(grid_mask)[None]
    energy = float(metrics.energy_in_mask(m, k).values[0])
    area = float(k.mean())
    return {
        "energy inside the region": energy,
        "area share (a uniform map's energy inside)": area,
        "energy inside − area share": energy - area,
        "pointing game (map maximum inside)": float(metrics.pointing_game(m, k).values[0]),
        "IoU at the map's Otsu threshold": float(metrics.iou(m, k, threshold="otsu").values[0]),
        "Dice at the map's Otsu threshold": float(metrics.dice(m, k, threshold="otsu").values[0]),
    }


def reference_metrics(map01: np.ndarray, mask: np.ndarray) -> list[tuple[str, float, str]]:
    """The seven metrics of :data:`~verification.metrics.DEFAULT_METRICS` with the drawn region (1 inside, 0
    outside) as this image's reference map (METHODS §3, E5's per-image reference), at native resolution (on
    :func:`region_grid`: a region a few pixels wide is not lost on a coarse grid), Otsu thresholds for
    IoU/Dice: (label, value, "higher is closer" or "lower is closer")."""
    grid_map, grid_mask = region_grid(map01, mask)
    values = metrics.compute_metrics(grid_map[None], grid_mask[None], threshold="otsu", size=None)
    out = []
    for name in metrics.DEFAULT_METRICS:
        spec = metrics.METRICS[name]
        out.append(
            (
                spec.label,
                float(values[name][0]),
                "higher is closer" if spec.higher_is_better else "lower is closer",
            )
        )
    return out


@st.cache_data(show_spinner=False, max_entries=64)
def _reference_metrics(
    map_key: tuple[Any, ...], annotation_key: str, _map: np.ndarray, _mask: np.ndarray
) -> list[tuple[str, float, str]]:
    return reference_metrics(_map, _mask)


def reference_metrics_for(
    map_key: tuple[Any, ...], map01: np.ndarray, annotation: Annotation
) -> list[tuple[str, float, str]]:
    """:func:`reference_metrics` cached by the map's key and the annotation's content."""
    return _reference_metrics(map_key, annotation.key(), map01, annotation.mask())


@st.cache_data(show_spinner=False, max_entries=64)
def _region_numbers(
    map_key: tuple[Any, ...], annotation_key: str, _map: np.ndarray, _mask: np.ndarray
) -> dict[str, float]:
    return region_numbers(_map, _mask)


def region_numbers_for(
    map_key: tuple[Any, ...], map01: np.ndarray, annotation: Annotation
) -> dict[str, float]:
    """:func:`region_numbers` cached by the map's key and the annotation's content."""
    return _region_numbers(map_key, annotation.key(), map01, annotation.mask())


@st.cache_data(show_spinner=False, max_entries=64)
def _verify_annotated(
    model_hash: str,
    bundle_key: str,
    image_hash: str,
    label: str | None,
    annotation_key: str,
    faithfulness: bool,
    _model: LoadedModel,
    _lock: threading.Lock,
    _bundle: ReferenceBundle,
    _image: LoadedImage,
    _mask: np.ndarray,
    _anatomy: np.ndarray | None,
) -> VerificationReport:
    with _lock:
        return verify(
            _model,
            _bundle,
            [_image],
            [label] if label else None,
            annotations=[_mask],
            anatomy=[_anatomy],
            config=VerdictConfig(faithfulness=faithfulness),
        )


def verify_with_region(
    model: LoadedModel,
    lock: threading.Lock,
    bundle_key: str,
    bundle: ReferenceBundle,
    image: LoadedImage,
    label: str | None,
    annotation: Annotation,
    anatomy: np.ndarray | None,
    *,
    faithfulness: bool,
) -> VerificationReport:
    """This image's verdict numbers with the drawn region as its finding annotation (cached by content)."""
    return _verify_annotated(
        model.content_hash,
        bundle_key,
        image.content_hash,
        label,
        annotation.key(),
        faithfulness,
        model,
        lock,
        bundle,
        image,
        annotation.mask(),
        anatomy,
    )


def seg_bytes(annotation: Annotation, data: bytes, include_identifying: bool) -> bytes:
    return dicom_seg(annotation, data, include_identifying=include_identifying)


def import_file(
    annotations: AnnotationStore, image: LoadedImage, name: str, data: bytes, finding: str
) -> str:
    """Read an uploaded annotation file: a JSON document of this tool (every annotation in it is merged), or
    a mask image of this image's size. Returns what was done, in words."""
    if name.lower().endswith(".json"):
        # all or nothing, within the store's memory limit; one of another size than this image is refused
        imported = annotations.import_json(data, name=name, sizes={image.content_hash: image.size})
        here = " (one for this image)" if image.content_hash in imported else " (none for this image)"
        return f"read {len(imported)} annotation(s) from {name}{here}"
    mask = mask_from_png(data, image.size, name=name)
    annotations.set(Annotation(image.content_hash, image.name, image.size, (), finding, mask))
    return f"read the mask {name} ({int(mask.sum()):,} pixels inside)"


def json_bytes(annotations: AnnotationStore) -> bytes:
    return annotations.to_json().encode("utf-8")


def png_bytes(annotation: Annotation) -> bytes:
    return mask_png(annotation.mask())
