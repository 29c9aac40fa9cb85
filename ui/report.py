"""The dashboard's self-contained HTML report: one file that opens offline.

Pictures are embedded as base64 PNG, plotly's JavaScript is inlined once (``include_plotlyjs=True`` on the
first chart) and every later chart reuses it; no request leaves the file. No Streamlit here: the Export page
gathers the numbers and pictures and this module only lays them out.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from verification.reference import VerificationReport

# The CLI's report helpers (one <img> with base64 PNG, one key/value table) serve this report too.
from verification.report import img_tag, kv_table


@dataclass(frozen=True)
class GalleryRow:
    """One image in the report: the picture, its heatmap overlay, its class reference overlay (if any)."""

    name: str
    image: np.ndarray = field(repr=False)
    overlay: np.ndarray = field(repr=False)
    reference: np.ndarray | None = field(repr=False)
    caption: str


_CSS = """
body{font-family:system-ui,sans-serif;background:#0e1117;color:#e6e6e6;margin:2rem;}
h1,h2{font-weight:600} h2{margin-top:2.2rem;border-bottom:1px solid #333;padding-bottom:.3rem}
.verdict{padding:1rem 1.2rem;border-radius:8px;font-size:1.1rem;margin:1rem 0}
.ok{background:#173d2a;border:1px solid #2e9e5b}.bad{background:#47191b;border:1px solid #d9534f}
.warn{background:#4a3b12;border:1px solid #c99a2e;padding:.5rem .8rem;border-radius:6px;margin:.4rem 0}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
td,th{border:1px solid #333;padding:.25rem .5rem;text-align:right} th{background:#1b1f2a}
td:first-child,th:first-child{text-align:left}
.gallery{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:.6rem;margin-bottom:1.2rem}
.gallery figure{margin:0} .gallery img{width:100%;image-rendering:auto;border-radius:4px}
figcaption{font-size:.8rem;opacity:.8} .charts{display:grid;grid-template-columns:repeat(2,minmax(0,1fr))}
.kv th,.kv td{text-align:left}
"""


def render_html(
    *,
    title: str,
    report: VerificationReport,
    table: pd.DataFrame,
    charts: Sequence[go.Figure],
    gallery: Sequence[GalleryRow],
    provenance: Mapping[str, Mapping[str, object]],
    colorbar: str = "",
) -> str:
    """The report as one HTML document (UTF-8 text)."""
    summary = report.summary()
    verdict_class = "ok" if report.suitable else "bad"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Generated {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} · works offline</p>",
        f'<div class="verdict {verdict_class}"><b>{html.escape(report.verdict.upper())}</b> — '
        f"{html.escape(report.text())}</div>",
    ]
    parts.extend(f'<div class="warn">{html.escape(w)}</div>' for w in report.warnings)
    numbers = {
        "images": summary["images"],
        "flagged images": f"{summary['flagged']} ({summary['flagged_share']:.1%})",
        "unsuitable above": f"{summary['max_flagged_share']:.0%} flagged",
        "image flagged when": f"≥ {summary['min_flags']} of {len(report.metrics)} metrics outside their band",
        "mean metrics flagged per image": f"{summary['mean_flags_per_image']:.2f}",
        "accuracy (labelled)": "—" if summary["accuracy"] is None else f"{summary['accuracy']:.1%}",
    }
    numbers.update({f"median {m}": f"{v:.3f}" for m, v in summary["metric_medians"].items()})
    numbers.update({f"flag rate {m}": f"{v:.1%}" for m, v in summary["metric_flag_rates"].items()})
    parts += ["<h2>The numbers behind the verdict</h2>", kv_table(numbers)]

    if gallery:
        parts.append("<h2>Images, attention and reference</h2>")
        parts.append(colorbar)
        for row in gallery:
            ref = (
                img_tag(row.reference, f"reference for {row.name}")
                if row.reference is not None
                else "<p>(no reference for this class)</p>"
            )
            name = html.escape(row.name)
            parts.append(
                '<div class="gallery">'
                f"<figure>{img_tag(row.image, row.name)}<figcaption>{name}</figcaption></figure>"
                f"<figure>{img_tag(row.overlay, 'attention ' + row.name)}"
                f"<figcaption>{html.escape(row.caption)}</figcaption></figure>"
                f"<figure>{ref}<figcaption>class reference</figcaption></figure></div>"
            )

    if charts:
        parts.append("<h2>Metrics against the calibration bands</h2><div class='charts'>")
        for i, fig in enumerate(charts):
            parts.append(
                "<div>"
                + fig.to_html(full_html=False, include_plotlyjs=i == 0, config={"displaylogo": False})
                + "</div>"
            )
        parts.append("</div>")

    parts += [
        "<h2>Per image</h2>",
        table.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="—", border=0),
        "<h2>Provenance</h2>",
    ]
    for section, rows in provenance.items():
        parts += [f"<h3>{html.escape(section)}</h3>", kv_table(rows)]
    parts.append("</body></html>")
    return "\n".join(parts)
