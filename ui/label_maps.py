"""One map per label for a multi-label model (issue #15): the labels a radiologist would ask about first —
every label the model calls present (σ ≥ 0.5), or its top label when it calls none — each with its own map.

:func:`draw` is one call for a page (the Attention page, under its main viewer); the maps come from
:func:`verification.multilabel.label_cams` (one forward and one backward for all of them), cached by model,
image, method and layer.
"""

from __future__ import annotations

import threading

import numpy as np
import streamlit as st

from verification import render
from verification.interactive import DEFAULT_METHOD, per_label_method
from verification.io.records import LoadedImage, LoadedModel
from verification.multilabel import label_cams

MAX_SHOWN = 8
"""At most this many label maps side by side (an 18-label chest model rarely calls more than a few)."""


@st.cache_data(show_spinner=False, max_entries=64)
def _maps(
    model_hash: str,
    image_hash: str,
    method: str,
    layer: str | None,
    _model: LoadedModel,
    _lock: threading.Lock,
    _image: LoadedImage,
) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    from verification.io.images import to_tensor

    with _lock:
        lm = label_cams(_model, to_tensor([_image], _model), methods=(method,), layers=layer)
    return lm.labels, np.asarray(lm.results[0].maps, np.float32), lm.probs[0]


def draw(
    model: LoadedModel,
    lock: threading.Lock,
    image: LoadedImage,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    colormap: str = "jet",
    opacity: float = 0.45,
) -> None:
    """The per-label maps of ``image`` under a heading; nothing for a model that is not multi-label."""
    if model.task != "multilabel":
        return
    shown = method if per_label_method(method) else DEFAULT_METHOD
    labels, maps, probs = _maps(model.content_hash, image.content_hash, shown, layer, model, lock, image)
    positive = [k for k in labels if probs[k] >= 0.5]
    st.markdown(
        "**One map per label** — "
        + (
            f"the {len(positive)} label(s) the model calls present (σ ≥ 0.5)"
            if positive
            else f"no label reaches σ ≥ 0.5; its top label, {model.class_names[labels[0]]} "
            f"({probs[labels[0]]:.1%})"
        )
        + ("" if shown == method else f" · {shown} (the chosen method is not a one-pass gradient map)")
    )
    rows = list(zip(labels, maps))[:MAX_SHOWN]
    cols = st.columns(min(len(rows), 4))
    for j, (k, m) in enumerate(rows):
        with cols[j % len(cols)]:
            st.image(
                render.overlay(image.display, m, opacity=opacity, colormap=colormap, max_side=384),
                caption=f"{model.class_names[k]} · σ = {probs[k]:.1%}",
                width="stretch",
            )
    if len(labels) > MAX_SHOWN:
        st.caption(f"{len(labels) - MAX_SHOWN} more label(s) above σ = 0.5: choose one in “Explain class”.")
