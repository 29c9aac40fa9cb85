"""The verdict on a page: the word, the line that decided it, accuracy beside it, the evidence lines in plain
words with their numbers, thresholds and calibration, the per-class verdicts and the per-image "why".

Every page that shows a verdict (Attention, Similarity, Dataset check, Compare models, Report & export) draws
it through these functions, so the words are the same everywhere. The words and tables themselves are the
backend's (:mod:`verification.summary`, re-exported here); this module only lays them out.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from streamlit.elements.lib.column_types import ColumnConfig

from ui import figures, glossary
from ui.state import K
from ui.widgets import switch
from verification.metrics import METRICS
from verification.report import Band, bands
from verification.report.content import unit
from verification.summary import (
    NOT_ASSESSABLE,
    classes_table,
    document_json,
    explanation_table,
    image_evidence,
    image_state,
    image_values_table,
    images_table,
    line_class_table,
    lines_table,
    quantity_words,
    status_words,
    verdict_detail,
    verdict_headline,
)
from verification.verdict import LINE_NAMES, STATUS_LABELS, ImageEvidence, LineResult, VerificationReport
from verification.verdict.explain import (
    Explanation,
    MapLocation,
    Threshold,
    explain_image,
    locate,
    thresholds,
)

VERDICT_ICONS = {
    "suitable": ":material/verified:",
    "unsuitable": ":material/gpp_bad:",
    "cannot_verify": ":material/help:",
}
# ---------------------------------------------------------------------------------------------- drawing


def faithfulness_switch() -> bool:
    """The switch for E6 (deletion/insertion against a random order: ~40 extra forwards per image)."""
    return switch(
        K.VERIFY_FAITHFULNESS,
        "Include the faithfulness line (E6, slower)",
        help="Deletion and insertion curves against a random pixel order: about 40 extra forwards per "
        "image. Off, E6 is reported as not assessed and does not vote.",
    )


def table(frame: pd.DataFrame, helps: Mapping[str, str]) -> None:
    """A table across the page whose text columns named in ``helps`` carry that tooltip."""
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config={name: st.column_config.TextColumn(help=text) for name, text in helps.items()},
    )


def verdict_banner(report: VerificationReport, subject: str = "") -> None:
    """The verdict word with the deciding line in the headline and every number behind it in the detail:
    green for SUITABLE, red for UNSUITABLE, amber for CANNOT VERIFY (a missing input is not a failure)."""
    text = f"**{verdict_headline(report, subject)}** — {verdict_detail(report)}"
    icon = VERDICT_ICONS[report.verdict]
    if report.verdict == "suitable":
        st.success(text, icon=icon)
    elif report.verdict == "unsuitable":
        st.error(text, icon=icon)
    else:
        st.warning(text, icon=icon)


def verdict_metrics(report: VerificationReport) -> None:
    """Accuracy beside the verdict, and how many images the verdict rests on."""
    cols = st.columns(4)
    cols[0].metric("Verdict", report.label, help=glossary.verdict_help(report.label))
    interval = report.accuracy_interval
    cols[1].metric(
        "Accuracy",
        "n/a" if report.accuracy is None else f"{report.accuracy:.1%}",
        help=glossary.help_for("accuracy")
        + ("" if interval is None else f" Here: Wilson 95 % interval {interval[0]:.1%} – {interval[1]:.1%}."),
    )
    cols[2].metric(
        "Images assessed",
        f"{report.n_images - report.n_not_assessable} of {report.n_images}",
        help=glossary.help_for("not assessable"),
    )
    cols[3].metric("Not assessable", report.n_not_assessable, help=glossary.help_for("not assessable"))


def evidence(report: VerificationReport, *, per_image: bool = True) -> None:
    """The verdict's evidence: per class, per line (each with its per-class numbers), the not-assessable
    images and, if asked, the per-image table."""
    for warning in report.warnings:
        st.warning(warning, icon=":material/warning:")
    st.markdown(f"**Per {unit(report)}**", help=glossary.help_for(report.label))
    table(
        classes_table(report),
        {
            "verdict": "SUITABLE, UNSUITABLE or CANNOT VERIFY (hover the verdict above for what each means)",
            "deciding line": "The evidence line (E0–E6) that decided.",
        },
    )
    st.markdown(
        "**Evidence lines** — each passed, failed, was not assessable or was not informative",
        help=" ".join(glossary.line_help(k) for k in LINE_NAMES),
    )
    table(
        lines_table(report),
        {
            "separation (AUROC)": glossary.help_for("separation (AUROC)"),
            "votes": glossary.help_for("uninformative"),
            "calibration": glossary.help_for("threshold"),
        },
    )
    for ln in report.lines:
        if not ln.per_class:
            continue
        title = f"{ln.key} {ln.name}: {status_words(ln.status)}"
        with st.expander(title, expanded=ln.key in report.deciding_lines):
            st.markdown(ln.sentence or LINE_NAMES.get(ln.key, ""), help=glossary.line_help(ln.key))
            if ln.calibration:
                st.caption(f"Threshold calibration: {ln.calibration}")
            table(
                line_class_table(ln),
                {
                    "threshold": glossary.help_for("threshold"),
                    "measured": "The class's number with its 95 % interval and the images it rests on.",
                },
            )
    excluded = [im for im in report.images if not im.assessable]
    if excluded:
        st.markdown(
            f"**Not assessable ({len(excluded)})** — left out of every line, never counted as passing"
        )
        st.dataframe(
            pd.DataFrame(
                {"image": [im.name for im in excluded], "why": [image_state(im) for im in excluded]}
            ),
            hide_index=True,
            width="stretch",
        )
    for name, message in report.errors:
        st.error(f"{name}: {message}", icon=":material/broken_image:")
    if per_image:
        st.markdown("**Per image**")
        st.dataframe(
            images_table(report),
            hide_index=True,
            width="stretch",
            column_config=column_help(sorted({k for im in report.images for k in im.values})),
        )


def image_explanation(
    im: ImageEvidence,
    *,
    location: MapLocation | None = None,
    limits: Mapping[tuple[str, str], Threshold] | None = None,
    anatomy: str = "the anatomy",
) -> Explanation:
    """One image in one plain sentence (the backend's :func:`~verification.verdict.explain.explain_image`),
    with the numbers behind it one click away."""
    ex = explain_image(im, location=location, limits=limits, anatomy=anatomy)
    st.markdown(ex.sentence)
    with st.expander("The numbers behind this sentence"):
        st.dataframe(explanation_table(ex), hide_index=True, width="stretch")
        if im.values:
            st.dataframe(image_values_table(im), hide_index=True, width="stretch")
    return ex


def explain_one(report: VerificationReport, *, anatomy: str = "the anatomy") -> None:
    """Pick one image of the run and read it in one sentence (located on its map when the report kept it)."""
    if not report.images:
        return
    names = [im.name for im in report.images]
    first = report.examples[0].image if report.examples and report.examples[0].image in names else names[0]
    name = st.selectbox(
        "One image in words",
        names,
        index=names.index(first),
        format_func=lambda n: n + (" (heatmap kept)" if any(e.image == n for e in report.examples) else ""),
        help="The sentence states only what the numbers measured on that image support; the images whose "
        "heatmap the report kept (the most attention outside the anatomy) are also located on their map.",
    )
    im = image_evidence(report, str(name))
    if im is None:
        return
    cam = next((e.map for e in report.examples if e.image == im.name), None)
    image_explanation(
        im,
        location=None if cam is None else locate(cam),
        limits=thresholds(report),
        anatomy=anatomy,
    )


def image_verdict(im: ImageEvidence) -> None:
    """One image's place in the verdict: not assessable (and why), or its per-line numbers and why."""
    if not im.assessable:
        st.error(
            f"**{NOT_ASSESSABLE.capitalize()}** — "
            f"{im.not_assessable_reason or 'input outside the model’s domain'}. This image is left out of "
            "the verdict; its prediction and heatmap are not evidence.",
            icon=":material/block:",
        )
        return
    st.markdown(f"**Assessed** — {im.why}" if im.why else "**Assessed**")
    if im.values:
        st.dataframe(image_values_table(im), hide_index=True, width="stretch")


def quantity_help(key: str) -> str:
    """Tooltip words for a per-image number's key: the glossary's for a metric (E5.kl) or a line (E3.…)."""
    line, _, name = key.partition(".")
    if line == "E5" and name in METRICS:
        return glossary.metric_help(name)
    return (
        f"{quantity_words(key)}. " + glossary.line_help(line) if line in LINE_NAMES else quantity_words(key)
    )


def column_help(keys: Sequence[str]) -> dict[str, ColumnConfig]:
    """``column_config`` giving every per-image number's column its tooltip."""
    return {k: st.column_config.NumberColumn(help=quantity_help(k), format="%.3f") for k in keys}


def downloads(report: VerificationReport, *, stem: str) -> None:
    """The per-image table as CSV and the whole result document as JSON, side by side."""
    c1, c2, _ = st.columns([1, 1, 4])
    # Deferred: made when the button is clicked, not on every rerun (the JSON of the demo's 60-image verdict:
    # 0.06 s, one thread, load ~2.7 on 2 cores).
    c1.download_button(
        "Download CSV",
        lambda: images_table(report).to_csv(index=False),
        file_name=f"{stem}.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/table:",
    )
    c2.download_button(
        "Download JSON",
        lambda: document_json(report),
        file_name=f"{stem}.json",
        mime="application/json",
        on_click="ignore",
        icon=":material/data_object:",
        help="The full result document; `python -m verification report` turns it into the HTML report.",
    )


# ---------------------------------------------------------------------------------------------- band charts

_STATUS_RGB = {
    "pass": "#2e9e5b",
    "fail": "#d9534f",
    "inconclusive": "#c99a2e",
    "not_assessable": "#888888",
    "uninformative": "#888888",
}


def band_chart(line: LineResult) -> go.Figure | None:
    """One line's band chart (the reports' geometry, :func:`verification.report.bands`): per class, the
    passing side of the threshold shaded green and the failing side red, the healthy models' edge dashed, the
    threshold a bar, this run's value a dot with its 95 % interval — each labelled with its number; the axis
    zoomed to those numbers. None when no class measured a value."""
    rows: Sequence[Band] = bands(line)
    if not rows:
        return None
    lo, hi = rows[0].axis
    fig = go.Figure()
    # the class, and under it the healthy numbers in words (a label inside the plot could hide another)
    names = [
        b.class_name
        + (
            ""
            if b.healthy is None and b.healthy_edge is None
            else "<br><span style='font-size:10px;color:#7fd6a0'>"
            + ("" if b.healthy is None else f"healthy {b.healthy[0]:.3f}–{b.healthy[1]:.3f}")
            + ("" if b.healthy_edge is None else f" · edge {b.healthy_edge:.3f}")
            + "</span>"
        )
        for b in rows
    ]
    for k, b in enumerate(rows):
        y0, y1 = k - 0.28, k + 0.28
        spans = b.sides(lo, hi, lambda v: v)  # (passing, failing): the reports' rule
        if spans is not None and b.threshold is not None:
            for (x0, x1), fill in zip(spans, ("rgba(46,158,91,0.22)", "rgba(217,83,79,0.18)"), strict=True):
                fig.add_shape(
                    type="rect", x0=x0, x1=x1, y0=y0, y1=y1, fillcolor=fill, line_width=0, layer="below"
                )
            fig.add_shape(
                type="line",
                x0=b.threshold,
                x1=b.threshold,
                y0=k - 0.4,
                y1=k + 0.4,
                line={"color": "#dddddd", "width": 3},
            )
            fig.add_annotation(
                x=b.threshold,
                y=k + 0.42,
                text=f"threshold {'≥' if b.higher_is_better else '≤'} {b.threshold:.3g}",
                showarrow=False,
                yanchor="bottom",
                font={"size": 11},
            )
        if b.healthy is not None:
            fig.add_shape(
                type="rect",
                x0=b.healthy[0],
                x1=max(b.healthy[1], b.healthy[0] + 0.004 * (hi - lo)),
                y0=k - 0.1,
                y1=k + 0.1,
                fillcolor="rgba(46,158,91,0.75)",
                line_width=0,
            )
        if b.healthy_edge is not None:
            fig.add_shape(
                type="line",
                x0=b.healthy_edge,
                x1=b.healthy_edge,
                y0=y0,
                y1=y1,
                line={"color": "#2e9e5b", "width": 2, "dash": "dash"},
            )
    fig.add_trace(
        go.Scatter(
            x=[b.value for b in rows],
            y=list(range(len(rows))),
            mode="markers+text",
            text=[f"this run {b.value:.3f}" for b in rows],
            textposition="bottom center",
            marker={"size": 12, "color": [_STATUS_RGB.get(b.status, "#888888") for b in rows]},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [0.0 if b.high is None else b.high - b.value for b in rows],
                "arrayminus": [0.0 if b.low is None else b.value - b.low for b in rows],
                "visible": True,
            },
            customdata=[STATUS_LABELS.get(b.status, b.status) for b in rows],
            hovertemplate="%{text} (%{customdata})<extra></extra>",
            name="this run",
        )
    )
    votes = "" if line.votes else " · does not vote"
    return figures.styled(
        fig,
        title=f"{line.key} {line.name} ({STATUS_LABELS.get(line.status, line.status)}{votes})",
        height=110 + 70 * len(rows),
        bottom=30,
        showlegend=False,
        xaxis={"range": [lo, hi], "zeroline": False},
        yaxis={"tickvals": list(range(len(rows))), "ticktext": names, "range": [-0.7, len(rows) - 0.3]},
    )


