"""What both reports (HTML and PDF) say, in the same words: when the report was made, the accuracy with its
interval, the verdict per class, an example image's sentence."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from verification.verdict import Example, VerificationReport

__all__ = [
    "CLASS_COLUMNS",
    "accuracy_text",
    "as_report",
    "class_rows",
    "example_sentence",
    "made_now",
    "unit",
]

CLASS_COLUMNS = ["class", "verdict", "decided by", "why", "assessable"]
"""The columns of :func:`class_rows`."""


def made_now() -> str:
    """The current time, UTC, to the second: when a report is made (not when its verdict was computed)."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def as_report(report: VerificationReport | Mapping[str, Any]) -> VerificationReport:
    """The report itself, or the one its result document (``to_document()``, the ``--json`` file)
    describes."""
    from verification.verdict import VerificationReport

    return report if isinstance(report, VerificationReport) else VerificationReport.from_document(report)


def accuracy_text(report: VerificationReport) -> str:
    """The accuracy in percent with its Wilson 95 % interval, or why there is none."""
    acc = "n/a (no labels)" if report.accuracy is None else f"{100 * report.accuracy:.1f} %"
    if report.accuracy_interval is not None:
        lo, hi = report.accuracy_interval
        acc += f" (Wilson 95 % {100 * lo:.1f}–{100 * hi:.1f} %)"
    return acc


def unit(report: VerificationReport) -> str:
    """What a verdict is given per: "label" for a multi-label model, else "class"."""
    return "label" if getattr(report, "task", "classification") == "multilabel" else "class"


def class_rows(report: VerificationReport) -> list[list[Any]]:
    """The verdict per class, one row per class in the order of :data:`CLASS_COLUMNS`."""
    return [
        [c.class_name, c.label, c.deciding_line, c.reason, f"{c.n_assessable}/{c.n_images}"]
        for c in report.classes
    ]


def example_sentence(report: VerificationReport, ex: Example) -> str:
    """The plain sentence of an example image (:func:`verification.verdict.explain.explain_image`, located on
    its map), or its note when the report has no record of it."""
    from verification.verdict.explain import explain_image, locate, thresholds

    im = next((i for i in report.images if i.name == ex.image), None)
    if im is None:
        return str(ex.note)
    return explain_image(im, location=locate(ex.map), limits=thresholds(report)).sentence
