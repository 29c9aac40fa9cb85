"""The real dashboard in headless Chromium: demo heatmaps drawn, every page visited, a DICOM uploaded.

Starts ``streamlit run dashboard.py`` on a free localhost port, drives it with Playwright and keeps a
screenshot of every step in ``test-artifacts/``. Skipped only when Debian's ``/usr/bin/chromium`` is absent.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from tests.app.browser_harness import (
    ARTIFACTS,
    BROWSER_TEST,
    choose,
    chromium_page,
    goto_page,
    streamlit_server,
    wait_all_images,
    wait_idle,
    wait_overlay,
    wait_overlay_changed,
)
from tests.builders import dicom_dataset

pytestmark = BROWSER_TEST
# (navigation title, the page's h1)
PAGES = [
    ("Similarity", "Similarity to the reference"),
    ("Feature maps", "Early feature maps"),
    ("Compare models", "Compare models"),
    ("Consistency", "Consistency across patients and checkpoints"),
    ("Dataset check", "Dataset check"),
    ("Report & export", "Report & export"),
]


def _dicom(path: Path) -> Path:
    """A small MONOCHROME2 CR DICOM (a disc on a gradient, 12-bit)."""
    from pydicom.uid import CTImageStorage

    yy, xx = np.mgrid[0:256, 0:256]
    pixels = (xx * 8 + 1200 * ((xx - 128) ** 2 + (yy - 110) ** 2 < 50**2)).astype(np.uint16)
    ds = dicom_dataset(
        pixels,
        sop_class=CTImageStorage,
        PatientName="Test^Browser",
        StudyDate=dt.date.today().strftime("%Y%m%d"),
    )
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dashboard_in_chromium(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    dicom = _dicom(tmp_path / "upload_test.dcm")
    with streamlit_server() as url, chromium_page() as page:
        page.goto(url)
        src = wait_overlay(page)
        wait_all_images(page, 10)
        page.screenshot(path=str(ARTIFACTS / "browser-01-attention.png"), full_page=True)

        choose(page, "Method", "Grad-CAM++")
        wait_overlay_changed(page, src)
        page.screenshot(path=str(ARTIFACTS / "browser-02-gradcampp.png"), full_page=True)

        for i, title in enumerate(
            [
                "Similarity",
                "Feature maps",
                "Compare models",
                "Consistency",
                "Dataset check",
                "Report & export",
            ],
            start=3,
        ):
            goto_page(page, title)
            page.get_by_role("heading", level=1).filter(has_text=title.split()[0]).first.wait_for(
                timeout=120_000
            )
            wait_idle(page)
            wait_all_images(page, 0)
            assert page.locator('[data-testid="stException"]').count() == 0, title
            page.screenshot(
                path=str(ARTIFACTS / f"browser-{i:02d}-{title.split()[0].lower()}.png"), full_page=True
            )

        # The HTML report downloads and draws offline: every request except the file itself is refused.
        with page.expect_download(timeout=180_000) as download:
            page.get_by_role("button", name="Download the HTML report").click()
        report = tmp_path / "report.html"
        download.value.save_as(report)
        offline = page.context.new_page()
        offline.route(
            "**/*",
            lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort(),
        )
        offline.goto(report.as_uri())
        offline.wait_for_selector("svg.band", timeout=60_000)  # the band charts: inline SVG, no script
        wait_all_images(offline, 3)
        offline.screenshot(path=str(ARTIFACTS / "browser-09-report-offline.png"), full_page=True)
        offline.close()

        goto_page(page, "Attention")
        src = wait_overlay(page)
        page.get_by_text("Upload images", exact=True).click()
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').last.set_input_files(str(dicom))
        src = wait_overlay_changed(page, src)
        wait_idle(page)
        page.get_by_text("upload_test.dcm").first.wait_for(timeout=60_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(ARTIFACTS / "browser-10-dicom-upload.png"), full_page=True)