def band_charts(report: VerificationReport) -> list[tuple[LineResult, go.Figure]]:
    """Every line's band chart that has a measured value (E0's pass rate left out: it has no threshold)."""
    out = []
    for ln in report.lines:
        if ln.key == "E0":
            continue
        fig = band_chart(ln)
        if fig is not None:
            out.append((ln, fig))
    return out


# Band charts per report object (the dashboard keeps each verdict as one object, ui.loaders._VERIFIED):
# building the figures of the demo's 60-image verdict takes 0.21–0.31 s (one thread, load ~2.7 on 2 cores);
# a rerun reuses them.
_BAND_CHARTS: dict[int, tuple[weakref.ref[VerificationReport], list[tuple[LineResult, go.Figure]]]] = {}


def band_charts_of(report: VerificationReport) -> list[tuple[LineResult, go.Figure]]:
    """:func:`band_charts` of ``report``, built once per report object (``ui.warm`` builds the warm
    verdict's)."""
    found = _BAND_CHARTS.get(id(report))
    if found is not None and found[0]() is report:
        return found[1]
    charts = band_charts(report)
    for k in [k for k, (ref, _) in _BAND_CHARTS.items() if ref() is None]:
        del _BAND_CHARTS[k]
    _BAND_CHARTS[id(report)] = (weakref.ref(report), charts)
    return charts


def draw_band_charts(report: VerificationReport, *, key: str = "bands") -> None:
    """The band charts two to a row (``key`` makes their element keys unique on the page)."""
    charts = band_charts_of(report)
    if not charts:
        return
    st.markdown(
        "**Band charts** — green: the passing side of the threshold; dashed: the healthy models' edge; dot: "
        "this run with its 95 % interval",
        help=glossary.help_for("in-distribution band"),
    )
    grid = st.columns(2)
    for i, (ln, fig) in enumerate(charts):
        grid[i % 2].plotly_chart(fig, key=f"{key}_{ln.key}")
