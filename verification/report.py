"""The one self-contained HTML report of a verification result.

``render_report`` turns a :class:`~verification.verdict.VerificationReport` (or its ``to_document()`` JSON, as
written by ``python -m verification verify --json`` and offered by the dashboard) into one HTML file that
works
offline: the verdict per model and per class with the line that decided it, every evidence line in plain words
with its numbers, thresholds and calibration, the images that could not be assessed, the per-image "why",
example maps beside the class references (PNG, base64, drawn by :mod:`verification.render`), plotly charts
(JavaScript inlined), warnings and provenance. ``overlay_png`` is the PNG of an overlay (used by ``cam``).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from verification.render import heat, overlay, png_bytes

__all__ = ["img_tag", "kv_table", "overlay_png", "render_report"]


def overlay_png(display: np.ndarray, cam: np.ndarray, *, alpha: float = 0.45) -> bytes:
    """PNG bytes of :func:`verification.render.overlay`."""
    return png_bytes(overlay(display, cam, opacity=alpha))


def img_tag(rgb: np.ndarray, alt: str) -> str:
    data = base64.b64encode(png_bytes(rgb)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def kv_table(rows: Mapping[str, Any]) -> str:
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items()
    )
    return f'<table class="kv">{body}</table>'


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1d1d1f;max-width:1200px}
h2{margin-top:2rem;border-bottom:1px solid #ccc;padding-bottom:.2rem}
.verdict{padding:1rem;border-radius:6px;font-size:1.1rem}
.suitable{background:#e3f4e8;border:1px solid #2e9e5b}.unsuitable{background:#fbe4e4;border:1px solid #d9534f}
.cannot_verify{background:#fff4d6;border:1px solid #c99a2e}
.warn{background:#fff4d6;border:1px solid #c99a2e;padding:.4rem .7rem;border-radius:4px;margin:.3rem 0}
table{border-collapse:collapse;font-size:.8rem}
td,th{border:1px solid #ddd;padding:.2rem .45rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}
.pass{color:#2e7d32}.fail{color:#c62828;font-weight:bold}.inconclusive{color:#b26a00}
.gallery{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:.6rem}
.gallery figure{margin:0}.gallery img{width:100%;border-radius:3px}figcaption{font-size:.75rem}
"""


def _esc(v: Any) -> str:
    return html.escape(_fmt(v))


def _table(cols: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        f"<tr class='{(classes or [''] * len(rows))[i]}'>"
        + "".join(f"<td>{_esc(v)}</td>" for v in r)
        + "</tr>"
        for i, r in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _charts(report: Any) -> list[str]:
    import plotly.graph_objects as go

    out = []
    for ln in report.lines:
        pts = [c for c in ln.per_class if c.value is not None]
        if not pts or ln.key == "E0":
            continue
        fig = go.Figure()
        fig.add_trace(
            go.Scatter(
                x=[c.class_name for c in pts],
                y=[c.value for c in pts],
                mode="markers",
                name="measured",
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [(c.high - c.value) if c.high is not None else 0 for c in pts],
                    "arrayminus": [(c.value - c.low) if c.low is not None else 0 for c in pts],
                },
            )
        )
        thr = [c for c in pts if c.threshold is not None]
        if thr:
            fig.add_trace(
                go.Scatter(
                    x=[c.class_name for c in thr],
                    y=[c.threshold for c in thr],
                    mode="markers",
                    marker={"symbol": "line-ew-open", "size": 30},
                    name="threshold",
                )
            )
        fig.update_layout(title=f"{ln.key} {ln.name} per class (95 % interval, threshold)", height=300)
        out.append(fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False}))
    return out


def _gallery(report: Any, displays: Mapping[str, np.ndarray] | None) -> list[str]:
    from verification.errors import VerificationError
    from verification.io.images import load_image

    parts = []
    for ex in report.examples:
        cam = np.asarray(ex.map, dtype=np.float32)
        picture = None
        if displays is not None and ex.image in displays:
            picture = overlay(displays[ex.image], cam, max_side=512)
        else:
            try:
                picture = overlay(load_image(ex.image).display, cam, max_side=512)
            except (VerificationError, OSError):
                picture = None
        caption = "attention over the image" if picture is not None else "attention (image not found)"
        picture = picture if picture is not None else heat(cam)
        ref = report.references.get(ex.class_name) if ex.class_name else None
        ref_tag = (
            img_tag(heat(np.asarray(ref, np.float32)), f"reference {ex.class_name}")
            if ref is not None
            else "<p>(no reference map for this class)</p>"
        )
        parts.append(
            f"<figure>{img_tag(picture, ex.image)}<figcaption>{html.escape(Path(ex.image).name)} · {caption}"
            f"<br>{html.escape(ex.note)}</figcaption></figure>"
            f"<figure>{ref_tag}<figcaption>reference map of {html.escape(str(ex.class_name))}"
            "</figcaption></figure>"
        )
    return parts


