"""The suitability verdict built from evidence lines E0–E6 (METHODS.md §3).

``records``: the frozen result types and the one JSON document (:class:`VerificationReport`);
the lines, their calibration on healthy variation with a power check, and the combiner live in the
modules beside it; :func:`verify` is the one verify path used by the API, the CLI and the dashboard.
"""

from __future__ import annotations

from verification.verdict.api import calibrate_bundle, verify
from verification.verdict.records import (
    LINE_NAMES,
    SCHEMA,
    SCHEMA_VERSION,
    STATUS_LABELS,
    VERDICT_LABELS,
    ClassLine,
    ClassVerdict,
    Example,
    ImageEvidence,
    LineResult,
    Status,
    Verdict,
    VerdictConfig,
    VerificationReport,
)

__all__ = [
    "LINE_NAMES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STATUS_LABELS",
    "VERDICT_LABELS",
    "ClassLine",
    "ClassVerdict",
    "Example",
    "ImageEvidence",
    "LineResult",
    "Status",
    "Verdict",
    "VerdictConfig",
    "VerificationReport",
    "calibrate_bundle",
    "verify",
]
