"""The verdict as the dashboard writes it (verification.summary, no Streamlit): the words of every line, the
per-image "why", the not-assessable images, and the JSON download, which is the backend's one result document
and renders with ``python -m verification report``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.app.conftest import ROOT
from tests.app.report_fixture import E3, shortcut_report
from verification import summary
from verification.verdict import ClassLine, Example, ImageEvidence, LineResult, VerificationReport


def _report() -> VerificationReport:
    """A shortcut-like model: E3 fails for the nodule class, E5 is uninformative, one image is out of
    domain."""
    e1 = LineResult(
        key="E1",
        name="task performance",
        status="pass",
        decisive=True,
        per_class=(
            ClassLine(
                "normal", "pass", value=0.82, low=0.70, high=0.90, threshold=0.5, n=30, interval="Wilson 95 %"
            ),
            ClassLine(
                "nodule", "pass", value=0.78, low=0.64, high=0.88, threshold=0.5, n=29, interval="Wilson 95 %"
            ),
        ),
        calibration="chance + margin 0.5 (METHODS.md §3)",
        sentence="Both classes are recognised well above chance.",
    )
    e5 = LineResult(
        key="E5",
        name="agreement with reference maps",
        status="uninformative",
        decisive=False,
        separation=0.55,
        sentence="The reference-map band does not separate healthy from known-bad models.",
    )
    images = (
        ImageEvidence(
            "a.png",
            "nodule",
            "nodule",
            (0.1, 0.9),
            True,
            values={"E3.flip": 1.0},
            why="flips without the marker",
        ),
        ImageEvidence(
            "leg.png",
            None,
            "nodule",
            (0.0, 1.0),
            False,
            not_assessable_reason="input outside the model's domain (early feature shift 9.1 > 3.2)",
        ),
    )
    return shortcut_report(
        (e1, E3, e5),
        images,
        (Example("a.png", "nodule", np.zeros((4, 4), np.float32)),),
        {"nodule": np.zeros((4, 4), np.float32)},
    )


def test_the_headline_names_the_deciding_line_and_accuracy_stands_beside_it() -> None:
    report = _report()
    assert summary.verdict_headline(report, "Model") == (
        "Model: UNSUITABLE — decided by E3 reliance on evidence outside the anatomy"
    )
    detail = summary.verdict_detail(report)
    assert "accuracy 80.0% [69.0%, 88.0%]" in detail
    assert "1 not assessable" in detail


def test_every_line_in_plain_words_with_its_vote() -> None:
    table = summary.lines_table(_report()).set_index("line")
    assert table.loc["E1 task performance", "result"].endswith("passed")
    assert table.loc["E3 reliance on evidence outside the anatomy", "result"].endswith("failed")
    assert table.loc["E3 reliance on evidence outside the anatomy", "votes"] == "deciding"
    assert table.loc["E5 agreement with reference maps", "result"].endswith("not informative (does not vote)")
    assert table.loc["E5 agreement with reference maps", "votes"] == "no"
    assert "healthy models" in table.loc["E3 reliance on evidence outside the anatomy", "calibration"]


def test_a_suitable_verdict_marks_every_line_it_passed_as_deciding() -> None:
    from dataclasses import replace

    report = replace(_report(), verdict="suitable", deciding_line="E1+E3")
    assert report.deciding_lines == ("E1", "E3")
    votes = summary.lines_table(report).set_index("line")["votes"]
    assert votes["E1 task performance"] == "deciding"
    assert votes["E3 reliance on evidence outside the anatomy"] == "deciding"
    assert votes["E5 agreement with reference maps"] == "no"
    assert replace(report, deciding_line=None).deciding_lines == ()


def test_class_numbers_carry_interval_threshold_and_direction() -> None:
    e3 = _report().line("E3")
    assert e3 is not None
    rows = summary.line_class_table(e3).set_index("class")
    assert rows.loc["nodule", "measured"] == "0.610 [0.520, 0.700] (n = 29)"
    assert rows.loc["nodule", "threshold"] == "≤ 0.150 to pass"
    assert "outside of the lungs" in rows.loc["nodule", "why"]


def test_a_not_assessable_image_says_so_and_why() -> None:
    table = summary.images_table(_report()).set_index("image")
    assert table.loc["leg.png", "assessed"].startswith("not assessable: input outside the model's domain")
    assert table.loc["a.png", "assessed"] == "assessed"
    assert table.loc["a.png", "why"] == "flips without the marker"
    assert table.loc["a.png", "E3.flip"] == 1.0


def test_accuracy_without_assessable_labelled_images_says_why() -> None:
    from dataclasses import replace

    report = _report()
    gated = replace(report, accuracy=None, accuracy_interval=None)
    assert "no labelled image could be assessed" in summary.verdict_detail(gated)
    unlabelled = replace(gated, images=tuple(replace(im, label=None) for im in report.images))
    assert "accuracy n/a (no labels)" in summary.verdict_detail(unlabelled)


def test_cannot_verify_names_what_is_missing() -> None:
    from dataclasses import replace

    report = replace(
        _report(),
        verdict="cannot_verify",
        deciding_line=None,
        reason="the bundle's classes do not match the model",
        missing=("a reference bundle for the classes normal, nodule",),
    )
    assert summary.verdict_headline(report) == "CANNOT VERIFY"
    assert "missing: a reference bundle for the classes normal, nodule" in summary.verdict_detail(report)


def test_the_json_download_is_the_result_document_and_renders_as_the_report(tmp_path: Path) -> None:
    report = _report()
    text = summary.document_json(report)
    back = VerificationReport.from_document(json.loads(text))
    assert back.verdict == report.verdict
    assert back.line("E3") == report.line("E3")
    assert back.images == report.images
    path = tmp_path / "result.json"
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "report.html"
    res = subprocess.run(
        [sys.executable, "-m", "verification", "report", str(path), "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    html = out.read_text(encoding="utf-8")
    assert "UNSUITABLE" in html
    assert "leg.png" in html


@pytest.mark.parametrize("status", ["pass", "fail", "inconclusive", "not_assessable", "uninformative"])
def test_every_status_has_words(status: str) -> None:
    words = summary.status_words(status)
    assert (
        status.replace("_", " ") in words or "informative" in words or "passed" in words or "failed" in words
    )
