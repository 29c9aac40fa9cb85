"""Attention: one image, its heatmap and the reference side by side; the prediction; every method at once."""

from __future__ import annotations

import numpy as np
import streamlit as st

from ui import evidence, figures, glossary, loaders, viewer
from ui.sidebar import workspace
from ui.state import K
from ui.widgets import colorbar, guard, notices
from verification import render
from verification.errors import VerificationError
from verification.interactive import (
    ALL_METHODS,
    ATTRIBUTION_METHODS,
    EXTRA_CAM_METHODS,
    METHOD_LABELS,
    ONE_PASS_METHODS,
)

st.title("Attention", anchor=False)
ws = workspace()

handle = ws.model_a
model = handle.model
item = ws.images.items[min(K.IMAGE_INDEX.get(), len(ws.images.items) - 1)]
image = item.image
segmentation = model.task == "segmentation"
multilabel = model.task == "multilabel"  # independent labels: sigmoid probabilities, no single prediction

for key in (
    K.METHOD,
    K.LAYER,
    K.TARGET,
    K.OPACITY,
    K.COLORMAP,
    K.SEG_CLASS,
    K.SEG_THRESHOLD,
    K.SHOW_LESION,
    K.DRAW_REGION,
):
    key.init()

# ------------------------------------------------------------------------------------------- controls
layers: dict[str, str] = {}
default_layer = ""
with guard("Listing the model's layers"):
    layers, default_layer = loaders.model_layers(model.content_hash, model, handle.lock)
if K.LAYER.get() not in ("", *layers):
    K.LAYER.set("")

