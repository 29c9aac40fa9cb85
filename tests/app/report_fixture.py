"""One hand-built verification result, shared by the dashboard's report tests (tests/app/test_report.py) and
the HTML/PDF report tests (tests/app/test_report_pdf.py): a shortcut-like model whose nodule calls rely on
evidence outside the anatomy (E3 fails for nodule, passes for normal); each test adds its own other lines,
images and examples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from verification.verdict import (
    ClassLine,
    ClassVerdict,
    Example,
    ImageEvidence,
    LineResult,
    VerificationReport,
)

CLASSES = ("normal", "nodule")

E3 = LineResult(
    key="E3",
    name="reliance on evidence outside the anatomy",
    status="fail",
    decisive=True,
    per_class=(
        ClassLine(
            "normal", "pass", value=0.04, low=0.01, high=0.07, threshold=0.15, higher_is_better=False, n=30,
            numbers={"E3.outside_drop": 0.04},
        ),
        ClassLine(
            "nodule", "fail", value=0.61, low=0.52, high=0.70, threshold=0.15, higher_is_better=False, n=29,
            reason="predictions change when only the outside of the lungs is neutralised",
            numbers={"E3.outside_drop": 0.61},
        ),
    ),
    calibration="99th percentile of 4 healthy models; separation AUROC 0.97 against randomised",
    separation=0.97,
    sentence="Nodule calls follow something outside the lungs.",
)  # fmt: skip


def shortcut_report(
    lines: Sequence[LineResult],
    images: Sequence[ImageEvidence],
    examples: Sequence[Example],
    references: Mapping[str, np.ndarray],
    **more: Any,
) -> VerificationReport:
    """The unsuitable verdict decided by E3, 80 % accurate (Wilson 69–88 %), 60 images of which one is not
    assessable; with ``lines`` (E3 among them), ``images``, ``examples``, ``references`` and ``more``."""
    return VerificationReport(
        verdict="unsuitable",
        deciding_line="E3",
        reason="nodule calls rely on evidence outside the anatomy",
        class_names=CLASSES,
        classes=(
            ClassVerdict("normal", "suitable", None, "every decisive line passes", 30, 30),
            ClassVerdict("nodule", "unsuitable", "E3", "relies on evidence outside the lungs", 30, 29),
        ),
        lines=tuple(lines),
        images=tuple(images),
        accuracy=0.8,
        accuracy_interval=(0.69, 0.88),
        n_images=60,
        n_not_assessable=1,
        examples=tuple(examples),
        references=dict(references),
        **more,
    )
