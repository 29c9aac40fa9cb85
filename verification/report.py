"""Pictures and the self-contained HTML report.

``overlay_png`` draws a map over an image (used by ``python -m verification cam``). ``render_report`` turns a
verification result into one HTML file that works offline: PNG images embedded as base64, plotly's JavaScript
inlined, the verdict with the numbers behind it, the per-image table and the provenance.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from verification.errors import BundleError

__all__ = ["heat_rgb", "overlay_png", "overlay_rgb", "png_bytes", "render_report"]


def overlay_rgb(
    display: np.ndarray, cam: np.ndarray, *, alpha: float = 0.45, max_side: int = 1024
) -> np.ndarray:
    """Blend a [0, 1] map (h, w) as a JET heat map over ``display`` (uint8 (H, W) or (H, W, 3)); uint8 RGB.

    The map is resized (bilinear) to the image, which is first shrunk so its longest side is ≤ ``max_side``.
    """
    image = np.asarray(display)
    if image.dtype != np.uint8:
        raise ValueError(f"display image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"display image must be (H, W) or (H, W, 3), got {image.shape}")
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    heat = cv2.resize(
        np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0), (w, h), interpolation=cv2.INTER_LINEAR
    )
    colour = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colour.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode a uint8 (H, W) or (H, W, 3) array as PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def overlay_png(display: np.ndarray, cam: np.ndarray, *, alpha: float = 0.45) -> bytes:
    """PNG bytes of :func:`overlay_rgb`."""
    return png_bytes(overlay_rgb(display, cam, alpha=alpha))


def heat_rgb(cam: np.ndarray, *, size: int = 256) -> np.ndarray:
    """A [0, 1] map (h, w) as a JET picture, resized (bilinear) to ``size`` × ``size``; uint8 RGB."""
    heat = cv2.resize(np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0), (size, size))
    colour = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)


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
.warn{background:#fff4d6;border:1px solid #c99a2e;padding:.4rem .7rem;border-radius:4px;margin:.3rem 0}
table{border-collapse:collapse;font-size:.8rem}
td,th{border:1px solid #ddd;padding:.2rem .45rem;text-align:right}
th{background:#f3f3f3}.kv th,.kv td{text-align:left}
.gallery{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:.6rem}
.gallery figure{margin:0}.gallery img{width:100%;border-radius:3px}figcaption{font-size:.75rem}
"""


def _charts(doc: Mapping[str, Any]) -> list[str]:
    import plotly.graph_objects as go

    summary = doc["summary"]
    metrics = list(doc["metrics"])
    rows = doc["rows"]
    rates = go.Figure(go.Bar(x=metrics, y=[summary["metric_flag_rates"][m] for m in metrics]))
    rates.update_layout(
        title="Share of images flagged per metric", yaxis={"tickformat": ".0%", "range": [0, 1]}
    )
    counts = np.bincount([int(r["n_flags"]) for r in rows], minlength=len(metrics) + 1)
    hist = go.Figure(go.Bar(x=list(range(len(counts))), y=counts.tolist()))
    hist.add_vline(x=summary["min_flags"] - 0.5, line_dash="dash", annotation_text="flagged from here")
    hist.update_layout(
        title="Metrics outside their band, per image", xaxis_title="metrics flagged", yaxis_title="images"
    )
    values = go.Figure()
    for m in metrics:
        values.add_trace(go.Box(y=[r[m] for r in rows], name=m, boxpoints="outliers"))
    values.update_layout(title="Metric values (per image)", showlegend=False)
    return [
        fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
        for fig in (rates, hist, values)
    ]


def _gallery(doc: Mapping[str, Any]) -> list[str]:
    from verification.errors import VerificationError
    from verification.io.images import load_image

    by_image = {r["image"]: r for r in doc["rows"]}
    parts = []
    for example in doc.get("examples", []):
        name = str(example["image"])
        cam = np.asarray(example["map"], dtype=np.float32)
        row = by_image.get(name, {})
        try:
            picture = overlay_rgb(load_image(name).display, cam, max_side=512)
            caption = "attention over the image"
        except (VerificationError, OSError):
            picture = heat_rgb(cam)  # the image has moved since the run: the map alone
            caption = "attention (image not found)"
        ref_name = row.get("reference")
        reference = doc.get("references", {}).get(ref_name)
        ref_tag = (
            img_tag(heat_rgb(np.asarray(reference, dtype=np.float32)), f"reference {ref_name}")
            if reference is not None
            else "<p>(no reference for this class)</p>"
        )
        title = f"{Path(name).name}: {example['n_flags']} of {len(doc['metrics'])} metrics flagged"
        parts.append(
            f"<figure>{img_tag(picture, name)}<figcaption>{html.escape(title)} · {caption}; predicted "
            f"{html.escape(str(row.get('predicted')))}</figcaption></figure>"
            f"<figure>{ref_tag}<figcaption>reference of {html.escape(str(ref_name))}</figcaption></figure>"
        )
    return parts


def render_report(doc: Mapping[str, Any], *, title: str = "Attention-map verification") -> str:
    """One offline HTML document from a verify result (the JSON written by ``python -m verification verify
    --json``): the verdict and the numbers behind it, charts (plotly, JavaScript inlined), the most flagged
    images with their class references (PNG, base64), the per-image table, errors, warnings, provenance."""
    import plotly.offline

    if doc.get("schema") != "verification.cli.verify":
        raise BundleError("not a verify result (expected the JSON written by 'verify --json')")
    summary = doc["summary"]
    verdict = str(doc["verdict"])
    numbers = {
        "images verified": summary["images"],
        "flagged images": f"{summary['flagged']} ({100 * summary['flagged_share']:.1f} %)",
        "unsuitable above": f"{100 * summary['max_flagged_share']:.0f} % flagged",
        "an image is flagged when": f"≥ {summary['min_flags']} of {len(doc['metrics'])} metrics out of band",
        "mean metrics flagged per image": summary["mean_flags_per_image"],
        "accuracy (labelled inputs)": summary["accuracy"],
        "unreadable images (left out)": len(doc.get("errors", [])),
    }
    metric_rows = {
        m: f"flag rate {100 * summary['metric_flag_rates'][m]:.1f} %, "
        f"median {_fmt(summary['metric_medians'][m])}, "
        f"{'higher' if doc['higher_is_better'][m] else 'lower'} is better"
        for m in doc["metrics"]
    }
    table_cols = ["image", "label", "predicted", "reference", *doc["metrics"], "n_flags", "flagged"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table_cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in table_cols) + "</tr>"
        for r in doc["rows"]
    )
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>",
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<div class="verdict {verdict}"><b>{html.escape(verdict.upper())}</b> — '
        f"{html.escape(doc['text'])}</div>",
        *(f'<div class="warn">{html.escape(w)}</div>' for w in doc.get("warnings", [])),
        "<h2>The numbers behind the verdict</h2>",
        kv_table(numbers),
        "<h3>Per metric</h3>",
        kv_table(metric_rows),
        "<h2>Charts</h2>",
        *_charts(doc),
        "<h2>Most flagged images and their class reference</h2>",
        '<div class="gallery">',
        *_gallery(doc),
        "</div>",
        "<h2>Per image</h2>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
    ]
    if doc.get("errors"):
        parts += ["<h2>Unreadable images</h2>", kv_table({e["image"]: e["error"] for e in doc["errors"]})]
    provenance = dict(doc.get("provenance", {}))
    parts += ["<h2>Provenance</h2>", kv_table(provenance), "</body></html>"]
    return "\n".join(parts)
