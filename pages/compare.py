"""Compare models: A and B on the same images side by side, metric deltas, which is better aligned."""

from __future__ import annotations

import streamlit as st

from ui import figures, loaders
from ui.sidebar import workspace
from ui.state import K
from ui.widgets import colorbar, guard, image_panel, report_verdict
from verification import render

st.title("Compare models", anchor=False)
ws = workspace()
if ws.model_b is None:
    st.info(
        "Turn on **Compare with a second model** in the sidebar and choose model B.", icon=":material/add:"
    )
    st.stop()

a, b = ws.model_a, ws.model_b
item = ws.images.items[min(K.IMAGE_INDEX.get(), len(ws.images.items) - 1)]
K.COLORMAP.init()
K.OPACITY.init()
method = ws.bundle.bundle.method if ws.bundle and ws.bundle.bundle.method else "gradcam"
st.caption(
    f"{loaders.METHOD_LABELS.get(method, method)} of each model's predicted class on **{item.image.name}** "
    "(the reference bundle's method, so both are judged on the maps the bands were calibrated on)."
)

cols = st.columns(3)
with cols[0]:
    image_panel(
        "Image",
        render.fit(item.image.display, figures.DISPLAY_MAX_SIDE),
        caption=f"true label: {item.label}" if item.label else None,
    )
for col, handle, tag in ((cols[1], a, "A"), (cols[2], b, "B")):
    with col, guard(f"Model {tag}: computing the map"):
        m = handle.model
        layer = loaders.model_layers(m.content_hash, m, handle.lock)[1]
        res = loaders.cam_for(
            m, handle.lock, item.image, method=method, layer=layer, target=loaders.TargetKey()
        )
        pred = loaders.prediction(m, handle.lock, item.image) if m.task != "segmentation" else None
        said = "" if pred is None else f" → {pred.message}"
        image_panel(
            f"{tag}: {handle.spec.label}",
            render.overlay(
                item.image.display,
                res.maps[0],
                opacity=K.OPACITY.get(),
                colormap=K.COLORMAP.get(),
                max_side=figures.DISPLAY_MAX_SIDE,
            ),
            caption=f"layer {res.layer}{said}",
        )
        colorbar(K.COLORMAP.get())

if ws.bundle is None:
    st.info("Choose a reference bundle in the sidebar to score both models against it.")
    st.stop()

st.subheader(f"Both models against {ws.bundle.label} on {ws.images.label}")
reports = {}
for handle, tag in ((a, "A"), (b, "B")):
    with guard(f"Model {tag}: verifying"), st.spinner(f"Verifying model {tag}…"):
        reports[tag] = loaders.verify_set(handle.model, handle.lock, ws.bundle, ws.images)
if len(reports) < 2:
    st.stop()

left, right = st.columns(2)
for col, tag, handle in ((left, "A", a), (right, "B", b)):
    with col:
        report_verdict(reports[tag], f"{tag} ({handle.spec.label}): {reports[tag].verdict}")
comparison = loaders.compare_reports(reports["A"], reports["B"])
if comparison.better is None:
    st.info(f"**Neither model is better aligned** — {comparison.reason}.")
else:
    winner = a if comparison.better == "A" else b
    st.success(
        f"**Model {comparison.better} ({winner.spec.label}) is better aligned with the reference** — "
        f"{comparison.reason}.",
        icon=":material/emoji_events:",
    )
st.dataframe(
    comparison.table,
    hide_index=True,
    width="stretch",
    column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("median A", "median B", "B − A")}
    | {
        c: st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent")
        for c in ("flag rate A", "flag rate B")
    },
)
st.plotly_chart(
    figures.bars(
        list(comparison.table["metric"]),
        {"A": list(comparison.table["flag rate A"]), "B": list(comparison.table["flag rate B"])},
        title="Share of images outside the band, per metric",
        y_title="flag rate",
    )
)
