"""Report & export: the self-contained HTML report, the result document (JSON) and the per-image table (CSV),
and the demo sample files."""

from __future__ import annotations

import streamlit as st

from ui import evidence, export, loaders
from ui.sidebar import workspace
from ui.widgets import guard

st.title("Report & export", anchor=False)
ws = workspace(bundle=True)

st.caption(
    "One HTML file with the verdict, the evidence lines with their numbers, thresholds and calibration, the "
    "per-class and per-image results, example heatmaps with their class references, and the provenance "
    "(model and bundle hashes, versions). Pictures are embedded and the charting library is inlined, so it "
    "opens offline and can be archived or attached. The JSON is the same result document the command line "
    "writes: `python -m verification report result.json` turns it into this report."
)

faithful = evidence.faithfulness_switch()
report = None
with guard("Verifying the images"), st.spinner("Verifying…"):
    report = loaders.verify_set(
        ws.model_a.model, ws.model_a.lock, ws.bundle, ws.images, faithfulness=faithful
    )
if report is None:
    st.stop()
evidence.verdict_banner(report, f"Model on {ws.images.label}")
evidence.verdict_metrics(report)

with guard("Writing the HTML report"):
    html = export.report_html(
        ws.model_a.model.content_hash,
        ws.bundle.key,
        ws.images.hashes,
        f"Attention verification — {ws.model_a.spec.label}",
        report,
        ws.images,
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
evidence.downloads(report, stem="verification")

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
