"""The verdict in words and tables, as the dashboard shows it and a notebook can print it: each status with
its mark, a class's number with its interval, the threshold and its direction, accuracy, what is missing, the
headline; one table per concern (lines, a line's classes, classes, images, an image's numbers, a comparison of
two models) and the result document as JSON.

The words of the HTML and PDF reports are :mod:`verification.report`'s; these are the dashboard's (the
reports' own layout differs), built from the same records so they cannot disagree on a number.
"""

from __future__ import annotations

import json
import math

import pandas as pd

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
from verification.verdict.explain import Explanation
from verification.verdict.measure import QUANTITIES

__all__ = [
    "NOT_ASSESSABLE",
    "STATUS_MARK",
    "accuracy_words",
    "classes_table",
    "comparison_table",
    "document_json",
    "explanation_table",
    "image_evidence",
    "image_state",
    "image_values_table",
    "images_table",
    "line_class_table",
    "line_numbers",
    "lines_table",
    "missing_words",
    "number",
    "quantity_words",
    "status_words",
    "threshold_words",
    "verdict_detail",
    "verdict_headline",
]

STATUS_MARK = {
    "pass": "✅",
    "fail": "❌",
    "inconclusive": "❔",
    "not_assessable": "⛔",
    "uninformative": "➖",
}


NOT_ASSESSABLE = "not assessable"


def number(v: float | None, digits: int = 3) -> str:
    """A number to ``digits`` decimals; "—" for a missing or NaN one."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}"


def status_words(status: str) -> str:
    return f"{STATUS_MARK.get(status, '')} {STATUS_LABELS.get(status, status)}".strip()


def line_numbers(c: ClassLine) -> str:
    """One class's measurement in words: ``0.62 [0.55, 0.70] (Wilson 95 %, n = 30)``."""
    if c.value is None:
        return "—" if c.n == 0 else f"— (n = {c.n})"
    text = number(c.value)
    if c.low is not None and c.high is not None:
        text += f" [{number(c.low)}, {number(c.high)}]"
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
    return f"{'≥' if c.higher_is_better else '≤'} {number(c.threshold)} to pass"


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
    """The verdict's one headline (:meth:`VerificationReport.headline`), after ``subject: `` when given."""
    return f"{subject}: {report.headline()}" if subject else report.headline()


def lines_table(report: VerificationReport) -> pd.DataFrame:
    """One row per evidence line: its result in words, whether it votes, its calibration, its sentence."""
    rows = []
    for ln in report.lines:
        rows.append(
            {
                "line": f"{ln.key} {ln.name}",
                "result": status_words(ln.status),
                "votes": "deciding" if ln.key in report.deciding_lines else ("yes" if ln.votes else "no"),
                "separation (AUROC)": number(ln.separation, 2),
                "calibration": ln.calibration or "—",
                "what it found": ln.sentence,
            }
        )
    return pd.DataFrame.from_records(rows, columns=_LINE_COLUMNS)


_LINE_COLUMNS = ["line", "result", "votes", "separation (AUROC)", "calibration", "what it found"]


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
            "predicted": "—" if im.predicted is None else f"{im.predicted} ({number(p, 2)})",
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


def explanation_table(ex: Explanation) -> pd.DataFrame:
    """The numbers an explanation rests on, as a two-column table (numbers to 3 decimals)."""
    return pd.DataFrame(
        {
            "what": list(ex.numbers),
            "number": [number(v) if isinstance(v, float) else str(v) for v in ex.numbers.values()],
        }
    )


def image_values_table(im: ImageEvidence) -> pd.DataFrame:
    """One image's numbers, line by line, in words (numbers not measured on this image left out)."""
    keys = sorted(k for k, v in im.values.items() if v is not None)
    return pd.DataFrame(
        {
            "line": [
                f"{k.partition('.')[0]} {LINE_NAMES.get(k.partition('.')[0], '')}".strip() for k in keys
            ],
            "value": [number(im.values[k]) for k in keys],
            "measured on this image": [quantity_words(k) for k in keys],
        }
    )


def document_json(report: VerificationReport) -> str:
    """The backend's one result document as JSON (what ``python -m verification report`` renders)."""
    return json.dumps(report.to_document(), indent=2, allow_nan=False)


def comparison_table(comparison: Comparison) -> pd.DataFrame:
    """Compare models' line-by-line table: per line (and class), each model's result and number."""
    rows = []
    for r in comparison.rows:
        rows.append(
            {
                "line": f"{r.line} {r.name}",
                "class": r.class_name or "all classes",
                "A": "—" if r.status_a is None else status_words(r.status_a),
                "A measured": number(r.value_a),
                "B": "—" if r.status_b is None else status_words(r.status_b),
                "B measured": number(r.value_b),
                "threshold": "—"
                if r.threshold_a is None
                else f"{'≥' if r.higher_is_better else '≤'} {number(r.threshold_a)}",
                "votes": "yes" if (r.votes_a or r.votes_b) else "no",
            }
        )
    return pd.DataFrame.from_records(
        rows, columns=["line", "class", "A", "A measured", "B", "B measured", "threshold", "votes"]
    )
