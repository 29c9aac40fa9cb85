"""Report & export: the self-contained HTML report, the numbers as CSV/JSON, and the demo sample files."""

from __future__ import annotations

import streamlit as st

from ui import export, loaders
from ui.sidebar import workspace
from ui.state import K
from ui.widgets import guard, report_downloads, report_verdict

st.title("Report & export", anchor=False)
ws = workspace(bundle=True)

st.caption(
    "One HTML file with the verdict and the numbers behind it, every metric chart, the images with their "
    "heatmaps and class references, and the provenance (model and bundle hashes, versions). Pictures are "
    "embedded and the charting library is inlined, so it opens offline and can be archived or attached."
)
K.EXPORT_GALLERY.init()
K.COLORMAP.init()
K.OPACITY.init()
n_images = len(ws.images.items)
if K.EXPORT_GALLERY.get() > min(60, n_images):
    K.EXPORT_GALLERY.set(min(60, n_images))
n_gallery = (
    st.slider(
        "Images shown with their heatmaps in the report", 1, min(60, n_images), key=K.EXPORT_GALLERY.name
    )
    if n_images > 1
    else 1
)

report = None
with guard("Verifying the images"), st.spinner("Verifying…"):
    report = loaders.verify_set(ws.model_a.model, ws.model_a.lock, ws.bundle, ws.images)
if report is None:
    st.stop()
report_verdict(report, f"Model {report.verdict}")

with guard("Writing the HTML report"):
    html = export.report_html(
        ws.model_a.model.content_hash,
        ws.bundle.key,
        ws.images.hashes,
        int(min(n_gallery, n_images)),
        K.COLORMAP.get(),
        float(K.OPACITY.get()),
        ws.model_a.model,
        ws.model_a.lock,
        ws.bundle,
        ws.images,
        ws.model_a.spec.label,
    )
    st.download_button(
        "Download the HTML report",
        html,
        file_name="attention_verification_report.html",
        mime="text/html",
        type="primary",
        icon=":material/description:",
        on_click="ignore",
    )
    st.caption(f"{len(html) / 1e6:.1f} MB, self-contained.")

st.subheader("Numbers")
report_downloads(report, stem="verification")

samples = loaders.demo_samples()
if samples:
    st.subheader("Demo sample files")
    st.caption("Download these and upload them again through the sidebar to try each input path.")
    cols = st.columns(3)
    for i, (path, description) in enumerate(samples):
        cols[i % 3].download_button(
            path.name,
            data=path.read_bytes,
            file_name=path.name,
            on_click="ignore",
            icon=":material/download:",
            help=description or None,
        )
