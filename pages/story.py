"""Guided story: the demo world in three chapters for a clinician — a sound model, a shortcut model, an
out-of-distribution film — each with its verdict, the evidence behind it and a picture with its sentence.

Every chapter goes through the one verify path (``ui.loaders.verify_items`` → ``verification.verify``) with
the committed demo bundle, cached by content like every other page, so the story shows exactly what the
other pages and the command line would. It does not use the sidebar's choices: the story is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from ui import evidence, figures, glossary, loaders
from ui.widgets import guard
from verification import render
from verification.interactive import charted_line
from verification.verdict.explain import locate, thresholds


@dataclass(frozen=True)
class Chapter:
    title: str
    model: str
    split: str
    expect: str
    story: str
    look: str


CHAPTERS = (
    Chapter(
        "1 · A sound model",
        "sound",
        "test",
        "SUITABLE",
        "A classifier trained on clean chest films, checked on 60 new films with their labels, the annotated "
        "lesions and the lung fields.",
        "Every deciding line passes: it recognises each class well above chance (E1), its prediction does "
        "not move when everything outside the lungs is removed (E3), and removing the lesion takes the "
        "finding away (E4). Attention may spread beyond the lungs — the counterfactuals show the model does "
        "not need it.",
    ),
    Chapter(
        "2 · A shortcut model",
        "shortcut_token",
        "cue_token",
        "UNSUITABLE",
        "A classifier that learned a bright token burned in outside the lungs, placed by class, instead of "
        "the findings. On films that carry the token it is right every time.",
        "Accuracy alone would pass it. The evidence does not: remove everything outside the lungs and its "
        "prediction collapses (E3), remove the lesion and it does not care (E4). It decides from the token.",
    ),
    Chapter(
        "3 · An out-of-distribution film",
        "sound",
        "ood",
        "CANNOT VERIFY",
        "The sound model again, now shown images that are not chest films: photographs, text, noise, an "
        "extremity radiograph.",
        "The model still names a class for each — with high confidence. The input gate (E0) sees that the "
        "early feature maps and image statistics are unlike the reference films and removes every image, so "
        "no verdict is drawn from them: CANNOT VERIFY, never SUITABLE.",
    ),
)

st.title("Guided story: the radiologist's desk", anchor=False)
st.caption(
    "Three chapters of the built-in demo world, in order. Each is the real verdict of a demo model on demo "
    "films against the committed reference bundle — the same computation as every other page."
)


def chapter(ch: Chapter) -> None:
    st.header(ch.title, anchor=False, divider="gray")
    st.markdown(ch.story)
    handle = loaders.get_model(loaders.demo_spec(ch.model))
    model, lock = handle
    images = loaders.demo_image_set(ch.split)
    bundle = loaders.demo_bundle(model)
    with st.spinner(f"Verifying {loaders.split_label(ch.split)} with the {ch.model} model…"):
        report = loaders.verify_items(model, lock, bundle, images.items)
    evidence.verdict_banner(report, f"{ch.model} model on {loaders.split_label(ch.split)}")
    if report.label != ch.expect:  # the story is told from the numbers: say so when they tell another one
        st.warning(
            f"This chapter was written for {ch.expect}; the evidence now says {report.label}. The numbers "
            "below are what counts.",
            icon=":material/warning:",
        )
    st.markdown(f"*What to look for:* {ch.look}", help=glossary.verdict_help(report.label))
    left, right = st.columns([2, 3])
    example = report.examples[0] if report.examples else None
    item = next((i for i in images.items if example and i.image.name == example.image), None)
    with left:
        if example is not None and item is not None:
            im_ev = evidence.image_evidence(report, example.image)
            shown = (
                "" if im_ev is None or im_ev.assessable else " (not assessable: the heatmap is not evidence)"
            )
            st.image(
                render.overlay(item.image.display, example.map, max_side=figures.DISPLAY_MAX_SIDE),
                caption=f"{item.image.name} — attention of the {example.class_name or 'predicted'} call"
                + shown,
                width="stretch",
            )
    with right:
        if example is not None:
            im = evidence.image_evidence(report, example.image)
            if im is not None:
                anatomy = item.anatomy_mask if item is not None else None
                st.markdown("**This film, in one sentence**")
                evidence.image_explanation(
                    im,
                    location=locate(example.map, anatomy),
                    limits=thresholds(report),
                    anatomy="the lungs" if anatomy is not None else "the anatomy",
                )
        deciding = charted_line(report)
        chart = "" if deciding is None else evidence.band_cards([deciding])
        if chart:
            st.html(chart)
    with st.expander("All the evidence of this chapter"):
        evidence.verdict_metrics(report)
        evidence.evidence(report, per_image=False)


for ch in CHAPTERS:
    with guard(f"Chapter {ch.title}"):
        chapter(ch)
