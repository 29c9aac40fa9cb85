"""The verdict on a page: the word, the line that decided it, accuracy beside it, the evidence lines in plain
words with their numbers, thresholds and calibration, the per-class verdicts and the per-image "why".

Every page that shows a verdict (Attention, Similarity, Dataset check, Compare models, Report & export) draws
it through these functions, so the words are the same everywhere. The words and tables themselves are the
backend's (:mod:`verification.summary`, re-exported here); this module only lays them out.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence

import pandas as pd
import streamlit as st

from ui import glossary
from ui.state import K
from ui.widgets import switch
from verification.metrics import METRICS
from verification.report import Band, band_svg, bands
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


# The verdict's small fixed tables are plain HTML tables: as scrolling grids (st.dataframe) the Similarity
# page's dozen cost Chromium about 0.4 s more CPU to settle, and st.table renders every cell through the
# markdown component (~250 cells on that page); a grid stays for the long per-image table, where sorting and
# scrolling matter. Every cell's words are shown in full; a column's meaning is its header's tooltip.
_TABLE_CSS = (
    "<style>.vtable{border-collapse:collapse;width:100%;font-size:.875rem;margin:0 0 .5rem}"
    ".vtable th,.vtable td{border:1px solid rgba(250,250,250,.18);padding:.25rem .5rem;text-align:left;"
    "vertical-align:top}.vtable th{font-weight:400;opacity:.75}"
    ".vtable th[title]{cursor:help;text-decoration:underline dotted}.vtable td.num{text-align:right}"
    ".vscroll{max-height:26rem;overflow:auto}.vscroll .vtable :is(td,th){white-space:nowrap}"
    ".vscroll .vtable th{position:sticky;top:0;"
    "background:var(--st-background-color,#0e1117);opacity:1}</style>"
)


def _cell(value: object) -> str:
    """A cell's words: a number to 3 decimals (right-aligned), nothing measured as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<td>—</td>"
    if isinstance(value, float):
        return f'<td class="num">{value:.3f}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def table_html(frame: pd.DataFrame, columns: Mapping[str, str] | None = None) -> str:
    """``frame`` as an HTML table (no index), the header of each column named in ``columns`` carrying that
    text as its tooltip."""
    helps = columns or {}
    titles = {name: f' title="{html.escape(text)}"' for name, text in helps.items()}
    head = "".join(f"<th{titles.get(name, '')}>{html.escape(str(name))}</th>" for name in frame.columns)
    body = "".join(
        "<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in frame.itertuples(index=False, name=None)
    )
    return f'{_TABLE_CSS}<table class="vtable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def table(frame: pd.DataFrame, columns: Mapping[str, str] | None = None) -> None:
    """A small fixed table across the page (:func:`table_html`)."""
    st.html(table_html(frame, columns))


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
        keys = sorted({k for im in report.images for k in im.values})
        st.markdown(f"**Per image** ({len(report.images)})")
        # every image and number in a scrolling HTML table: as a grid (st.dataframe) it was half of what
        # the Similarity page cost Chromium to settle (~0.45 of ~1.3 s CPU); sorting is in the CSV
        helps = {k: quantity_help(k) for k in keys}
        st.html(f'<div class="vscroll">{table_html(images_table(report), helps)}</div>')


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
        table(explanation_table(ex))
        if im.values:
            table(image_values_table(im))
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
        table(image_values_table(im))


def quantity_help(key: str) -> str:
    """Tooltip words for a per-image number's key: the glossary's for a metric (E5.kl) or a line (E3.…)."""
    line, _, name = key.partition(".")
    if line == "E5" and name in METRICS:
        return glossary.metric_help(name)
    return (
        f"{quantity_words(key)}. " + glossary.line_help(line) if line in LINE_NAMES else quantity_words(key)
    )


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

# The band charts are the HTML report's own SVG (verification.report.band_svg: the same geometry, marks and
# words), each a picture on a light card, all of a report in one element. As five plotly figures the
# Similarity page cost Chromium about 0.8 s more CPU to settle, and as inline SVG in markdown still ~0.25 s of
# markdown parsing (load 2–5 on 2 cores); a picture is decoded once, off the page's scripts.
BAND_WIDTH = 600  # px of the SVG's own drawing; a narrower column scales it down
_BAND_CSS = (
    "<style>"
    ".bandgrid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,28rem),1fr));"
    "gap:.4rem 1rem}.bandcard{margin:0 0 .6rem}.bandcard figcaption{font-weight:600;margin:0 0 .3rem}"
    ".bandcard img{display:block;max-width:100%;height:auto;background:#fff;border-radius:.4rem}"
    "</style>"
)


def band_title(line: LineResult) -> str:
    """The chart's title: the line, its status and whether it votes."""
    votes = "" if line.votes else " · does not vote"
    return f"{line.key} {line.name} ({STATUS_LABELS.get(line.status, line.status)}{votes})"


def band_card(line: LineResult) -> str | None:
    """One line's band chart with its title, as HTML (None when no class measured a value): per class, the
    passing side of the threshold shaded green and the failing side red, the healthy models' band and edge,
    the threshold a bar, this run's value a dot with its 95 % interval — each labelled with its number."""
    rows: Sequence[Band] = bands(line)
    if not rows:
        return None
    title = html.escape(band_title(line))
    svg = base64.b64encode(band_svg(rows, width=BAND_WIDTH).encode()).decode()
    return (
        f'<figure class="bandcard"><figcaption>{title}</figcaption>'
        f'<img alt="{title}: band chart" src="data:image/svg+xml;base64,{svg}"></figure>'
    )


def band_cards(lines: Sequence[LineResult]) -> str:
    """The band charts of ``lines`` that have a measured value, side by side where the width allows, as
    one HTML string ("" when none has)."""
    cards = [c for ln in lines if (c := band_card(ln)) is not None]
    return f'{_BAND_CSS}<div class="bandgrid">{"".join(cards)}</div>' if cards else ""


def draw_band_charts(report: VerificationReport) -> None:
    """Every line's band chart that has a measured value (E0's pass rate left out: it has no threshold)."""
    cards = band_cards([ln for ln in report.lines if ln.key != "E0"])
    if not cards:
        return
    st.markdown(
        "**Band charts** — green: the passing side of the threshold; dashed: the healthy models' edge; dot: "
        "this run with its 95 % interval",
        help=glossary.help_for("in-distribution band"),
    )
    st.html(cards)
