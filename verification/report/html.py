"""The one self-contained HTML report of a verification result.

``render_report`` turns a :class:`~verification.verdict.VerificationReport` (or its ``to_document()`` JSON, as
written by ``python -m verification verify --json`` and offered by the dashboard) into one HTML file that
works offline: the verdict per model and per class with the line that decided it, every evidence line in plain
words with its numbers, thresholds and calibration and a band chart (inline SVG, the geometry of
:mod:`verification.report.charts`), the images that could not be assessed, the per-image "why"
(:mod:`verification.verdict.explain` for the example images), example maps beside the class references (JPEG
at display size, base64, drawn by :mod:`verification.render`), warnings and provenance, and the time the
report was made. No script.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from verification.render import heat, png_bytes
from verification.report.charts import Band, bands, chart_number, status_hex, ticks
from verification.report.content import (
    CLASS_COLUMNS,
    accuracy_text,
    as_report,
    class_rows,
    example_sentence,
    made_now,
    unit,
)
from verification.report.pictures import REFERENCE_SIDE, example_pictures, jpeg_bytes

if TYPE_CHECKING:
    from verification.verdict import VerificationReport

__all__ = ["band_svg", "img_tag", "kv_table", "render_report"]


def img_tag(rgb: np.ndarray, alt: str, *, fmt: str = "jpeg") -> str:
    """An ``<img>`` with the picture inline (JPEG by default; ``fmt="png"`` for lossless)."""
    raw = png_bytes(rgb) if fmt == "png" else jpeg_bytes(rgb)
    data = base64.b64encode(raw).decode("ascii")
    mime = "image/png" if fmt == "png" else "image/jpeg"
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{data}">'


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
svg.band{display:block;margin:.5rem 0 1rem;max-width:100%;height:auto}.made{color:#555;font-size:.85rem}
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


def band_svg(rows: Sequence[Band], *, width: int = 720) -> str:
    """An inline SVG band chart: one row per class; the passing side of the threshold shaded green and the
    failing side red, the healthy models' edge dashed, the threshold a dark bar, this run's value a dot with
    its interval; every mark labelled with its number."""
    if not rows:
        return ""
    left, right, row_h, top = 110, 190, 54, 22
    lo, hi = rows[0].axis
    plot_w = width - left - right
    height = top + row_h * len(rows) + 26

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    def vline(v: float, y1: float, y2: float, attrs: str, title: str | None = None) -> str:
        """A vertical line at value ``v`` (with a hover title when given)."""
        end = "/>" if title is None else f"><title>{title}</title></line>"
        return f'<line x1="{x(v):.1f}" y1="{y1}" x2="{x(v):.1f}" y2="{y2}" {attrs}{end}'

    out = [
        f'<svg class="band" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(rows[0].line)} band chart">',
        "<style>text{font:11px system-ui,sans-serif;fill:#333}.lab{font-size:10px}</style>",
    ]
    for k, b in enumerate(rows):
        y0 = top + k * row_h
        mid = y0 + 16
        sides = b.sides(left, left + plot_w, x)
        if sides is not None:
            for (a, z), fill, what in zip(sides, ("#e3f4e8", "#fbe4e4"), ("passing side", "failing side")):
                out.append(
                    f'<rect x="{a:.1f}" y="{y0 + 6}" width="{max(z - a, 0):.1f}" height="20" '
                    f'fill="{fill}"><title>{what}</title></rect>'
                )
        else:
            out.append(
                f'<rect x="{left}" y="{y0 + 6}" width="{plot_w}" height="20" fill="#f3f3f3">'
                "<title>no threshold</title></rect>"
            )
        out.append(f'<text x="{left - 8}" y="{mid + 4}" text-anchor="end">{html.escape(b.class_name)}</text>')
        if b.healthy is not None:
            h0, h1 = x(b.healthy[0]), x(b.healthy[1])
            out.append(
                f'<rect x="{h0:.1f}" y="{y0 + 11}" width="{max(h1 - h0, 2):.1f}" height="10" fill="#2e7d32" '
                f'fill-opacity="0.35"><title>healthy models {chart_number(b.healthy[0])} to '
                f"{chart_number(b.healthy[1])}</title></rect>"
            )
        if b.healthy_edge is not None:
            out.append(
                vline(
                    b.healthy_edge, y0 + 4, y0 + 28,
                    'stroke="#2e7d32" stroke-dasharray="3,2" stroke-width="1.5"',
                    f"healthy edge (worst healthy model) {chart_number(b.healthy_edge)}",
                )
            )  # fmt: skip
        for j, words in enumerate(b.legend()):
            out.append(
                f'<text class="lab" x="{left + plot_w + 8}" y="{y0 + 14 + 12 * j}" fill="#2e7d32">'
                f"{words}</text>"
            )
        if b.threshold is not None:
            out.append(
                vline(b.threshold, y0 + 2, y0 + 30, 'stroke="#222" stroke-width="2.5"')
                + f'<text class="lab" x="{x(b.threshold):.1f}" y="{y0 + 1}" text-anchor="middle">'
                f"{b.threshold_words()}</text>"
            )
        colour = status_hex(b.status)
        if b.low is not None and b.high is not None:
            out.append(
                f'<line x1="{x(b.low):.1f}" y1="{mid}" x2="{x(b.high):.1f}" y2="{mid}" stroke="{colour}" '
                'stroke-width="2"/>'
            )
        v = x(b.value)
        out.append(
            f'<circle cx="{v:.1f}" cy="{mid}" r="5.5" fill="{colour}"><title>this run: {b.value:.4g}'
            + ("" if b.low is None or b.high is None else f" [{b.low:.4g}, {b.high:.4g}]")
            + "</title></circle>"
            f'<text class="lab" x="{v:.1f}" y="{y0 + 38}" text-anchor="middle" fill="{colour}">'
            f"{b.value_words()}</text>"
        )
    base = top + row_h * len(rows) + 2
    out.append(f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#999"/>')
    for t in ticks(lo, hi):
        out.append(
            vline(t, base, base + 4, 'stroke="#999"')
            + f'<text class="lab" x="{x(t):.1f}" y="{base + 15}" text-anchor="middle">{t:.3g}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _gallery(report: Any, displays: Mapping[str, np.ndarray] | None) -> list[str]:
    parts = []
    for ex, picture, ref_pic in example_pictures(report, displays):
        caption = "attention over the image" if picture is not None else "attention (image not found)"
        shown = picture if picture is not None else heat(np.asarray(ex.map, np.float32), size=REFERENCE_SIDE)
        ref_tag = (
            img_tag(ref_pic, f"reference {ex.class_name}")
            if ref_pic is not None
            else "<p>(no reference map for this class)</p>"
        )
        parts.append(
            f"<figure>{img_tag(shown, ex.image)}<figcaption>{html.escape(Path(ex.image).name)} · {caption}"
            f"<br>{html.escape(example_sentence(report, ex))}</figcaption></figure>"
            f"<figure>{ref_tag}<figcaption>"
            + (
                f"reference map of {html.escape(ex.class_name)}"
                if ex.class_name
                else "predicted class outside the bundle: no reference"
            )
            + "</figcaption></figure>"
        )
    return parts


def render_report(
    report: VerificationReport | Mapping[str, Any],
    *,
    title: str = "Attention-map verification",
    displays: Mapping[str, np.ndarray] | None = None,
    made: str | None = None,
) -> str:
    """One offline HTML document from a :class:`~verification.verdict.VerificationReport` or its document.
    ``displays`` maps image names to uint8 pictures (else the images are read from their paths); ``made``
    the time the report is made (**default** now, :func:`made_now`), shown beside the time of the verdict."""
    from verification.verdict import STATUS_LABELS

    made = made or made_now()
    report = as_report(report)
    acc = accuracy_text(report)
    decided = f" — decided by {report.deciding_line}" if report.deciding_line else ""
    numbers = {
        "report made": made,
        "verdict computed": report.provenance.get("created", "—"),
        "verdict": report.label,
        "accuracy": acc,
        "images": report.n_images,
        "not assessable (input gate)": report.n_not_assessable,
        "unreadable": len(report.errors),
        "assessable images a class needs": report.config.min_images,
    }
    line_parts = []
    for ln in report.lines:
        votes = "votes" if ln.votes else "does not vote"
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
            + (band_svg(bands(ln)) if ln.key != "E0" else "")
        )
    not_ok = [[im.name, im.not_assessable_reason] for im in report.images if not im.assessable]
    from verification.verdict.explain import explain_image, thresholds

    limits = thresholds(report)
    image_rows = [
        [
            im.name,
            im.label,
            im.predicted,
            max(im.probabilities) if im.probabilities else None,
            "yes" if im.assessable else "no",
            explain_image(im, limits=limits).sentence,  # the plain sentence, from the image's numbers
        ]
        for im in report.images
    ]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="made">Report made {html.escape(made)} · verdict computed '
        f"{html.escape(str(report.provenance.get('created', '—')))}</p>",
        f'<div class="verdict {report.verdict}"><b>{html.escape(report.label)}</b>{html.escape(decided)}: '
        f"{html.escape(report.reason)}<br>accuracy {html.escape(acc)}</div>",
        *(f'<div class="warn">What is missing: {html.escape(m)}</div>' for m in report.missing),
        *(f'<div class="warn">{html.escape(w)}</div>' for w in report.warnings),
        f"<h2>Verdict per {unit(report)}</h2>",
        _table(CLASS_COLUMNS, class_rows(report), [c.verdict for c in report.classes]),
        "<h2>The numbers</h2>",
        kv_table(numbers),
        "<h2>Evidence lines</h2>",
        *line_parts,
        "<h2>Example maps and their class reference</h2>",
        '<div class="gallery">',
        *_gallery(report, displays),
        "</div>",
    ]
    if not_ok:
        parts += ["<h2>Images that could not be assessed</h2>", _table(["image", "why"], not_ok)]
    parts += [
        "<h2>Per image</h2>",
        _table(["image", "label", "predicted", "probability", "assessable", "in words"], image_rows),
    ]
    if report.errors:
        parts += ["<h2>Unreadable images</h2>", kv_table(dict(report.errors))]
    parts += ["<h2>Provenance</h2>", kv_table(dict(report.provenance)), "</body></html>"]
    return "\n".join(parts)
