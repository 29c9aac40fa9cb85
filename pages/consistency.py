"""Consistency: the C-Score per class and method across the demo's training checkpoints, AUC beside it."""

from __future__ import annotations

import streamlit as st

from ui import figures, loaders
from ui.sidebar import workspace
from ui.state import K
from ui.widgets import guard

st.title("Consistency across patients and checkpoints", anchor=False)
st.caption(
    "The C-Score asks whether a model looks at the same kind of place in every confidently and correctly "
    "classified patient of a class: the confidence-weighted mean soft IoU of their attention maps (1 = the "
    "same region every time). Tracked over training checkpoints, a C-Score that falls while the AUC holds is "
    "an early warning that the model is drifting toward a shortcut."
)
ws = workspace(images=False)  # the demo test set stands in for unlabelled images

for key in (K.CONSISTENCY_METHODS, K.CONSISTENCY_TAU, K.CONSISTENCY_GAMMA):
    key.init()
c1, c2, c3 = st.columns([3, 1, 1])
methods = c1.multiselect(
    "Methods",
    loaders.ONE_PASS_METHODS,
    format_func=loaders.METHOD_LABELS.get,
    key=K.CONSISTENCY_METHODS.name,
    help="All of them come from the same forward and backward pass per checkpoint.",
)
tau = c2.slider("Gold-list confidence τ", 0.5, 0.99, step=0.01, key=K.CONSISTENCY_TAU.name)
gamma = c3.slider("Intensity emphasis γ", 1.0, 4.0, step=0.5, key=K.CONSISTENCY_GAMMA.name)
if not methods:
    st.info("Choose at least one method.")
    st.stop()

series = None
with guard("Tracking the checkpoints"):
    images = loaders.labelled_or_demo(ws.images)
    class_names = loaders.checkpoint_class_names()
    n_ckpt = len(loaders.demo_checkpoint_paths())
    with st.spinner(f"Computing maps for {n_ckpt} checkpoints × {len(images.items)} images…"):
        series = loaders.demo_checkpoint_series(images, class_names, methods, tau, gamma)
if series is None:
    st.stop()

st.caption(f"Evaluation set: {images.label} · {series.checkpoints[0].n_images} labelled images.")
if series.warnings:
    for warning in series.warnings:
        st.warning(warning.message(), icon=":material/trending_down:")
else:
    st.success("No early warning: no C-Score fell by more than its threshold while the AUC held.")

if K.CONSISTENCY_SHOWN.get() not in methods:
    K.CONSISTENCY_SHOWN.set(methods[0])
shown = (
    st.segmented_control(
        "Method", methods, format_func=loaders.METHOD_LABELS.get, key=K.CONSISTENCY_SHOWN.name
    )
    or methods[0]
)
collapsed = [r for r in series.rows if r.method == shown and r.status == "collapsed"]
if collapsed:
    st.caption(
        "Gaps in the C-Score lines are collapsed gold lists (fewer than two images of the class predicted "
        "correctly with confidence ≥ τ), reported as undefined rather than 0: "
        + ", ".join(f"{r.class_name} at {r.checkpoint} (|G| = {r.n_gold})" for r in collapsed[:12])
        + (" …" if len(collapsed) > 12 else "")
    )
left, right = st.columns(2)
c_fig, auc_fig = figures.checkpoint_charts(series, shown)
left.plotly_chart(c_fig)
right.plotly_chart(auc_fig)

with st.expander("Checkpoint table (C-Score per method/class, |G| gold-list sizes)", expanded=False):
    table = series.table()
    st.dataframe(table, hide_index=True, width="stretch")
    st.download_button(
        "Download CSV",
        table.to_csv(index=False),
        file_name="checkpoints.csv",
        mime="text/csv",
        on_click="ignore",
    )
    st.download_button(
        "Download JSON",
        series.to_json(),
        file_name="checkpoints.json",
        mime="application/json",
        on_click="ignore",
    )
