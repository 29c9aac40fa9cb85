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
        votes_a = la is not None and la.decisive and la.status != "uninformative"
        votes_b = lb is not None and lb.decisive and lb.status != "uninformative"
        rows.append(
            LineComparison(
                line=key,
                name=any_line.name,
                class_name=None,
                status_a=None if la is None else la.status,
                status_b=None if lb is None else lb.status,
                value_a=None,
                value_b=None,
                threshold_a=None,
                threshold_b=None,
                higher_is_better=True,
                votes_a=votes_a,
                votes_b=votes_b,
            )
        )
        for cls in classes:
            ca = None if la is None else la.for_class(cls)
            cb = None if lb is None else lb.for_class(cls)
            if ca is None and cb is None:
                continue
            ref = ca or cb
            assert ref is not None
            rows.append(
                LineComparison(
                    line=key,
                    name=any_line.name,
                    class_name=cls,
                    status_a=None if ca is None else ca.status,
                    status_b=None if cb is None else cb.status,
                    value_a=None if ca is None else ca.value,
                    value_b=None if cb is None else cb.value,
                    threshold_a=None if ca is None else ca.threshold,
                    threshold_b=None if cb is None else cb.threshold,
                    higher_is_better=ref.higher_is_better,
                    votes_a=votes_a,
                    votes_b=votes_b,
                )
            )
    return tuple(rows)


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