def render_report(
    report: Any,
    *,
    title: str = "Attention-map verification",
    displays: Mapping[str, np.ndarray] | None = None,
) -> str:
    """One offline HTML document from a :class:`~verification.verdict.VerificationReport` or its document.
    ``displays`` maps image names to uint8 pictures (else the images are read from their paths)."""
    import plotly.offline

    from verification.verdict import STATUS_LABELS, VerificationReport

    if not isinstance(report, VerificationReport):
        report = VerificationReport.from_document(report)
    acc = "n/a (no labels)" if report.accuracy is None else f"{100 * report.accuracy:.1f} %"
    if report.accuracy_interval is not None:
        lo, hi = report.accuracy_interval
        acc += f" (Wilson 95 % {100 * lo:.1f}–{100 * hi:.1f} %)"
    decided = f" — decided by {report.deciding_line}" if report.deciding_line else ""
    numbers = {
        "verdict": report.label,
        "accuracy": acc,
        "images": report.n_images,
        "not assessable (input gate)": report.n_not_assessable,
        "unreadable": len(report.errors),
        "assessable images a class needs": report.config.min_images,
    }
    class_rows = [
        [c.class_name, c.label, c.deciding_line, c.reason, f"{c.n_assessable}/{c.n_images}"]
        for c in report.classes
    ]
    line_parts = []
    for ln in report.lines:
        votes = "votes" if ln.decisive else "does not vote"
        line_parts.append(
            f"<h3>{html.escape(ln.key)} {html.escape(ln.name)}: "
            f"<span class='{ln.status}'>{html.escape(STATUS_LABELS[ln.status])}</span> ({votes})</h3>"
            f"<p>{html.escape(ln.sentence)}</p><p><i>Threshold: {html.escape(ln.calibration)}</i>"
            + (f"; separation from known-bad AUROC {ln.separation:.2f}" if ln.separation is not None else "")
            + "</p>"
            + _table(
                ["class", "status", "value", "95 % interval", "threshold", "images", "why"],
                [
                    [
                        c.class_name,
                        STATUS_LABELS[c.status],
                        c.value,
                        "—" if c.low is None else f"[{c.low:.3f}, {c.high:.3f}]",
                        c.threshold,
                        c.n,
                        c.reason,
                    ]
                    for c in ln.per_class
                ],
                [c.status for c in ln.per_class],
            )
        )
    not_ok = [[im.name, im.not_assessable_reason] for im in report.images if not im.assessable]
    image_rows = [
        [
            im.name,
            im.label,
            im.predicted,
            max(im.probabilities) if im.probabilities else None,
            "yes" if im.assessable else "no",
            im.why,
        ]
        for im in report.images
    ]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>",
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<div class="verdict {report.verdict}"><b>{html.escape(report.label)}</b>{html.escape(decided)}: '
        f"{html.escape(report.reason)}<br>accuracy {html.escape(acc)}</div>",
        *(f'<div class="warn">What is missing: {html.escape(m)}</div>' for m in report.missing),
        *(f'<div class="warn">{html.escape(w)}</div>' for w in report.warnings),
        "<h2>Verdict per class</h2>",
        _table(
            ["class", "verdict", "decided by", "why", "assessable"],
            class_rows,
            [c.verdict for c in report.classes],
        ),
        "<h2>The numbers</h2>",
        kv_table(numbers),
        "<h2>Evidence lines</h2>",
        *line_parts,
        "<h2>Charts</h2>",
        *_charts(report),
        "<h2>Example maps and their class reference</h2>",
        '<div class="gallery">',
        *_gallery(report, displays),
        "</div>",
    ]
    if not_ok:
        parts += ["<h2>Images that could not be assessed</h2>", _table(["image", "why"], not_ok)]
    parts += [
        "<h2>Per image</h2>",
        _table(["image", "label", "predicted", "probability", "assessable", "why"], image_rows),
    ]
    if report.errors:
        parts += ["<h2>Unreadable images</h2>", kv_table(dict(report.errors))]
    parts += ["<h2>Provenance</h2>", kv_table(dict(report.provenance)), "</body></html>"]
    return "\n".join(parts)
