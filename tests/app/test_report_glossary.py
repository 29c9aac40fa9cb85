"""The glossary behind every tooltip (ui/glossary.py), the reports as the dashboard makes them (ui/export.py:
stamped when made, not when cached) and the pages that offer them (AppTest: Report & export, Dataset
check)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import DASHBOARD
from ui import glossary
from verification.metrics import METRICS
from verification.verdict import LINE_NAMES

pytestmark = pytest.mark.usefixtures("navigation_only")


def test_every_term_of_the_issue_and_every_metric_has_words() -> None:
    for term in (
        "IoU",
        "Dice",
        "SSIM",
        "cosine",
        "Pearson",
        "KL(ref‖map)",
        "Wasserstein (spatial)",
        "in-distribution band",
        "τ",
        "γ",
        "C-Score",
        "CANNOT VERIFY",
        "SUITABLE",
        "UNSUITABLE",
        "layer",
    ):
        assert len(glossary.help_for(term)) > 40, term
    for key in LINE_NAMES:
        assert glossary.line_help(key).startswith(key)
    for name, spec in METRICS.items():
        assert glossary.metric_help(name) == glossary.metric_help(spec.label)
    with pytest.raises(KeyError):
        glossary.help_for("no such term")
    words = glossary.layer_help("features.12.2 (144×7×7)")
    assert words.startswith("features.12.2: 144 channels on a 7×7 grid")
    assert glossary.layer_help("layer4") == glossary.help_for("layer")


def _app() -> AppTest:
    return AppTest.from_file(str(DASHBOARD), default_timeout=600).run()


def test_report_page_offers_html_and_pdf_made_at_the_click() -> None:
    from ui import export, loaders

    at = _app()
    at.switch_page("pages/export.py").run()
    assert not at.exception, [e.value for e in at.exception]
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download the HTML report" in labels
    assert "Download the PDF report" in labels
    captions = " ".join(c.value for c in at.caption)
    assert " MB, self-contained" in captions
    assert " kB, a few A4 pages" in captions

    # the HTML body is cached; the time is put in when the report is made, each time
    images = loaders.demo_image_set("test")
    model, lock = loaders.get_model(loaders.demo_spec("sound"))
    bundle = loaders.demo_bundle(model)
    report = loaders.verify_set(model, lock, bundle, images)
    key = export.ReportKey(model.content_hash, bundle.key, images.hashes, "t")
    first = export.report_html(key, report, images, made="2026-01-01 00:00:01 UTC")
    second = export.report_html(key, report, images, made="2026-01-01 00:00:02 UTC")
    assert "Report made 2026-01-01 00:00:01 UTC" in first
    assert "Report made 2026-01-01 00:00:02 UTC" in second
    assert "\x00" not in second
    assert len(first.encode()) < 1_000_000, len(first.encode())  # was 7.9 MB
    pdf = export.report_pdf("t", report, images, made="2026-01-01 00:00:03 UTC")
    assert pdf.startswith(b"%PDF-")


def test_dataset_check_reads_one_image_in_words_with_its_numbers() -> None:
    at = _app()
    at.switch_page("pages/dataset.py").run()
    at.button[0].click().run()  # "Run the check" on the sidebar's images (demo test set)
    assert not at.exception, [e.value for e in at.exception]
    picker = [s for s in at.selectbox if s.label == "One image in words"]
    assert picker, [s.label for s in at.selectbox]
    sentences = [m.value for m in at.markdown if m.value.startswith("Predicted ")]
    assert sentences, "the chosen image's sentence"
    assert "of its energy lies outside the anatomy" in sentences[0]
    assert any(e.label == "The numbers behind this sentence" for e in at.expander)
    assert at.get("plotly_chart"), "band charts"
