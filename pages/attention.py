"""Attention: one image, its heatmap and the reference side by side; the prediction; every method at once."""

from __future__ import annotations

import streamlit as st

from ui import evidence, figures, loaders
from ui.sidebar import workspace
from ui.state import K
from ui.widgets import colorbar, guard, image_panel, notices
from verification import render

st.title("Attention", anchor=False)
ws = workspace()

handle = ws.model_a
model = handle.model
item = ws.images.items[min(K.IMAGE_INDEX.get(), len(ws.images.items) - 1)]
image = item.image
segmentation = model.task == "segmentation"
multilabel = model.task == "multilabel"  # independent labels: sigmoid probabilities, no single prediction

for key in (K.METHOD, K.LAYER, K.TARGET, K.OPACITY, K.COLORMAP, K.SEG_CLASS, K.SEG_THRESHOLD, K.SHOW_LESION):
    key.init()

# ------------------------------------------------------------------------------------------- controls
layers: dict[str, str] = {}
default_layer = ""
with guard("Listing the model's layers"):
    layers, default_layer = loaders.model_layers(model.content_hash, model, handle.lock)
if K.LAYER.get() not in ("", *layers):
    K.LAYER.set("")

c1, c2, c3, c4, c5 = st.columns([1.3, 1.6, 1.2, 1.0, 0.9])
method = c1.selectbox("Method", loaders.ALL_METHODS, format_func=loaders.METHOD_LABELS.get, key=K.METHOD.name)
layer_choice = c2.selectbox(
    "Layer",
    ["", *layers],
    format_func=lambda name: f"default: {default_layer}" if name == "" else f"{name}  ({layers[name]})",
    key=K.LAYER.name,
    disabled=method in loaders.ATTRIBUTION_METHODS or method == "ms_gradcampp",
    help="Dotted module name. Attributions work on input pixels; multi-scale fuses the last stages.",
)
layer = layer_choice or default_layer
if segmentation:
    seg_classes = list(model.class_names[1:]) or list(model.class_names)
    if K.SEG_CLASS.get() not in seg_classes:
        K.SEG_CLASS.set(seg_classes[0])
    seg_class = c3.selectbox("Region class", seg_classes, key=K.SEG_CLASS.name)
    threshold = c3.slider("Mask threshold", 0.05, 0.95, step=0.05, key=K.SEG_THRESHOLD.name)
    target = loaders.TargetKey("segmentation", model.class_names.index(seg_class), float(threshold))
else:
    options = ["predicted", *model.class_names]
    if K.TARGET.get() not in options:
        K.TARGET.set("predicted")
    chosen = c3.selectbox(
        "Explain class",
        options,
        format_func=lambda c: "predicted class" if c == "predicted" else c,
        key=K.TARGET.name,
    )
    target = loaders.TargetKey(
        "multilabel" if multilabel else "logit",
        None if chosen == "predicted" else model.class_names.index(chosen),
    )
opacity = c4.slider("Opacity", 0.0, 1.0, step=0.05, key=K.OPACITY.name)
colormap = c5.selectbox("Colormap", list(render.COLORMAPS), key=K.COLORMAP.name)

notices(list(image.notices))

# ------------------------------------------------------------------------------------------- the map
result = None
with guard(f"Computing {loaders.METHOD_LABELS[method]}"), st.spinner("Computing the map…"):
    result = loaders.cam_for(model, handle.lock, image, method=method, layer=layer, target=target)
if result is None:
    st.stop()

# Where this image stands in the verdict (the E0 gate first: an image outside the model's domain is not
# assessable, and nothing drawn below is evidence about the model).
image_evidence = None
if not segmentation and ws.bundle is not None:
    with guard("Checking this image against the evidence lines"):
        single = loaders.verify_items(
            model, handle.lock, ws.bundle, [item], faithfulness=K.VERIFY_FAITHFULNESS.get()
        )
        image_evidence = single.images[0] if single.images else None
assessable = image_evidence is None or image_evidence.assessable

prediction = None if segmentation or multilabel else loaders.prediction(model, handle.lock, image)
if prediction is not None and prediction.rejected:
    st.error(
        f"**Input rejected as out-of-distribution** — the model's garbage class “{model.garbage_class}” wins "
        f"(p = {prediction.confidence:.1%}). This image does not look like the radiographs the model was "
        "trained on, so no diagnosis is given; the heatmap only shows what drove the rejection.",
        icon=":material/block:",
    )
elif image_evidence is not None and not image_evidence.assessable:
    evidence.image_verdict(image_evidence)

truth = f" · true label: **{item.label}**" if item.label else ""
explained = "the predicted class" if target.cls is None else f"class “{model.class_names[target.cls]}”"
if prediction is not None and not prediction.rejected:
    said = f"**{prediction.class_name}** ({prediction.confidence:.1%})"
    if not assessable:
        said += " — not a diagnosis: the image is not assessable"
    st.markdown(f"Prediction: {said}{truth} · the heatmap explains {explained}")
elif multilabel:
    st.markdown(
        f"Labels are independent (sigmoid probabilities below){truth} · the heatmap explains {explained}"
    )

cols = st.columns(3)
with cols[0]:
    caption = f"{image.source_format.upper()} · {image.size[1]}×{image.size[0]}"
    if item.label:
        caption += f" · true label: {item.label}"
    image_panel("Image", render.fit(image.display, figures.DISPLAY_MAX_SIDE), caption=caption)
