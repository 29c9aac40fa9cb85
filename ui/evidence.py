"""The verdict on a page: the word, the line that decided it, accuracy beside it, the evidence lines in plain
words with their numbers, thresholds and calibration, the per-class verdicts and the per-image "why".

Every page that shows a verdict (Attention, Similarity, Dataset check, Compare models, Report & export) draws
it through these functions, so the words are the same everywhere (the status words are the backend's). The
tables are built by plain functions (no Streamlit calls) so tests can read them; the drawing functions only
lay them out.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import streamlit as st

from ui.state import K
from verification.compare import Comparison
from verification.metrics import METRICS
from verification.verdict import (
    LINE_NAMES,
    STATUS_LABELS,
    ClassLine,
    ImageEvidence,
    LineResult,
    VerificationReport,
)
from verification.verdict.measure import QUANTITIES

STATUS_MARK = {
    "pass": "✅",
    "fail": "❌",
    "inconclusive": "❔",
    "not_assessable": "⛔",
    "uninformative": "➖",
}
VERDICT_ICONS = {
    "suitable": ":material/verified:",
    "unsuitable": ":material/gpp_bad:",
    "cannot_verify": ":material/help:",
}
NOT_ASSESSABLE = "not assessable"


# ---------------------------------------------------------------------------------------------- words


def _num(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}"


def status_words(status: str) -> str:
    return f"{STATUS_MARK.get(status, '')} {STATUS_LABELS.get(status, status)}".strip()


def line_numbers(c: ClassLine) -> str:
    """One class's measurement in words: ``0.62 [0.55, 0.70] (Wilson 95 %, n = 30)``."""
    if c.value is None:
        return "—" if c.n == 0 else f"— (n = {c.n})"
    text = _num(c.value)
    if c.low is not None and c.high is not None:
        text += f" [{_num(c.low)}, {_num(c.high)}]"
    extra = ", ".join(x for x in (c.interval, f"n = {c.n}") if x)
    return f"{text} ({extra})"


def quantity_words(key: str) -> str:
    """A per-image number's key (``E3.outside_energy``) in words, from the backend's registries."""
    if key in QUANTITIES:
        return QUANTITIES[key].description
    line, _, name = key.partition(".")
    if line == "E5" and name in METRICS:
        return f"{METRICS[name].label} of the map with its class reference"
    return key


def threshold_words(c: ClassLine) -> str:
    if c.threshold is None:
        return "—"
    return f"{'≥' if c.higher_is_better else '≤'} {_num(c.threshold)} to pass"


def accuracy_words(report: VerificationReport) -> str:
    if report.accuracy is None:
        if any(im.label for im in report.images):
            return "accuracy n/a (no labelled image could be assessed)"
        return "accuracy n/a (no labels)"
    text = f"accuracy {report.accuracy:.1%}"
    if report.accuracy_interval is not None:
        lo, hi = report.accuracy_interval
        text += f" [{lo:.1%}, {hi:.1%}]"
    return text


def verdict_detail(report: VerificationReport) -> str:
    """The sentence under the verdict word: the reason, accuracy and what could not be assessed."""
    parts = [report.reason.rstrip("."), accuracy_words(report), f"{report.n_images} images"]
    if report.n_not_assessable:
        parts.append(f"{report.n_not_assessable} not assessable")
    if report.errors:
        parts.append(f"{len(report.errors)} unreadable")
    if report.verdict == "cannot_verify" and (missing := missing_words(report)):
        parts.append(missing)
    return " · ".join(parts)


def missing_words(report: VerificationReport, *, shown: int = 2) -> str:
    """What would be needed to verify beyond what the reason says: the first ``shown`` items and a count
    ("" when the reason already says it all)."""
    items = [m for m in report.missing if m not in report.reason]
    if not items:
        return ""
    more = len(items) - shown
    return (
        "missing: "
        + "; ".join(items[:shown])
        + (f"; and {more} more (see the classes below)" if more > 0 else "")
    )


