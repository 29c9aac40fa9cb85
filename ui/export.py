"""Assemble the HTML report from the working set (cached: rebuilt only when its inputs change)."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import streamlit as st

from ui import figures, loaders
from ui.report import GalleryRow, render_html
from verification import render
from verification.cam.records import base_provenance
from verification.io.records import LoadedModel


@st.cache_data(show_spinner="Writing the report…", max_entries=8)
def report_html(
    model_hash: str,
    bundle_key: str,
    image_hashes: tuple[str, ...],
    n_gallery: int,
    colormap: str,
    opacity: float,
    _model: LoadedModel,
    _lock: threading.Lock,
    _bundle: loaders.BundleHandle,
    _images: loaders.ImageSet,
    model_label: str,
) -> str:
    """The self-contained report of model A on the working images against the bundle."""
    bundle = _bundle.bundle
    report = loaders.verify_set(_model, _lock, _bundle, _images)
    method = bundle.method or "gradcam"
    layer = bundle.layer or loaders.model_layers(_model.content_hash, _model, _lock)[1]
    gallery = []
    for i, item in enumerate(_images.items[:n_gallery]):
        res = loaders.cam_for(
            _model, _lock, item.image, method=method, layer=layer, target=loaders.TargetKey()
        )
        cls = report.class_names[report.reference_class[i]]
        ref = loaders.reference_map(_bundle, cls)
        verdict = "flagged" if report.flagged[i] else "ok"
        caption = (
            f"{loaders.METHOD_LABELS.get(method, method)} · predicted {cls}"
            + (f" · true {item.label}" if item.label else "")
            + f" · {int(report.n_flags[i])} metrics outside band · {verdict}"
        )
        gallery.append(
            GalleryRow(
                name=item.image.name,
                image=render.fit(item.image.display, 384),
                overlay=render.overlay(
                    item.image.display,
                    res.maps[0],
                    opacity=opacity,
                    colormap=colormap,
                    max_side=figures.DISPLAY_MAX_SIDE,
                ),
                reference=None
                if ref is None
                else render.overlay(
                    item.image.display,
                    ref,
                    opacity=opacity,
                    colormap=colormap,
                    max_side=figures.DISPLAY_MAX_SIDE,
                ),
                caption=caption,
            )
        )
    charts = [*figures.similarity_charts(report, bundle), figures.flag_count_chart(report)]
    provenance: dict[str, Mapping[str, object]] = {
        "Model": {
            "name": model_label,
            "architecture": _model.architecture or "—",
            "format": _model.source_format,
            "sha256": _model.content_hash,
            "task": _model.task,
            "input": f"{_model.in_channels} channel(s), {_model.input_size[0]}×{_model.input_size[1]}",
            "mean / std": f"{list(_model.mean)} / {list(_model.std)}",
            "classes": ", ".join(_model.class_names),
        },
        "Reference bundle": {
            "source": _bundle.label,
            "method / layer": f"{bundle.method} / {bundle.layer}",
            "built with model sha256": bundle.model_hash or "—",
            "created": bundle.created or "—",
            "reference images per class": ", ".join(
                f"{c}: {int(n)}" for c, n in zip(bundle.class_names, bundle.counts)
            ),
            "metrics": ", ".join(bundle.metrics),
            "threshold": bundle.threshold,
        },
        "Images": {
            "set": _images.label,
            "count": len(_images.items),
            "shown above": min(n_gallery, len(_images.items)),
        },
        "Software": base_provenance(),
    }
    return render_html(
        title=f"Attention verification — {model_label}",
        report=report,
        table=loaders.report_table(report),
        charts=charts,
        gallery=gallery,
        provenance=provenance,
        colorbar=figures.colorbar_html(colormap),
    )
