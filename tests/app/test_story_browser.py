"""In headless Chromium: the guided story shows its three chapters with their verdicts and pictures, and the
PDF report downloads from Report & export, opens with pypdfium2 and its first page renders.

One server for both tests (the demo's verdicts are computed once). Screenshots and the rendered first page
go to ``test-artifacts/``. Skipped only when Debian's ``/usr/bin/chromium`` is absent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.browser_harness import (
    ARTIFACTS,
    BROWSER_TEST,
    chromium_page,
    goto_page,
    streamlit_server,
    wait_all_images,
    wait_idle,
)

pytestmark = BROWSER_TEST


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with streamlit_server() as url:
        yield url


def test_the_guided_story_shows_three_chapters_with_their_verdicts(server: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page(height=1400) as page:
        page.goto(server)
        page.wait_for_selector('[data-testid="stTopNavLink"]', timeout=120_000)
        goto_page(page, "Guided story")
        page.get_by_role("heading", name="Guided story: the radiologist's desk").wait_for(timeout=120_000)
        for title in ("1 · A sound model", "2 · A shortcut model", "3 · An out-of-distribution film"):
            page.get_by_role("heading", name=title).wait_for(timeout=300_000)
        wait_idle(page, timeout_ms=300_000)
        wait_all_images(page, 3, timeout_ms=120_000)  # one picture per chapter, decoded
        assert page.locator('[data-testid="stException"]').count() == 0
        banners = page.locator('[data-testid="stAlertContainer"]').all_inner_texts()
        verdicts = [b for b in banners if " model on " in b]
        assert len(verdicts) == 3, banners
        assert "SUITABLE" in verdicts[0]
        assert "UNSUITABLE" not in verdicts[0]
        assert "UNSUITABLE" in verdicts[1]
        assert "E3" in verdicts[1]
        assert "CANNOT VERIFY" in verdicts[2]
        assert "E0" in verdicts[2]
        text = page.locator('[data-testid="stMain"]').inner_text()
        assert "This film, in one sentence" in text
        assert "the prediction changes when everything outside the lungs is removed" in text  # chapter 2
        assert "Not assessed:" in text  # chapter 3: the film the gate removed
        page.screenshot(path=str(ARTIFACTS / "story-01-three-chapters.png"), full_page=True)
        # the main area scrolls inside the app: one screenshot per chapter, scrolled to its heading
        for k, title in enumerate(("2 · A shortcut model", "3 · An out-of-distribution film"), start=2):
            page.get_by_role("heading", name=title).evaluate("(e) => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            page.screenshot(path=str(ARTIFACTS / f"story-0{k}-chapter-{k}.png"))


def test_the_pdf_report_downloads_and_its_first_page_renders(server: str, tmp_path: Path) -> None:
    import pypdfium2 as pdfium

    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as page:
        page.goto(server)
        page.wait_for_selector('[data-testid="stTopNavLink"]', timeout=120_000)
        goto_page(page, "Report & export")
        button = page.get_by_role("button", name="Download the PDF report")
        button.wait_for(timeout=300_000)
        wait_idle(page, timeout_ms=300_000)
        before = dt.datetime.now(dt.UTC).replace(microsecond=0)
        with page.expect_download(timeout=180_000) as download:
            button.click()
        target = tmp_path / "report.pdf"
        download.value.save_as(target)
        after = dt.datetime.now(dt.UTC)
        data = target.read_bytes()
        assert data.startswith(b"%PDF-")
        assert len(data) < 1_000_000, len(data)
        pdf = pdfium.PdfDocument(data)
        try:
            assert len(pdf) >= 2
            first = pdf[0]
            text = " ".join(first.get_textpage().get_text_range().split())
            assert "SUITABLE" in text
            assert "Report made " in text
            made = dt.datetime.strptime(text.split("Report made ", 1)[1][:19], "%Y-%m-%d %H:%M:%S").replace(
                tzinfo=dt.UTC
            )
            assert before <= made <= after, (before, made, after)  # made at the click, not when cached
            first.render(scale=1.5).to_pil().save(ARTIFACTS / "report-pdf-page-1.png")
        finally:
            pdf.close()
        assert (ARTIFACTS / "report-pdf-page-1.png").stat().st_size > 10_000
