"""The dashboard with a PACS image source, in headless Chromium: pick the chest radiograph's study from the
live Orthanc in the sidebar, see its heatmap decoded on the Attention page, and the listing shows no patient
name or ID. Screenshot: ``test-artifacts/pacs_browser.png``."""

from __future__ import annotations

import pydicom
import pytest

from tests.app.browser_harness import (
    NEEDS_CHROMIUM,
    ROOT,
    chromium_page,
    streamlit_server,
    wait_idle,
    wait_overlay,
    wait_overlay_changed,
)
from verification.pacs import PacsClient

from .conftest import Pacs

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]


def test_pick_a_pacs_study_in_the_sidebar_and_see_its_heatmap(
    pacs: Pacs, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in pacs.env.items():  # the dashboard's process reads the credentials from its environment
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("VERIFICATION_DICOMWEB_URL", f"dicomweb+{pacs.root}")
    chest = next(f for f in pacs.files if f.name == "RG1_UNCR.dcm")
    header = pydicom.dcmread(chest, stop_before_pixels=True)
    with streamlit_server() as url, chromium_page() as page:
        page.goto(url)
        demo_src = wait_overlay(page)
        page.locator('[data-testid="stSidebar"]').get_by_text("PACS", exact=True).click()
        wait_idle(page)
        # The first study is chosen by default; pick the THORAX one by its (non-identifying) label.
        page.get_by_role("combobox", name="PACS study", exact=True).first.click()
        options = page.get_by_role("option")
        listing = " ".join(options.all_inner_texts())
        assert "THORAX" in listing
        for tag in ("PatientName", "PatientID"):
            assert str(header.get(tag)) not in listing
        options.filter(has_text="THORAX").first.click()
        src = wait_overlay_changed(page, demo_src)
        assert src != demo_src
        wait_idle(page)
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        page.screenshot(path=str(ROOT / "test-artifacts" / "pacs_browser.png"), full_page=True)
        text = page.locator("body").inner_text()
        assert str(header.PatientName) not in text
        assert str(header.PatientID) not in text
        assert "Still showing" not in text  # the PACS image set is the one in use, not a fallback
        # the opt-in write-back: a new series in the same study, described with the method
        study = pacs.studies["RG1_UNCR.dcm"]
        with PacsClient(pacs.config()) as client:
            before = {s.series_uid for s in client.search_series(study)}
        page.get_by_role("button", name="Store heatmap in the PACS").click()
        page.get_by_text("Stored in the study as a new series").wait_for(timeout=120_000)
        with PacsClient(pacs.config()) as client:
            new = [s for s in client.search_series(study) if s.series_uid not in before]
        assert len(new) == 1
        assert new[0].modality == "OT"
        assert "gradcam" in new[0].description
