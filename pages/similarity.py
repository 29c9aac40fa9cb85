"""Similarity: every metric for the chosen images against their class references, bands, flags, verdict."""

from __future__ import annotations

import streamlit as st

from ui import figures, loaders
from ui.sidebar import workspace
from ui.widgets import guard, report_downloads, report_verdict

st.title("Similarity to the reference", anchor=False)
ws = workspace(bundle=True)

model = ws.model_a
bundle = ws.bundle.bundle
st.caption(
    f"Each image's {bundle.method or 'CAM'} map (layer {bundle.layer}) from **{model.spec.label}** is "
    f"compared with the reference map of its predicted class in **{ws.bundle.label}**. The shaded bar is the "
    "in-distribution band calibrated on the reference set (leave-one-out); a point outside it is flagged."
)

report = None
with guard("Verifying the images"), st.spinner(f"Verifying {len(ws.images.items)} images…"):
    report = loaders.verify_set(model.model, model.lock, ws.bundle, ws.images)
if report is None:
    st.stop()

summary = report.summary()
report_verdict(report, f"Model {report.verdict} on {ws.images.label}")
for warning in report.warnings:
    st.warning(warning, icon=":material/warning:")

cols = st.columns(4)
cols[0].metric("Images", summary["images"])
cols[1].metric("Flagged", f"{summary['flagged']} ({summary['flagged_share']:.0%})")
cols[2].metric("Mean metrics flagged / image", f"{summary['mean_flags_per_image']:.2f}")
if summary["accuracy"] is not None:
    cols[3].metric("Accuracy (labelled images)", f"{summary['accuracy']:.1%}")

charts = figures.similarity_charts(report, bundle)
grid = st.columns(2)
for i, fig in enumerate([*charts, figures.flag_count_chart(report)]):
    grid[i % 2].plotly_chart(fig)

st.subheader("Per image")
table = loaders.report_table(report)
st.dataframe(table, hide_index=True, width="stretch")
report_downloads(report, stem="similarity")
