"""Feature maps: the first layers' activations, channel statistics against the reference, shift flags."""

from __future__ import annotations

import streamlit as st

from ui import figures, loaders
from ui.sidebar import workspace
from ui.state import K
from ui.widgets import guard, image_panel
from verification import render
from verification.features import STATS

st.title("Early feature maps", anchor=False)
st.caption(
    "The first layers respond to exposure, contrast, texture and orientation. When an image's early "
    "activations differ from those of the trusted reference set (the demo's in-distribution reference "
    "films), the model is looking at a different kind of picture — another scanner, an inverted or rotated "
    "film — even when its final attention still looks plausible."
)
ws = workspace()

handle = ws.model_a
index = min(K.IMAGE_INDEX.get(), len(ws.images.items) - 1)
item = ws.images.items[index]

reference = None
with guard("Describing the reference set"):
    reference = loaders.feature_reference(handle.model, handle.lock)
if reference is None:
    st.stop()

shift = None
with guard("Checking the images for shift"), st.spinner("Checking every image's early layers…"):
    shift = loaders.feature_check(handle.model, handle.lock, ws.images)
if shift is not None:
    n_flag = int(shift.flagged.sum())
    text = (
        f"{n_flag} of {len(shift.names)} images ({shift.flag_rate:.0%}) look structurally shifted: "
        "shift score "
        f"above {shift.score_max:.2f} or structure SSIM below {shift.ssim_min:.3f} (the reference set's "
        f"{reference.score_percentile:.0f}th / {reference.ssim_percentile:.0f}th leave-one-out percentiles)."
    )
    if shift.broad_shift:
        st.error(f"**Input shift** — {text}", icon=":material/warning:")
    else:
        st.success(f"**No broad input shift** — {text}", icon=":material/check_circle:")

st.subheader(
    f"{item.image.name}" + (" — flagged as shifted" if shift is not None and shift.flagged[index] else "")
)
acts = None
with guard("Capturing the early activations"):
    acts = loaders.early_activations(handle.model, handle.lock, item.image, reference)
if acts is not None:
    cols = st.columns([1, 3])
    with cols[0]:
        image_panel("Image", render.fit(item.image.display, 256))
        if shift is not None:
            st.metric("Shift score", f"{shift.score[index]:.2f}", help=f"flagged above {shift.score_max:.2f}")
            st.metric(
                "Structure SSIM",
                f"{shift.structure_ssim[index]:.3f}",
                help=f"flagged below {shift.ssim_min:.3f}",
            )
    with cols[1]:
        tabs = st.tabs(
            [f"{name} · {a.shape[0]} channels, {a.shape[1]}×{a.shape[2]}" for name, a in acts.items()]
        )
        for tab, (name, a) in zip(tabs, acts.items()):
            with tab:
                st.image(
                    figures.activation_grid(a),
                    caption=f"first {min(32, a.shape[0])} channels of {name}, each scaled to its own range",
                    width="stretch",
                )
    K.FEATURE_STAT.init()
    stat_labels = {"mean": "mean", "std": "standard deviation", "active": "fraction active"}
    stat = (
        st.segmented_control(
            "Channel statistic",
            list(STATS),
            format_func=stat_labels.__getitem__,
            key=K.FEATURE_STAT.name,
        )
        or "mean"
    )
    charts = st.columns(len(reference.layers))
    for col, stats in zip(charts, reference.channel_stats(acts, stat)):
        col.plotly_chart(figures.channel_stat_chart(stats))

if shift is not None:
    st.subheader("All images")
    st.plotly_chart(figures.feature_shift_chart(shift, highlight=index))
    st.dataframe(shift.rows(), hide_index=True, width="stretch")
