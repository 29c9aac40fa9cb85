"""Similarity: the verdict on the chosen images with every evidence line; the seven-metric agreement with the
reference maps (E5) is one supporting line among them."""

from __future__ import annotations

import streamlit as st

from ui import evidence, loaders
from ui.sidebar import workspace
from ui.widgets import guard

st.title("Similarity to the reference", anchor=False)
ws = workspace(bundle=True)

model = ws.model_a
bundle = ws.bundle.bundle
st.caption(
    f"**{model.spec.label}** on **{ws.images.label}** against **{ws.bundle.label}**. The verdict rests on "
    "independent lines of evidence (input validity, task performance, localisation, reliance on evidence "
    "outside the anatomy, the finding counterfactual, agreement with the reference maps, faithfulness); each "
    "says whether it passed, failed, could not be assessed or was not informative, with its numbers and the "
    "threshold it was judged against."
)

faithful = evidence.faithfulness_switch()
report = None
with guard("Verifying the images"), st.spinner(f"Verifying {len(ws.images.items)} images…"):
    report = loaders.verify_set(model.model, model.lock, ws.bundle, ws.images, faithfulness=faithful)
if report is None:
    st.stop()

evidence.verdict_banner(report, f"Model on {ws.images.label}")
evidence.verdict_metrics(report)

evidence.draw_band_charts(report)
evidence.explain_one(report)

evidence.evidence(report)
evidence.downloads(report, stem="similarity")
