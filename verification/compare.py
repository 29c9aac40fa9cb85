"""Two models' verdicts on the same images, ranked by the evidence (METHODS.md §3).

The rule, in order:

1. A model that fails a decisive line (verdict UNSUITABLE) is never "better", whatever its other numbers.
2. A SUITABLE model is better than one that is UNSUITABLE or CANNOT VERIFY: only it passed every assessable
   decisive line.
3. Otherwise — both SUITABLE, both UNSUITABLE, both CANNOT VERIFY, or one UNSUITABLE and one CANNOT VERIFY —
   no model is named better; the reason says what each verdict rests on, and the line-by-line table shows
   the numbers side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from verification.verdict import LINE_NAMES, VerificationReport
from verification.verdict.records import ClassLine, LineResult

__all__ = ["Comparison", "LineComparison", "compare_reports"]

Side = Literal["A", "B"]


@dataclass(frozen=True)
class LineComparison:
    """One evidence line for one class (``class_name`` None: the line over the whole run) in both models."""

    line: str
    name: str
    class_name: str | None
    status_a: str | None
    status_b: str | None
    value_a: float | None
    value_b: float | None
    threshold_a: float | None
    threshold_b: float | None
    higher_is_better: bool
    votes_a: bool
    votes_b: bool


@dataclass(frozen=True)
class Comparison:
    """``better`` is "A", "B" or None (no model can be ranked above the other); ``reason`` in plain words."""

    better: Side | None
    reason: str
    rows: tuple[LineComparison, ...]


def _why(tag: str, report: VerificationReport) -> str:
    if report.verdict == "unsuitable":
        line = report.deciding_line or "a decisive line"
        return f"{tag} is UNSUITABLE (fails {line} {LINE_NAMES.get(line, '')}".rstrip() + ")"
    if report.verdict == "cannot_verify":
        return f"{tag} CANNOT BE VERIFIED ({report.reason.rstrip('.')})"
    return f"{tag} is SUITABLE"


def _rows(a: VerificationReport, b: VerificationReport) -> tuple[LineComparison, ...]:
    keys = list(dict.fromkeys([ln.key for ln in a.lines] + [ln.key for ln in b.lines]))
    classes = list(dict.fromkeys([*a.class_names, *b.class_names]))
    rows = []
    for key in sorted(keys):
        la, lb = a.line(key), b.line(key)
        any_line = la or lb
        assert any_line is not None
        votes = (
            la is not None and la.decisive and la.status != "uninformative",
            lb is not None and lb.decisive and lb.status != "uninformative",
        )
        rows.append(_row(key, any_line.name, None, _whole(la), _whole(lb), votes))
        for cls in classes:
            ca = None if la is None else la.for_class(cls)
            cb = None if lb is None else lb.for_class(cls)
            if ca is not None or cb is not None:
                rows.append(_row(key, any_line.name, cls, ca, cb, votes))
    return tuple(rows)


def _whole(line: LineResult | None) -> ClassLine | None:
    """A line over the whole run as one side of a row: its status (no value, no threshold)."""
    return None if line is None else ClassLine("", line.status)


def _row(
    key: str,
    name: str,
    cls: str | None,
    ca: ClassLine | None,
    cb: ClassLine | None,
    votes: tuple[bool, bool],
) -> LineComparison:
    """Line ``key`` in both models for class ``cls`` (None: the line over the whole run), from each side's
    result (None: the model has none)."""
    ref = ca or cb
    assert ref is not None
    return LineComparison(
        line=key,
        name=name,
        class_name=cls,
        status_a=None if ca is None else ca.status,
        status_b=None if cb is None else cb.status,
        value_a=None if ca is None else ca.value,
        value_b=None if cb is None else cb.value,
        threshold_a=None if ca is None else ca.threshold,
        threshold_b=None if cb is None else cb.threshold,
        higher_is_better=ref.higher_is_better,
        votes_a=votes[0],
        votes_b=votes[1],
    )


def compare_reports(a: VerificationReport, b: VerificationReport) -> Comparison:
    """Rank two models' verdicts on the same images (see the module docstring for the rule)."""
    rows = _rows(a, b)
    why = f"{_why('A', a)}; {_why('B', b)}"
    if a.verdict == b.verdict == "suitable":
        acc = ""
        if a.accuracy is not None and b.accuracy is not None:
            acc = f" (accuracy A {a.accuracy:.1%}, B {b.accuracy:.1%})"
        return Comparison(
            None,
            f"both are SUITABLE: each passes every assessable decisive line{acc}; the evidence does not rank "
            "one above the other",
            rows,
        )
    if a.verdict == "suitable":
        return Comparison("A", f"{why}: only A passes every assessable decisive line", rows)
    if b.verdict == "suitable":
        return Comparison("B", f"{why}: only B passes every assessable decisive line", rows)
    if a.verdict == b.verdict == "unsuitable":
        return Comparison(None, f"{why}: both fail a decisive line, so neither is better", rows)
    return Comparison(None, f"{why}: no model passes verification, so neither is better", rows)