def verdict_headline(report: VerificationReport, subject: str = "") -> str:
    head = f"{subject}: {report.label}" if subject else report.label
    if report.deciding_line:
        head += f" — decided by {report.deciding_line} {LINE_NAMES.get(report.deciding_line, '')}".rstrip()
    return head


# ---------------------------------------------------------------------------------------------- tables


def lines_table(report: VerificationReport) -> pd.DataFrame:
    """One row per evidence line: its result in words, whether it votes, its calibration, its sentence."""
    rows = []
    for ln in report.lines:
        rows.append(
            {
                "line": f"{ln.key} {ln.name}",
                "result": status_words(ln.status),
                "votes": "deciding" if ln.key == report.deciding_line else ("yes" if _votes(ln) else "no"),
                "separation (AUROC)": _num(ln.separation, 2),
                "calibration": ln.calibration or "—",
                "what it found": ln.sentence,
            }
        )
    return pd.DataFrame.from_records(rows, columns=_LINE_COLUMNS)


_LINE_COLUMNS = ["line", "result", "votes", "separation (AUROC)", "calibration", "what it found"]


def _votes(ln: LineResult) -> bool:
    return ln.decisive and ln.status != "uninformative"


def line_class_table(line: LineResult) -> pd.DataFrame:
    """One line per class: result, number with its interval, threshold, reason."""
    rows = [
        {
            "class": c.class_name,
            "result": status_words(c.status),
            "measured": line_numbers(c),
            "threshold": threshold_words(c),
            "why": c.reason,
        }
        for c in line.per_class
    ]
    return pd.DataFrame.from_records(rows, columns=["class", "result", "measured", "threshold", "why"])


def classes_table(report: VerificationReport) -> pd.DataFrame:
    rows = [
        {
            "class": c.class_name,
            "verdict": c.label,
            "deciding line": (
                f"{c.deciding_line} {LINE_NAMES.get(c.deciding_line, '')}".strip() if c.deciding_line else "—"
            ),
            "why": c.reason + (f" (missing: {'; '.join(c.missing)})" if c.missing else ""),
            "assessable images": f"{c.n_assessable} of {c.n_images}",
        }
        for c in report.classes
    ]
    return pd.DataFrame.from_records(
        rows, columns=["class", "verdict", "deciding line", "why", "assessable images"]
    )


def image_state(im: ImageEvidence) -> str:
    if not im.assessable:
        reason = im.not_assessable_reason or "excluded by the input-validity gate"
        return f"{NOT_ASSESSABLE}: {reason}"
    return "assessed"


def images_table(report: VerificationReport) -> pd.DataFrame:
    """Per image: what the model said, whether it could be assessed and why, and its per-line numbers."""
    keys = sorted({k for im in report.images for k in im.values})
    rows = []
    for im in report.images:
        p = max(im.probabilities) if im.probabilities else None
        row: dict[str, object] = {
            "image": im.name,
            "label": im.label or "—",
            "predicted": "—" if im.predicted is None else f"{im.predicted} ({_num(p, 2)})",
            "assessed": image_state(im),
            "why": im.why,
        }
        row.update({k: im.values.get(k) for k in keys})
        rows.append(row)
    return pd.DataFrame.from_records(rows, columns=["image", "label", "predicted", "assessed", "why", *keys])


def image_evidence(report: VerificationReport, name: str) -> ImageEvidence | None:
    for im in report.images:
        if im.name == name:
            return im
    return None


# ---------------------------------------------------------------------------------------------- drawing


