"""Compare models: A and B on the same images side by side, each with its verdict; ranked by the evidence."""

from __future__ import annotations

import streamlit as st

from ui import evidence, figures, glossary, loaders
from ui.sidebar import workspace
from ui.state import K
from ui.widgets import colorbar, guard, image_panel
from verification import render
from verification.compare import compare_reports
from verification.interactive import METHOD_LABELS, TargetChoice, method_of
from verification.summary import comparison_table

st.title("Compare models", anchor=False)
ws = workspace()
if ws.model_b is None:
    if not K.MODEL_B_ENABLED.get():
        st.info(
            "Model B is off (it is off by default, so no page loads a second model you did not ask for). "
            "Turn it on here or with **Compare with a second model** in the sidebar, then choose model B.",
            icon=":material/add:",
        )
        st.button(
            "Compare with a second model",
            type="primary",
            icon=":material/compare_arrows:",
            on_click=K.MODEL_B_ENABLED.set,
            args=(True,),
        )
    else:
        st.info("Choose model B in the sidebar (its upload did not load).", icon=":material/arrow_back:")
    st.stop()

a, b = ws.model_a, ws.model_b
item = ws.images.items[min(K.IMAGE_INDEX.get(), len(ws.images.items) - 1)]
K.COLORMAP.init()
K.OPACITY.init()
method = method_of(ws.bundle.bundle if ws.bundle else None)
st.caption(
    f"{METHOD_LABELS.get(method, method)} of each model's predicted class on **{item.image.name}** "
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
        shapes, layer = loaders.model_layers(m.content_hash, m, handle.lock)
        res = loaders.cam_for(m, handle.lock, item.image, method=method, layer=layer, target=TargetChoice())
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
        label = f"{res.layer} ({shapes[res.layer]})" if res.layer in shapes else str(res.layer)
        st.caption(f"Layer {label}", help=glossary.layer_help(label))

if ws.bundle is None:
    st.info("Choose a reference bundle in the sidebar to score both models against it.")
    st.stop()

st.subheader(f"Both models against {ws.bundle.label} on {ws.images.label}")
faithful = evidence.faithfulness_switch()
reports = {}
for handle, tag in ((a, "A"), (b, "B")):
    with guard(f"Model {tag}: verifying"), st.spinner(f"Verifying model {tag}…"):
        reports[tag] = loaders.verify_set(
            handle.model, handle.lock, ws.bundle, ws.images, faithfulness=faithful
        )
if len(reports) < 2:
    st.stop()

for tag, handle in (("A", a), ("B", b)):
    evidence.verdict_banner(reports[tag], f"{tag} ({handle.spec.label})")
comparison = compare_reports(reports["A"], reports["B"])
if comparison.better is None:
    st.info(f"**No model is ranked above the other** — {comparison.reason}.", icon=":material/balance:")
else:
    winner = a if comparison.better == "A" else b
    st.success(
        f"**Model {comparison.better} ({winner.spec.label}) is better supported by the evidence** — "
        f"{comparison.reason}.",
        icon=":material/emoji_events:",
    )
metric_cols = st.columns(4)
for col, tag in zip(metric_cols[:2], ("A", "B")):
    acc = reports[tag].accuracy
    col.metric(f"Accuracy {tag}", "n/a" if acc is None else f"{acc:.1%}")
for col, tag in zip(metric_cols[2:], ("A", "B")):
    rep = reports[tag]
    col.metric(f"Not assessable {tag}", f"{rep.n_not_assessable} of {rep.n_images}")

st.markdown("**Line by line** — each evidence line for each class in both models")
st.dataframe(comparison_table(comparison), hide_index=True, width="stretch")
for tag, handle in (("A", a), ("B", b)):
    with st.expander(f"Evidence of model {tag} ({handle.spec.label})"):
        evidence.evidence(reports[tag], per_image=False)