c1, c2, c3, c4, c5 = st.columns([1.3, 1.6, 1.2, 1.0, 0.9])
method = c1.selectbox("Method", ALL_METHODS, format_func=lambda m: METHOD_LABELS.get(m, m), key=K.METHOD.name)
layer_choice = c2.selectbox(
    "Layer",
    ["", *layers],
    format_func=lambda name: f"default: {default_layer}" if name == "" else f"{name}  ({layers[name]})",
    key=K.LAYER.name,
    disabled=method in ATTRIBUTION_METHODS or method == "ms_gradcampp",
    help=glossary.help_for("layer")
    + " Attributions work on input pixels; multi-scale fuses the last stages.",
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
with guard(f"Computing {METHOD_LABELS[method]}"), st.spinner("Computing the map…"):
    result = loaders.cam_for(model, handle.lock, image, method=method, layer=layer, target=target)
if result is None:
    st.stop()

# A region drawn by the reader (below) is this image's finding annotation: it replaces the demo's lesion mask.
region_store = viewer.store()
drawn = None
with guard("Reading this image's annotation"):  # one of another size is set aside with a message
    drawn = region_store.for_image(image.content_hash, image.size)
# The verdict banner and the prediction line sit above the pictures but are filled after them, so the
# heatmap is not held back by this image's verify.
header = st.container()

# ------------------------------------------------------------------------------------------- the viewer
source = viewer.display_source(image, item.data)
view_state = viewer.controls(image, source)
view = view_state.view
base = viewer.base_picture(image, source, view_state)
map_key = (model.content_hash, method, layer, target)
region_mask = drawn.mask() if drawn is not None else None
lesion = item.lesion_mask if item.lesion_mask is not None and K.SHOW_LESION.get() else None
viewer.zoom_css()
with st.container(key="viewer_panels"):
    cols = st.columns(3)
    with cols[0]:
        caption = f"{image.source_format.upper()} · {image.size[1]}×{image.size[0]}"
        if item.label:
            caption += f" · true label: {item.label}"
        viewer.panel(
            "Image",
            viewer.outlined(base, region_mask, image.size, view, viewer.REGION_COLOR),
            view,
            image.size,
            caption=f"{caption} · {view.describe(image.size)} · {view_state.window.describe(source.units)}",
        )
    with cols[1], st.container(key="overlay_main"):  # the browser test and bench wait for this picture
        what = "the predicted region" if segmentation else f"class “{model.class_names[result.targets[0]]}”"
        overlay = viewer.overlay_picture(
            map_key,
            base,
            result.maps[0],
            image,
            view_state,
            opacity=opacity,
            colormap=colormap,
            raw=result.raw[0],
        )
        overlay = viewer.outlined(overlay, lesion, image.size, view, (255, 255, 255))
        overlay = viewer.outlined(overlay, region_mask, image.size, view, viewer.REGION_COLOR)
        grid_note = viewer.grid_caption(
            tuple(result.raw.shape[1:]), result.layer, image.size, view_state.nearest
        )
        viewer.panel(
            f"{METHOD_LABELS[method]} — {what}",
            overlay,
            view,
            image.size,
            caption=grid_note + (" · constant map (no signal)" if bool(result.constant[0]) else ""),
        )
        colorbar(colormap, low="lowest in this image", high="highest in this image")
        if result.provenance.get("saturated_baseline"):
            st.warning(
                f"The all-zero baseline input already scores class “{model.class_names[result.targets[0]]}” "
                "at p ≥ 0.99, so Score-CAM's weights (the increase in confidence over that baseline) are all "
                "≈ 0 and this map is not evidence. Use a gradient method for this class.",
                icon=":material/warning:",
            )
        if item.lesion_mask is not None:
            st.toggle("Outline the known lesion (demo ground truth)", key=K.SHOW_LESION.name)
    with cols[2]:
        if segmentation:
            with guard("Predicting the mask"):
                mask = loaders.segmentation_mask(model, handle.lock, image, target)
                viewer.panel(
                    f"Predicted mask — {seg_class} ≥ {threshold:.2f}",
                    render.mask_overlay(
                        base, viewer.crop_mask(mask, image.size, view), max_side=max(view.out)
                    ),
                    view,
                    image.size,
                    caption=f"{mask.mean():.1%} of the image; the CAM explains the sum of these pixels' "
                    "logits",
                )
                if not mask.any():
                    st.info(
                        f"No pixel reaches p({seg_class}) ≥ {threshold:.2f}: the target region is empty, so "
                        "the segmentation CAM is all zero. Lower the threshold to explain a weaker "
                        "prediction."
                    )
        else:
            cls_name = model.class_names[result.targets[0]]
            ref = loaders.reference_map(ws.bundle, cls_name) if ws.bundle else None
            if ref is None:
                st.markdown("**Reference map**")
                if ws.bundle is None:
                    st.info("No reference: choose a reference bundle in the sidebar.")
                else:
                    has = [
                        c
                        for c, n in zip(ws.bundle.bundle.class_names, ws.bundle.bundle.counts, strict=False)
                        if int(n)
                    ]
                    st.info(
                        f"The reference bundle ({ws.bundle.label}) has no map for class “{cls_name}” (it has "
                        f"maps for: {', '.join(has) or 'no class'})."
                    )
            else:
                assert ws.bundle is not None  # the reference map came from it
                ref_pic = viewer.overlay_picture(
                    ("reference", ws.bundle.key, cls_name),
                    base,
                    ref,
                    image,
                    view_state,
                    opacity=opacity,
                    colormap=colormap,
                )
                viewer.panel(
                    f"Reference — class “{cls_name}”",
                    viewer.outlined(ref_pic, region_mask, image.size, view, viewer.REGION_COLOR),
                    view,
                    image.size,
                    caption=f"mean map of the reference set ({ws.bundle.label}), "
                    + viewer.grid_caption(
                        tuple(np.asarray(ref).shape),
                        ws.bundle.bundle.layer,
                        image.size,
                        view_state.nearest,
                        stored=True,
                    ),
                )
                colorbar(colormap, low="lowest", high="highest")
st.caption(viewer.PER_IMAGE_SCALE)

# Where this image stands in the verdict (the E0 gate first: an image outside the model's domain is not
# assessable, and nothing drawn below is evidence about the model).
image_evidence = None
if not segmentation and ws.bundle is not None:
    with guard("Checking this image against the evidence lines"):
        if drawn is not None:
            single = viewer.verify_with_region(
                model,
                handle.lock,
                ws.bundle.key,
                ws.bundle.bundle,
                image,
                item.label,
                drawn,
                item.anatomy_mask,
                faithfulness=K.VERIFY_FAITHFULNESS.get(),
            )
            image_evidence = single.images[0] if single.images else None
        else:
            image_evidence = loaders.image_evidence(
                model, handle.lock, ws.bundle, item, faithfulness=K.VERIFY_FAITHFULNESS.get()
            )
assessable = image_evidence is None or image_evidence.assessable

prediction = None if segmentation or multilabel else loaders.prediction(model, handle.lock, image)
with header:
    if prediction is not None and prediction.rejected:
        st.error(
            f"**Input rejected as out-of-distribution** — the model's garbage class “{model.garbage_class}” "
            f"wins (p = {prediction.confidence:.1%}). This image does not look like the radiographs the "
            "model was trained on, so no diagnosis is given; the heatmap only shows what drove the "
            "rejection.",
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

if multilabel:
    from ui import label_maps

    label_maps.draw(model, handle.lock, image, method=method, layer=layer, colormap=colormap, opacity=opacity)


# ------------------------------------------------------------------------------------- the expected region
st.subheader("Expected region")
st.caption(
    "Drag a box (or pick the lasso in the chart's toolbar) on the image to mark where the finding is. The "
    "region is this image's finding annotation at once: the numbers beside it and this image's verdict below "
    "are measured against it. It is kept for this session by the image's content; export it to keep it."
)
finding_name = (
    model.class_names[result.targets[0]] if not segmentation and result.targets[0] >= 0 else "finding"
)
draw_left, draw_right = st.columns([1.25, 1])
# The drawing chart is plotly: the browser fetches and parses its 4.7 MB library before the page's pictures
# settle, so it is drawn only on request (the first heatmap of a session is not held back by it).
with draw_left:
    drawing = st.toggle("Draw the expected region", key=K.DRAW_REGION.name)
if drawing:
    with draw_left, st.container(key="viewer_draw"):
        bump = int(st.session_state.get("viewer_draw_round", 0))
        event = st.plotly_chart(
            viewer.drawing_figure(base, view, drawn),
            key=f"viewer_draw_chart_{image.content_hash[:12]}_{bump}",
            on_select="rerun",
            selection_mode=("box", "lasso"),
            # one zoom for every picture: the viewer's (this chart's own zoom and pan would not be linked)
            config={
                "displaylogo": False,
                "scrollZoom": False,
                "modeBarButtonsToRemove": [
                    "toImage",
                    "zoom2d",
                    "pan2d",
                    "zoomIn2d",
                    "zoomOut2d",
                    "autoScale2d",
                    "resetScale2d",
                ],
            },
        )
        new_regions = viewer.regions_from_selection(getattr(event, "selection", None))
        if new_regions:
            add = st.session_state.get("viewer_region_mode", "replace") == "add"
            with guard("Saving the drawn region"):
                viewer.apply_selection(
                    region_store, image, new_regions, replace=not add, finding=finding_name
                )
            st.session_state["viewer_draw_round"] = bump + 1
            st.rerun()
with draw_right:
    st.radio(
        "A new drawing",
        ["replace", "add"],
        format_func={"replace": "replaces the region", "add": "adds to the region"}.get,
        horizontal=True,
        key="viewer_region_mode",
    )
    if drawn is None:
        st.info("No region drawn on this image yet.", icon=":material/draw:")
    else:
        assert region_mask is not None  # the drawn region's mask
        st.markdown(
            f"**Drawn region** ({drawn.finding}): {drawn.describe()} · {int(region_mask.sum()):,} pixels"
        )
        if st.button("Clear the region", key="viewer_clear"):
            region_store.clear(image.content_hash)
            st.session_state["viewer_draw_round"] = int(st.session_state.get("viewer_draw_round", 0)) + 1
            st.rerun()
        numbers = viewer.region_numbers_for(map_key, result.maps[0], drawn)
        st.markdown(f"**{METHOD_LABELS[method]} at {result.layer} against the drawn region**")
        with st.container(key="viewer_region_numbers"):
            st.table({"measure": list(numbers), "value": [f"{v:.3f}" for v in numbers.values()]})
        with st.expander("The seven metrics with the drawn region as this image's reference map"):
            seven = viewer.reference_metrics_for(map_key, result.maps[0], drawn)
            st.table(
                {
                    "metric": [m for m, _, _ in seven],
                    "value": [f"{v:.3f}" for _, v, _ in seven],
                    "direction": [d for _, _, d in seven],
                    "what it measures": [glossary.metric_help(m) for m, _, _ in seven],
                }
            )
            gh, gw = viewer.region_grid_size(image.size)
            shrunk = (
                ""
                if (gh, gw) == tuple(image.size)
                else f", the image's {image.size[1]}×{image.size[0]} shrunk"
            )
            st.caption(
                f"At native resolution ({gw}×{gh}{shrunk}): the map upsampled to the image, the region as "
                "drawn; IoU and Dice at each map's Otsu threshold."
            )
        if image_evidence is not None and image_evidence.assessable:
            inside = image_evidence.values.get("E2.energy_inside")
            if inside is not None:
                st.markdown(
                    f"**E2 localisation** on this image (the verdict's method and grid): energy inside the "
                    f"drawn finding **{inside:.3f}**"
                )
    with st.expander("Export or import annotations"):
        if drawn is not None:
            st.download_button(
                "PNG mask of this image",
                viewer.png_bytes(drawn),
                f"{image.name}.mask.png",
                "image/png",
                key="viewer_dl_png",
            )
            data = item.data
            if image.source_format == "DICOM" and data is not None:
                keep_ids = st.checkbox(
                    "Keep the patient and study identifiers in the DICOM SEG (so the PACS files it with the "
                    "study)",
                    key="viewer_seg_ids",
                )
                try:
                    seg = viewer.seg_bytes(drawn, data, keep_ids)
                    st.download_button(
                        "DICOM SEG of this image",
                        seg,
                        f"{image.name}.seg.dcm",
                        "application/dicom",
                        key="viewer_dl_seg",
                    )
                except VerificationError as exc:
                    st.caption(f"No DICOM SEG: {exc}")
        if len(region_store):
            st.download_button(
                f"All annotations of this session (JSON, {len(region_store)})",
                viewer.json_bytes(region_store),
                "annotations.json",
                "application/json",
                key="viewer_dl_json",
            )
        # The uploader appears on request: the sidebar's image uploader stays the page's last file input.
        if st.toggle("Import annotations or a mask", key="viewer_import_open"):
            upload = st.file_uploader(
                "This tool's annotation JSON, or a mask of this image (PNG/TIFF at its native size)",
                type=["json", "png", "tif", "tiff"],
                key="viewer_import",
            )
            if upload is not None and st.session_state.get("viewer_imported") != upload.file_id:
                with guard(f"Reading {upload.name}") as failed:
                    said = viewer.import_file(
                        region_store, image, upload.name, upload.getvalue(), finding_name
                    )
                if not failed:
                    st.session_state["viewer_imported"] = upload.file_id
                    st.session_state["viewer_import_note"] = said
                    st.rerun()
        if st.session_state.get("viewer_import_note"):
            st.caption(st.session_state["viewer_import_note"])

# ------------------------------------------------------------------------------------------- prediction
left, right = st.columns([1, 1])
with left:
    st.subheader("Prediction")
    if segmentation:
        st.caption("Mean class probability over the image's pixels.")
    elif multilabel:
        st.caption("Sigmoid probability of each label on its own (they need not add up to 100 %).")
    elif prediction is not None and prediction.rejected:  # None only for the two tasks above
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
                    f"{METHOD_LABELS[method]} at {layer})."
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
methods = [m for m in ONE_PASS_METHODS if m in grid] + (
    list(EXTRA_CAM_METHODS + ATTRIBUTION_METHODS) if extra else []
)
per_row = 4
for start in range(0, len(methods), per_row):
    row = st.columns(per_row)
    for col, name in zip(row, methods[start : start + per_row]):
        # each slow method on its own: one that fails for this model leaves the others drawn
        with col, guard(METHOD_LABELS[name]):
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
            st.image(thumb, caption=METHOD_LABELS[name], width="stretch", output_format="JPEG")
colorbar(colormap)
viewer.preload_charts()
