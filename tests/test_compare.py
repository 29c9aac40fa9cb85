"""Compare models ranks by the evidence: a model that fails a decisive line is never "better"."""

from __future__ import annotations

import itertools

import pytest

from verification.compare import compare_reports
from verification.verdict import ClassLine, ClassVerdict, LineResult, VerificationReport

CLASSES = ("normal", "nodule")


def report(verdict: str, *, deciding: str | None = None, accuracy: float | None = 0.9) -> VerificationReport:
    """A two-class report whose E1 and E3 lines agree with ``verdict`` (E3 fails for an unsuitable model)."""
    e3_status = "fail" if verdict == "unsuitable" else "pass"
    if verdict == "cannot_verify":
        e3_status = "not_assessable"
    e3 = LineResult(
        key="E3",
        name="reliance on evidence outside the anatomy",
        status=e3_status,  # type: ignore[arg-type]
        decisive=True,
        per_class=tuple(
            ClassLine(
                c,
                e3_status,  # type: ignore[arg-type]
                value=0.4 if e3_status == "fail" else 0.05,
                threshold=0.2,
                higher_is_better=False,
            )
            for c in CLASSES
        ),
        sentence="…",
    )
    e5 = LineResult(key="E5", name="agreement with reference maps", status="uninformative", decisive=False)
    return VerificationReport(
        verdict=verdict,  # type: ignore[arg-type]
        deciding_line=deciding if deciding else ("E3" if verdict != "suitable" else None),
        reason=f"reason for {verdict}",
        class_names=CLASSES,
        classes=tuple(ClassVerdict(c, verdict, None, "", 30, 30) for c in CLASSES),  # type: ignore[arg-type]
        lines=(e3, e5),
        images=(),
        accuracy=accuracy,
        n_images=60,
        n_not_assessable=0,
        missing=("labels or annotations",) if verdict == "cannot_verify" else (),
    )


VERDICTS = ("suitable", "unsuitable", "cannot_verify")


@pytest.mark.parametrize(("va", "vb"), list(itertools.product(VERDICTS, VERDICTS)))
def test_an_unsuitable_model_is_never_better(va: str, vb: str) -> None:
    result = compare_reports(report(va, accuracy=0.5), report(vb, accuracy=0.99))
    verdicts = {"A": va, "B": vb}
    if result.better is not None:
        assert verdicts[result.better] == "suitable"
        other = "B" if result.better == "A" else "A"
        assert verdicts[other] != "suitable"
    else:
        assert (va == vb) or "suitable" not in (va, vb)


def test_the_suitable_model_wins_even_with_lower_accuracy() -> None:
    result = compare_reports(report("unsuitable", accuracy=0.99), report("suitable", accuracy=0.80))
    assert result.better == "B"
    assert "A is UNSUITABLE (fails E3 reliance on evidence outside the anatomy)" in result.reason


def test_cannot_verify_says_why_and_wins_nothing() -> None:
    result = compare_reports(report("cannot_verify"), report("unsuitable"))
    assert result.better is None
    assert "A CANNOT BE VERIFIED (reason for cannot_verify)" in result.reason


def test_rows_put_both_models_side_by_side_per_line_and_class() -> None:
    result = compare_reports(report("suitable"), report("unsuitable"))
    e3 = [r for r in result.rows if r.line == "E3"]
    assert [r.class_name for r in e3] == [None, "normal", "nodule"]
    assert e3[1].status_a == "pass"
    assert e3[1].status_b == "fail"
    assert e3[1].value_b == pytest.approx(0.4)
    assert all(r.votes_a and r.votes_b for r in e3)
    e5 = [r for r in result.rows if r.line == "E5"]
    assert not e5[0].votes_a, "an uninformative line does not vote"
