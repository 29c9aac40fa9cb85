"""The PDF report (verification.report.pdf) and the HTML report's size, time and band charts
(verification.report), on a hand-built result with a real picture."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace

import numpy as np
import pypdfium2 as pdfium
import pytest

from tests.app.report_fixture import E3, shortcut_report
from verification.report import bands, made_now, render_pdf, render_report, ticks
from verification.report import pdf as report_pdf
from verification.verdict import ClassLine, Example, ImageEvidence, LineResult, VerificationReport

MADE = "2026-01-02 03:04:05 UTC"


def _picture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:1024, 0:1024]
    base = 128 + 60 * np.sin(x / 40.0) * np.cos(y / 55.0) + rng.normal(0, 12, (1024, 1024))
    return np.clip(base, 0, 255).astype(np.uint8)


def _report(n_examples: int = 2) -> VerificationReport:
    e4 = LineResult(
        key="E4",
        name="finding counterfactual",
        status="pass",
        decisive=True,
        per_class=(
            ClassLine(
                "nodule",
                "pass",
                value=0.9,
                low=0.85,
                high=0.95,
                threshold=0.58,
                numbers={"healthy_edge": 0.97, "healthy_low": 0.97, "healthy_high": 0.99, "auroc": 1.0},
                n=29,
            ),
        ),
    )
    cam = np.zeros((16, 16), np.float32)
    cam[1:4, 1:4] = 1.0  # upper-left
    images = (
        *(
            ImageEvidence(
                f"img{i}.png",
                "nodule",
                "nodule",
                (0.1, 0.9),
                True,
                values={"E3.outside_drop": 0.6, "E3.outside_energy": 0.8},
            )
            for i in range(n_examples)
        ),
        ImageEvidence(
            "leg.png", None, "nodule", (0.0, 1.0), False, not_assessable_reason="early feature maps shifted"
        ),
    )
    return shortcut_report(
        (E3, e4),
        images,
        tuple(Example(f"img{i}.png", "nodule", cam) for i in range(n_examples)),
        {"nodule": np.outer(np.hanning(16), np.hanning(16)).astype(np.float32)},
        provenance={"created": "2020-05-05T00:00:00+00:00", "model": {"name": "m", "content_hash": "abc"}},
    )


def _displays(n: int) -> dict[str, np.ndarray]:
    return {f"img{i}.png": _picture(i) for i in range(n)}


def _text(pdf: pdfium.PdfDocument) -> list[str]:
    return [pdf[i].get_textpage().get_text_range() for i in range(len(pdf))]


def test_the_pdf_has_the_verdict_lines_numbers_and_examples() -> None:
    data = render_pdf(_report(), displays=_displays(2), made=MADE, title="Verification of m")
    assert data.startswith(b"%PDF-")
    assert len(data) < 250_000, len(data)  # two 320-px JPEG overlays, two references, one font subset
    assert data.count(b"/DCTDecode") >= 3  # the pictures are JPEG
    pdf = pdfium.PdfDocument(data)
    pages = _text(pdf)
    first = " ".join(pages[0].split())
    assert "Verification of m" in first
    assert "UNSUITABLE — decided by E3 reliance on evidence outside the anatomy" in first
    assert f"Report made {MADE}" in first
    assert "verdict computed 2020-05-05" in first
    assert "accuracy 80.0 % (Wilson 95 % 69.0–88.0 %)" in first
    everything = " ".join(" ".join(pages).split())
    assert "E3 reliance on evidence outside the anatomy: failed (votes)" in everything
    assert "[0.520, 0.700]" in everything
    assert "≤ 0.150" in everything
    assert "healthy edge 0.97" in everything
    assert "this run 0.61" in everything
    # the example's sentence, located on its map: the peak is in the upper-left corner
    assert "attention peaks in the upper-left corner of the image" in everything
    assert "the prediction changes when everything outside the anatomy is removed (60 points" in everything
    assert "leg.png" in everything
    assert "early feature maps shifted" in everything
    pdf.close()


def test_the_pdf_and_html_say_when_they_were_made_not_when_cached() -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    data = render_pdf(_report(1), displays=_displays(1))
    html = render_report(_report(1), displays=_displays(1))
    after = dt.datetime.now(dt.UTC)
    pdf = pdfium.PdfDocument(data)
    first = _text(pdf)[0]
    pdf.close()
    for text in (first, html):
        stamp = re.search(r"Report made (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", text)
        assert stamp is not None
        when = dt.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
        assert before <= when <= after
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", made_now())


def test_without_a_unicode_font_the_core_font_writes_the_symbols_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_pdf, "_font_dir", lambda: None)
    data = render_pdf(_report(1), displays=_displays(1), made=MADE)
    pdf = pdfium.PdfDocument(data)
    everything = " ".join(" ".join(_text(pdf)).split())
    pdf.close()
    assert "<= 0.150" in everything
    assert "UNSUITABLE - decided by E3" in everything
    assert "≤" not in everything
    assert "—" not in everything


def test_the_html_report_is_small_jpeg_svg_and_no_script() -> None:
    html = render_report(_report(8), displays=_displays(8), made=MADE)
    assert "<script" not in html
    assert "data:image/png" not in html
    assert html.count("data:image/jpeg;base64,") == 16  # 8 overlays + 8 references
    assert html.count('<svg class="band"') == 2
    assert f"Report made {MADE}" in html
    # every image in words in the per-image table (the gate's reason for the one it removed)
    assert "Not assessed: early feature maps shifted; the model&#x27;s prediction" in html
    assert html.count("Predicted nodule (90 %), as labelled") >= 8
    # eight 1024-px pictures at display size: far under a megabyte (was PNG at 512 px + 4.8 MB of plotly)
    assert len(html) < 600_000, len(html)


def test_band_axis_is_zoomed_to_the_numbers() -> None:
    e3 = _report().lines[0]
    rows = bands(e3)
    lo, hi = rows[0].axis
    # the numbers span 0.01 … 0.70; 8 % of that on each side, not the metric's whole range
    assert lo == pytest.approx(0.01 - 0.08 * 0.69)
    assert hi == pytest.approx(0.70 + 0.08 * 0.69)
    assert [r.class_name for r in rows] == ["normal", "nodule"]
    e4 = bands(_report().lines[1])[0]
    assert e4.healthy_edge == 0.97
    assert e4.healthy == (0.97, 0.99)  # the healthy models' class means: the band the chart shades
    assert e4.axis[1] == pytest.approx(0.99 + 0.08 * (0.99 - 0.58))
    assert rows[0].healthy is None  # E3 here reports no healthy band: none is drawn


def test_chart_ticks_and_sides_by_hand() -> None:
    # span 0.727 over 4 gaps: a raw step of 0.18, rounded up to 0.2, starting at the first multiple ≥ 0.013
    assert ticks(0.013, 0.74) == pytest.approx([0.2, 0.4, 0.6])
    assert ticks(0.0, 1.0) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    e3 = bands(_report().lines[0])[1]  # nodule: threshold 0.15, lower is better
    assert e3.sides(0.0, 1.0, lambda v: v) == ((0.0, 0.15), (0.15, 1.0))  # (passing, failing)
    assert replace(e3, higher_is_better=True).sides(0.0, 1.0, lambda v: v) == ((0.15, 1.0), (0.0, 0.15))
    assert replace(e3, threshold=None).sides(0.0, 1.0, lambda v: v) is None
    assert e3.threshold_words() == "threshold ≤ 0.150"
    assert e3.value_words() == "this run 0.610"
    assert bands(_report().lines[1])[0].legend() == ["healthy models 0.970 to 0.990", "healthy edge 0.970"]


def test_a_line_found_uninformative_does_not_vote_in_either_report() -> None:
    report = _report(0)
    e5 = LineResult(key="E5", name="agreement with reference maps", status="uninformative", decisive=True)
    report = replace(report, lines=(*report.lines, e5))
    html = render_report(report, made=MADE)
    assert "<span class='uninformative'>not informative (does not vote)</span> (does not vote)" in html
    assert html.count("(votes)") == 2  # E3 and E4
    pdf = pdfium.PdfDocument(render_pdf(report, made=MADE))
    everything = " ".join(" ".join(_text(pdf)).split())
    pdf.close()
    assert "E5 agreement with reference maps: not informative (does not vote) (does not vote)" in everything
    assert everything.count("(votes)") == 2