def faithfulness_switch() -> bool:
    """The switch for E6 (deletion/insertion against a random order: ~40 extra forwards per image)."""
    K.VERIFY_FAITHFULNESS.init()
    return bool(
        st.toggle(
            "Include the faithfulness line (E6, slower)",
            key=K.VERIFY_FAITHFULNESS.name,
            help="Deletion and insertion curves against a random pixel order: about 40 extra forwards per "
            "image. Off, E6 is reported as not assessed and does not vote.",
        )
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
    cols[0].metric("Verdict", report.label)
    interval = report.accuracy_interval
    cols[1].metric(
        "Accuracy",
        "n/a" if report.accuracy is None else f"{report.accuracy:.1%}",
        help=None if interval is None else f"Wilson 95 % interval {interval[0]:.1%} – {interval[1]:.1%}",
    )
    cols[2].metric("Images assessed", f"{report.n_images - report.n_not_assessable} of {report.n_images}")
    cols[3].metric("Not assessable", report.n_not_assessable)


def evidence(report: VerificationReport, *, per_image: bool = True) -> None:
    """The verdict's evidence: per class, per line (each with its per-class numbers), the not-assessable
    images and, if asked, the per-image table."""
    for warning in report.warnings:
        st.warning(warning, icon=":material/warning:")
    st.markdown("**Per class**")
    st.dataframe(classes_table(report), hide_index=True, width="stretch")
    st.markdown("**Evidence lines** — each passed, failed, was not assessable or was not informative")
    st.dataframe(lines_table(report), hide_index=True, width="stretch")
    for ln in report.lines:
        if not ln.per_class:
            continue
        title = f"{ln.key} {ln.name}: {status_words(ln.status)}"
        with st.expander(title, expanded=ln.key == report.deciding_line):
            st.markdown(ln.sentence or LINE_NAMES.get(ln.key, ""))
            if ln.calibration:
                st.caption(f"Threshold calibration: {ln.calibration}")
            st.dataframe(line_class_table(ln), hide_index=True, width="stretch")
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
        st.dataframe(images_table(report), hide_index=True, width="stretch")


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


def image_values_table(im: ImageEvidence) -> pd.DataFrame:
    """One image's numbers, line by line, in words (numbers not measured on this image left out)."""
    keys = sorted(k for k, v in im.values.items() if v is not None)
    return pd.DataFrame(
        {
            "line": [
                f"{k.partition('.')[0]} {LINE_NAMES.get(k.partition('.')[0], '')}".strip() for k in keys
            ],
            "value": [_num(im.values[k]) for k in keys],
            "measured on this image": [quantity_words(k) for k in keys],
        }
    )


def document_json(report: VerificationReport) -> str:
    """The backend's one result document as JSON (what ``python -m verification report`` renders)."""
    return json.dumps(report.to_document(), indent=2, allow_nan=False)


def downloads(report: VerificationReport, *, stem: str) -> None:
    """The per-image table as CSV and the whole result document as JSON, side by side."""
    c1, c2, _ = st.columns([1, 1, 4])
    c1.download_button(
        "Download CSV",
        images_table(report).to_csv(index=False),
        file_name=f"{stem}.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/table:",
    )
    c2.download_button(
        "Download JSON",
        document_json(report),
        file_name=f"{stem}.json",
        mime="application/json",
        on_click="ignore",
        icon=":material/data_object:",
        help="The full result document; `python -m verification report` turns it into the HTML report.",
    )


def comparison_table(comparison: Comparison) -> pd.DataFrame:
    """Compare models' line-by-line table: per line (and class), each model's result and number."""
    rows = []
    for r in comparison.rows:
        rows.append(
            {
                "line": f"{r.line} {r.name}",
                "class": r.class_name or "all classes",
                "A": "—" if r.status_a is None else status_words(r.status_a),
                "A measured": _num(r.value_a),
                "B": "—" if r.status_b is None else status_words(r.status_b),
                "B measured": _num(r.value_b),
                "threshold": "—"
                if r.threshold_a is None
                else f"{'≥' if r.higher_is_better else '≤'} {_num(r.threshold_a)}",
                "votes": "yes" if (r.votes_a or r.votes_b) else "no",
            }
        )
    return pd.DataFrame.from_records(
        rows, columns=["line", "class", "A", "A measured", "B", "B measured", "threshold", "votes"]
    )
