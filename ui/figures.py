"""Pictures and charts: heatmap overlays with their colour scale, and the plotly figures the pages draw.

Only presentation lives here (colour mapping, blending, chart layout); the maps and numbers come from the
backend untouched.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import plotly.graph_objects as go

COLORMAPS: dict[str, int] = {
    "turbo": cv2.COLORMAP_TURBO,
    "jet": cv2.COLORMAP_JET,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "hot": cv2.COLORMAP_HOT,
}
DISPLAY_MAX_SIDE = 512  # what the page draws; the backend keeps full resolution
_PASS = "#2e9e5b"
_FAIL = "#d9534f"
_BAND = "rgba(46, 158, 91, 0.18)"
PLOT_TEMPLATE = "plotly_dark"


def _rgb(display: np.ndarray) -> np.ndarray:
    img = np.asarray(display)
    if img.dtype != np.uint8:
        img = np.clip(img * 255.0 if img.max() <= 1.0 else img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img


def fit(display: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """The display image as RGB uint8, shrunk (area interpolation) to at most ``max_side`` on its long side."""
    img = _rgb(display)
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1.0:
        img = cv2.resize(
            img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    return img


def colorize(map01: np.ndarray, colormap: str) -> np.ndarray:
    """(H, W) in [0, 1] → (H, W, 3) RGB uint8 through one of ``COLORMAPS``."""
    scaled = np.clip(np.nan_to_num(map01, nan=0.0), 0.0, 1.0)
    bgr = cv2.applyColorMap((scaled * 255.0).round().astype(np.uint8), COLORMAPS[colormap])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def heatmap_overlay(display: np.ndarray, map01: np.ndarray, *, opacity: float, colormap: str) -> np.ndarray:
    """The map (resized to the picture) blended over the display image; ``opacity`` 0 shows only the image."""
    base = fit(display)
    h, w = base.shape[:2]
    resized = cv2.resize(map01.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    heat = colorize(resized, colormap).astype(np.float32)
    out = (1.0 - opacity) * base.astype(np.float32) + opacity * heat
    return np.clip(out, 0, 255).astype(np.uint8)


def heatmap_only(map01: np.ndarray, colormap: str, like: np.ndarray) -> np.ndarray:
    """The map alone in colour, at the size the overlay of ``like`` is drawn."""
    h, w = fit(like).shape[:2]
    return colorize(cv2.resize(map01.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR), colormap)


def mask_overlay(
    display: np.ndarray, mask: np.ndarray, *, color: tuple[int, int, int] = (0, 200, 255)
) -> np.ndarray:
    """The display image with a binary mask tinted and outlined."""
    base = fit(display)
    h, w = base.shape[:2]
    m = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    out = base.astype(np.float32)
    out[m] = 0.6 * out[m] + 0.4 * np.array(color, np.float32)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    res = np.clip(out, 0, 255).astype(np.uint8)
    cv2.drawContours(res, contours, -1, color, max(1, w // 256))
    return res


def colorbar_html(colormap: str, *, low: str = "low attention", high: str = "high attention") -> str:
    """A slim horizontal colour scale (0 → 1) matching ``colormap``, as HTML."""
    ramp = colorize(np.linspace(0.0, 1.0, 11, dtype=np.float32)[None, :], colormap)[0]
    stops = ", ".join(f"rgb({r},{g},{b}) {i * 10}%" for i, (r, g, b) in enumerate(ramp.tolist()))
    return (
        '<div style="margin:0.2rem 0 0.6rem 0;font-size:0.8rem;">'
        f'<div style="height:12px;border-radius:3px;background:linear-gradient(to right, {stops});"></div>'
        '<div style="display:flex;justify-content:space-between;opacity:0.85;">'
        f"<span>0 · {html.escape(low)}</span><span>0.5</span><span>{html.escape(high)} · 1</span></div></div>"
    )


def probability_bars(
    class_names: Sequence[str], probs: np.ndarray, *, rejected: str | None = None
) -> go.Figure:
    """Horizontal bars of class probabilities, the garbage class (if any) in red."""
    order = np.argsort(probs)
    colors = [_FAIL if class_names[i] == rejected else "#4c8bf5" for i in order]
    fig = go.Figure(
        go.Bar(
            x=[float(probs[i]) for i in order],
            y=[class_names[i] for i in order],
            orientation="h",
            marker_color=colors,
            text=[f"{probs[i]:.1%}" for i in order],
            textposition="auto",
        )
    )
    fig.update_layout(
        template=PLOT_TEMPLATE,
        height=40 + 28 * len(class_names),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"range": [0, 1], "tickformat": ".0%", "title": "probability"},
    )
    return fig


def metric_chart(
    *,
    label: str,
    names: Sequence[str],
    values: np.ndarray,
    flags: np.ndarray,
    band: tuple[float, float] | None,
    higher_is_better: bool,
) -> go.Figure:
    """One metric over the chosen images: a point per image, the calibration band shaded, flags in red."""
    fig = go.Figure()
    if band is not None and np.all(np.isfinite(band)):
        fig.add_hrect(
            y0=band[0],
            y1=band[1],
            fillcolor=_BAND,
            line_width=0,
            annotation_text="in-distribution band",
            annotation_position="top left",
        )
    fig.add_trace(
        go.Scatter(
            x=list(names),
            y=values,
            mode="markers",
            marker={"size": 11, "color": [_FAIL if f else _PASS for f in flags], "line": {"width": 1}},
            hovertemplate="%{x}<br>" + label + " = %{y:.3f}<extra></extra>",
        )
    )
    direction = "higher is better" if higher_is_better else "lower is better"
    fig.update_layout(
        template=PLOT_TEMPLATE,
        title={"text": f"{label} <span style='font-size:0.8em;opacity:0.7'>({direction})</span>", "x": 0.01},
        height=260,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        showlegend=False,
        xaxis={"showticklabels": len(names) <= 24},
    )
    return fig


def histogram(
    values: Mapping[str, np.ndarray], *, title: str, band: tuple[float, float] | None = None
) -> go.Figure:
    """Overlaid distributions (e.g. one per class or per model) of a metric."""
    fig = go.Figure()
    for name, vals in values.items():
        finite = np.asarray(vals, dtype=float)
        fig.add_trace(go.Histogram(x=finite[np.isfinite(finite)], name=name, opacity=0.7, nbinsx=30))
    if band is not None and np.all(np.isfinite(band)):
        fig.add_vrect(x0=band[0], x1=band[1], fillcolor=_BAND, line_width=0)
    fig.update_layout(
        template=PLOT_TEMPLATE,
        barmode="overlay",
        title={"text": title, "x": 0.01},
        height=280,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


def lines(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    y_title: str,
    x_title: str,
    y_range: tuple[float, float] | None = None,
) -> go.Figure:
    fig = go.Figure()
    for name, ys in series.items():
        fig.add_trace(go.Scatter(x=list(x), y=list(ys), mode="lines+markers", name=name))
    fig.update_layout(
        template=PLOT_TEMPLATE,
        title={"text": title, "x": 0.01},
        height=320,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"title": x_title},
        yaxis={"title": y_title, "range": list(y_range) if y_range else None},
    )
    return fig


def bars(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    y_title: str,
) -> go.Figure:
    fig = go.Figure()
    for name, ys in series.items():
        fig.add_trace(go.Bar(x=list(categories), y=list(ys), name=name))
    fig.update_layout(
        template=PLOT_TEMPLATE,
        barmode="group",
        title={"text": title, "x": 0.01},
        height=300,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        yaxis={"title": y_title},
    )
    return fig
