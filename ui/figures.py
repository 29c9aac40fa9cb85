"""Charts and page pictures: the colour scale, probability bars and the plotly figures the pages draw.

Overlays come from the backend's one renderer (:mod:`verification.render`); only chart layout lives here, and
the maps and numbers come from the backend untouched.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import plotly.graph_objects as go

from verification.consistency import CheckpointSeries
from verification.features import ChannelStats, FeatureShiftReport
from verification.render import colorize
from verification.verdict import VerificationReport

DISPLAY_MAX_SIDE = 512  # what the page draws; the backend keeps full resolution
THUMB_MAX_SIDE = 256  # grid thumbnails
_PASS = "#2e9e5b"
_FAIL = "#d9534f"
_BAND = "rgba(46, 158, 91, 0.18)"
PLOT_TEMPLATE = "plotly_dark"


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


def probability_html(class_names: Sequence[str], probs: np.ndarray, *, rejected: str | None = None) -> str:
    """Class probabilities as horizontal bars, highest first; the garbage class (if any) in red."""
    rows = []
    for i in np.argsort(probs)[::-1]:
        name, p = class_names[i], float(probs[i])
        color = _FAIL if name == rejected else "#4c8bf5"
        label = html.escape(name) + (" (rejects the input)" if name == rejected else "")
        rows.append(
            '<div style="display:flex;align-items:center;gap:.6rem;margin:.15rem 0;font-size:.9rem">'
            f'<span style="width:11rem;text-align:right;opacity:.9">{label}</span>'
            '<span style="flex:1;background:rgba(255,255,255,.08);border-radius:3px;height:1rem">'
            f'<span style="display:block;width:{100 * p:.1f}%;height:100%;background:{color};'
            'border-radius:3px"></span></span>'
            f'<span style="width:3.5rem;text-align:right">{p:.1%}</span></div>'
        )
    return "".join(rows)


def styled(fig: go.Figure, *, title: str, height: int, bottom: int = 10, **layout: object) -> go.Figure:
    """``fig`` in the dashboard's chart style (dark template, title at the left, narrow margins), with
    ``layout`` (axes, legend, bar mode) on top."""
    fig.update_layout(
        template=PLOT_TEMPLATE,
        title={"text": title, "x": 0.01},
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": bottom},
        **layout,
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
    return styled(fig, title=title, height=280, barmode="overlay")


def lines(
    x: Sequence[float] | Sequence[str],
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
    return styled(
        fig,
        title=title,
        height=320,
        xaxis={"title": x_title},
        yaxis={"title": y_title, "range": list(y_range) if y_range else None},
    )


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
    return styled(fig, title=title, height=300, barmode="group", yaxis={"title": y_title})


def checkpoint_charts(series: CheckpointSeries, method: str) -> tuple[go.Figure, go.Figure]:
    """C-Score per class for one method across checkpoints, and beside it AUC and accuracy (with warnings)."""
    names = [s.name for s in series.checkpoints]
    per_class: dict[str, list[float]] = {}
    for cls in series.class_names:
        by_t = {
            r.checkpoint_index: r.c_score for r in series.rows if r.method == method and r.class_name == cls
        }
        per_class[cls] = [by_t.get(s.index, float("nan")) for s in series.checkpoints]
    left = lines(
        names,
        per_class,
        title=f"C-Score per class — {method}",
        y_title="C-Score",
        x_title="checkpoint",
        y_range=(0.0, 1.0),
    )
    for w in series.warnings:
        if w.method == method:
            y = w.c_score if np.isfinite(w.c_score) else 0.0
            left.add_annotation(
                x=w.checkpoint,
                y=y,
                text="⚠",
                showarrow=True,
                arrowcolor=_FAIL,
                font={"color": _FAIL, "size": 16},
                hovertext=w.message(),
            )
    right = lines(
        names,
        {
            "AUC (macro, one-vs-rest)": [s.auc for s in series.checkpoints],
            "accuracy": [s.accuracy for s in series.checkpoints],
        },
        title="AUC and accuracy",
        y_title="score",
        x_title="checkpoint",
        y_range=(0.0, 1.0),
    )
    return left, right


def per_image_charts(report: VerificationReport) -> list[go.Figure]:
    """Per number measured on each image (``E3.outside_energy``, ...), its distribution by predicted class
    over the assessable images."""
    assessed = [im for im in report.images if im.assessable]
    keys = sorted({k for im in assessed for k in im.values})
    figs = []
    for key in keys:
        by_class: dict[str, list[float]] = {}
        for im in assessed:
            v = im.values.get(key)
            if v is not None:
                by_class.setdefault(im.predicted or "—", []).append(float(v))
        if by_class:
            figs.append(
                histogram({c: np.asarray(v) for c, v in by_class.items()}, title=f"{key} by predicted class")
            )
    return figs


def activation_grid(
    acts: np.ndarray, *, columns: int = 8, max_channels: int = 32, tile: int = 96
) -> np.ndarray:
    """The first channels of an (C, h, w) activation as one RGB picture, each tile min-max scaled on its own
    (what a channel responds to, not how strongly) and drawn with the viridis colormap."""
    chans = acts[:max_channels]
    rows = int(np.ceil(len(chans) / columns))
    gap = 2
    out = np.zeros((rows * (tile + gap), columns * (tile + gap), 3), np.uint8)
    for i, a in enumerate(chans):
        lo, hi = float(a.min()), float(a.max())
        norm = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        pic = colorize(
            cv2.resize(norm.astype(np.float32), (tile, tile), interpolation=cv2.INTER_NEAREST), "viridis"
        )
        r, c = divmod(i, columns)
        out[r * (tile + gap) : r * (tile + gap) + tile, c * (tile + gap) : c * (tile + gap) + tile] = pic
    return out


def channel_stat_chart(stats: ChannelStats) -> go.Figure:
    """Per channel: the reference set's mean ± 2 std as a band, this image's value as a point (red if out)."""
    lo, hi = stats.band()
    outside = stats.outside()
    x = list(range(len(stats.image)))
    fig = go.Figure()
    fig.add_trace(
        go.Bar(x=x, y=hi - lo, base=lo, marker_color=_BAND, width=0.8, hoverinfo="skip", name="ref ± 2σ")
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=stats.image,
            mode="markers",
            marker={"size": 6, "color": [_FAIL if o else _PASS for o in outside]},
            name="this image",
            hovertemplate="channel %{x}: %{y:.3f}<extra></extra>",
        )
    )
    return styled(
        fig,
        title=f"{stats.layer} · channel {stats.stat} ({int(outside.sum())} of {len(x)} outside ±2σ)",
        height=260,
        showlegend=False,
        xaxis={"title": "channel"},
    )


def feature_shift_chart(report: FeatureShiftReport, highlight: int | None = None) -> go.Figure:
    """Shift score against structure similarity for every image, with the reference thresholds."""
    fig = go.Figure(
        go.Scatter(
            x=report.score,
            y=report.structure_ssim,
            mode="markers",
            customdata=list(report.names),
            marker={
                "size": [14 if i == highlight else 9 for i in range(len(report.names))],
                "color": [_FAIL if f else _PASS for f in report.flagged],
                "line": {
                    "width": [2 if i == highlight else 0 for i in range(len(report.names))],
                    "color": "#fff",
                },
            },
            hovertemplate="%{customdata}<br>shift %{x:.2f}, structure SSIM %{y:.3f}<extra></extra>",
        )
    )
    fig.add_vline(x=report.score_max, line_dash="dash", annotation_text="shift threshold")
    fig.add_hline(y=report.ssim_min, line_dash="dash", annotation_text="structure threshold")
    return styled(
        fig,
        title="Early-layer shift per image (red: flagged)",
        height=360,
        xaxis={"title": "shift score: mean |z| of channel statistics (lower is closer)"},
        yaxis={"title": "structure SSIM with the reference (higher is closer)"},
    )