with cols[1], st.container(key="overlay_main"):  # the browser test and bench wait for this picture
    what = "the predicted region" if segmentation else f"class “{model.class_names[result.targets[0]]}”"
    overlay = render.overlay(
        image.display, result.maps[0], opacity=opacity, colormap=colormap, max_side=figures.DISPLAY_MAX_SIDE
    )
    if item.lesion_mask is not None and K.SHOW_LESION.get():
        overlay = render.outline(overlay, item.lesion_mask)
    image_panel(
        f"{loaders.METHOD_LABELS[method]} — {what}",
        overlay,
        caption=f"layer {result.layer}" + (" · constant map (no signal)" if bool(result.constant[0]) else ""),
    )
    colorbar(colormap)
    if result.provenance.get("saturated_baseline"):
        st.warning(
            f"The all-zero baseline input already scores class “{model.class_names[result.targets[0]]}” at "
            "p ≥ 0.99, so Score-CAM's weights (the increase in confidence over that baseline) are all ≈ 0 "
            "and this map is not evidence. Use a gradient method for this class.",
            icon=":material/warning:",
        )
    if item.lesion_mask is not None:
        st.toggle("Outline the known lesion (demo ground truth)", key=K.SHOW_LESION.name)
with cols[2]:
    if segmentation:
        with guard("Predicting the mask"):
            mask = loaders.segmentation_mask(model, handle.lock, image, target)
            image_panel(
                f"Predicted mask — {seg_class} ≥ {threshold:.2f}",
                render.mask_overlay(image.display, mask, max_side=figures.DISPLAY_MAX_SIDE),
                caption=f"{mask.mean():.1%} of the image; the CAM explains the sum of these pixels' logits",
            )
            if not mask.any():
                st.info(
                    f"No pixel reaches p({seg_class}) ≥ {threshold:.2f}: the target region is empty, so the "
                    "segmentation CAM is all zero. Lower the threshold to explain a weaker prediction."
                )
    else:
        ref = loaders.reference_map(ws.bundle, model.class_names[result.targets[0]]) if ws.bundle else None
        if ref is None:
            st.markdown("**Reference map**")
            st.info("No reference for this class: choose a reference bundle in the sidebar.")
        else:
            image_panel(
                f"Reference — class “{model.class_names[result.targets[0]]}”",
                render.overlay(
                    image.display, ref, opacity=opacity, colormap=colormap, max_side=figures.DISPLAY_MAX_SIDE
                ),
                caption=f"mean map of the reference set ({ws.bundle.label})" if ws.bundle else None,
            )
            colorbar(colormap)

# ------------------------------------------------------------------------------------------- prediction
left, right = st.columns([1, 1])
with left:
    st.subheader("Prediction")
    if segmentation:
        st.caption("Mean class probability over the image's pixels.")
    elif multilabel:
        st.caption("Sigmoid probability of each label on its own (they need not add up to 100 %).")
    elif prediction.rejected:
        st.markdown(f"**Rejected input** ({prediction.message})")
    # Plain HTML bars: a plotly chart here would hold back the first paint of the whole page while the
    # browser fetches the charting library.
    st.html(figures.probability_html(model.class_names, result.probs[0], rejected=model.garbage_class))
with right:
    if not segmentation:
        st.subheader("This image in the verdict")
        if ws.bundle is None:
            st.info(
                "Choose a reference bundle in the sidebar to check this image against the evidence lines."
            )
        elif image_evidence is not None and not image_evidence.assessable:
            st.markdown("**Not assessable** (see above): no evidence line uses this image.")
        elif image_evidence is not None:
            evidence.image_verdict(image_evidence)
            st.caption(
                "The model's verdict needs many images: see **Similarity** or **Dataset check**. Numbers "
                f"here are for this image under {ws.bundle.label}'s calibration"
                + (
                    f" ({ws.bundle.bundle.method} at {ws.bundle.bundle.layer}; the map above is "
                    f"{loaders.METHOD_LABELS[method]} at {layer})."
                    if (ws.bundle.bundle.method, ws.bundle.bundle.layer) != (method, layer)
                    else "."
                )
            )

# ------------------------------------------------------------------------------------------- all methods
st.subheader("All methods for this image")
st.caption(
    "The gradient methods come from one forward and one backward pass and are cached together; "
    "the perturbation methods run only when asked."
)
grid = {}
with guard("Computing the method grid"):
    grid = loaders.one_pass_cams(
        model.content_hash, image.content_hash, layer, target, model, handle.lock, image
    )
extra = st.toggle(
    "Add Score-CAM, Ablation-CAM and the pixel attributions (slower)", key=K.ATTENTION_SLOW.name
)
methods = [m for m in loaders.ONE_PASS_METHODS if m in grid] + (
    list(loaders.EXTRA_CAM_METHODS + loaders.ATTRIBUTION_METHODS) if extra else []
)
per_row = 4
for start in range(0, len(methods), per_row):
    row = st.columns(per_row)
    for col, name in zip(row, methods[start : start + per_row]):
        # each slow method on its own: one that fails for this model leaves the others drawn
        with col, guard(loaders.METHOD_LABELS[name]):
            res = (
                grid[name]
                if name in grid
                else loaders.cam_for(model, handle.lock, image, method=name, layer=layer, target=target)
            )
            thumb = render.overlay(
                image.display,
                res.maps[0],
                opacity=opacity,
                colormap=colormap,
                max_side=figures.THUMB_MAX_SIDE,
            )
            st.image(thumb, caption=loaders.METHOD_LABELS[name], width="stretch", output_format="JPEG")
colorbar(colormap)
