"""The viewer in headless Chromium: window/level changes the drawn pixels (not the prediction), zoom and pan
show the same native-pixel region in all three panels, and a box dragged with the mouse on the image becomes
the expected region whose numbers are shown, replaced, extended with a lasso, exported and imported again.

Screenshots: ``test-artifacts/viewer-*.png``. Skipped only when Debian's ``/usr/bin/chromium`` is absent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from tests.app.browser_harness import (
    ARTIFACTS,
    BROWSER_TEST,
    choose,
    chromium_page,
    streamlit_server,
    wait_all_images,
    wait_idle,
    wait_overlay,
)
from ui.viewer import view_for
from verification import demo
from verification.io import load_image

pytestmark = BROWSER_TEST
PANELS = ".st-key-viewer_panels img"

# The decoded pixels of every panel picture (drawn onto a canvas), once every one's decode() has resolved.
PIXELS_JS = """async (sel) => {
  const imgs = Array.from(document.querySelectorAll(sel));
  await Promise.all(imgs.map((img) => img.decode()));
  return imgs.map((img) => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const data = Array.from(g.getImageData(0, 0, c.width, c.height).data);
    return {w: c.width, h: c.height, src: img.src, data: data};
  });
}"""
# True when there are three panel pictures, all decoded, and none of them is one of ``old`` (their srcs).
PANELS_CHANGED_JS = """([sel, old]) => {
  const imgs = Array.from(document.querySelectorAll(sel));
  return imgs.length === 3 && imgs.every((i) => i.complete && i.naturalWidth > 0 && !old.includes(i.src));
}"""


def _panels(page: Any) -> list[np.ndarray]:
    out = []
    for p in page.evaluate(PIXELS_JS, PANELS):
        out.append(np.asarray(p["data"], np.uint8).reshape(p["h"], p["w"], 4)[..., :3])
    return out


def _srcs(page: Any) -> list[str]:
    return [str(s) for s in page.eval_on_selector_all(PANELS, "(els) => els.map((e) => e.src)")]


def _wait_panels_changed(page: Any, old: list[str]) -> None:
    page.wait_for_function(PANELS_CHANGED_JS, arg=[PANELS, old], timeout=180_000, polling=100)
    wait_idle(page)


def _prediction(page: Any) -> str:
    return str(page.get_by_text(re.compile(r"^Prediction: ")).first.inner_text())


def _slider(page: Any, label: str) -> Any:
    return page.locator('[data-testid="stSlider"]').filter(has_text=label).first.get_by_role("slider")


def _press(page: Any, label: str, key: str, times: int = 1) -> None:
    slider = _slider(page, label)
    slider.focus()
    for _ in range(times):
        slider.press(key)
    wait_idle(page)


def _caption_crop(page: Any) -> tuple[int, int, int, int]:
    text = page.locator('.st-key-viewer_panels [data-testid="stImageCaption"]').first.inner_text()
    m = re.search(r"x (\d+)–(\d+), y (\d+)–(\d+) of", text)
    assert m, text
    x0, x1, y0, y1 = (int(v) for v in m.groups())
    return x0, x1, y0, y1


def _drag(page: Any, fx0: float, fy0: float, fx1: float, fy1: float) -> None:
    """Drag a box on the drawing chart between fractions of its plot area (plotly's select mode)."""
    area = page.locator(".st-key-viewer_draw .nsewdrag").first
    area.scroll_into_view_if_needed()
    box = area.bounding_box()
    x0, y0 = box["x"] + box["width"] * fx0, box["y"] + box["height"] * fy0
    x1, y1 = box["x"] + box["width"] * fx1, box["y"] + box["height"] * fy1
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, 13):
        page.mouse.move(x0 + (x1 - x0) * k / 12, y0 + (y1 - y0) * k / 12)
    page.mouse.up()


def _energy(page: Any) -> float:
    cell = (
        page.locator(".st-key-viewer_region_numbers tr")
        .filter(has_text="energy inside the region")
        .first.locator("td")
        .last
    )
    cell.wait_for(timeout=180_000)
    return float(cell.inner_text())


def _region_text(page: Any) -> str:
    return str(page.locator("p").filter(has_text=re.compile(r"^Drawn region")).first.inner_text())


def test_viewer_in_chromium(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    first = demo.demo_images("test")[0]
    display = load_image(first.path).display  # the first demo image, as the loader reads it (grey uint8)
    with streamlit_server() as url, chromium_page() as page:
        page.goto(url)
        wait_overlay(page)
        wait_all_images(page, 4)
        wait_idle(page)
        prediction = _prediction(page)

        # --- window / level: the drawn pixels change, the model's answer does not
        before = _srcs(page)
        image_before = _panels(page)[0]
        choose(page, "Window / level", "auto (2–98 %)")
        _wait_panels_changed(page, before)
        image_auto = _panels(page)[0]
        assert image_auto.shape == image_before.shape
        assert np.abs(image_auto.astype(int) - image_before.astype(int)).mean() > 2.0
        assert _prediction(page) == prediction
        choose(page, "Window / level", "manual")
        wait_idle(page)
        before = _srcs(page)
        _press(page, "Level", "ArrowRight", 40)
        _wait_panels_changed(page, before)
        assert not np.array_equal(_panels(page)[0], image_auto)
        assert _prediction(page) == prediction
        page.screenshot(path=str(ARTIFACTS / "viewer-01-window.png"), full_page=True)
        choose(page, "Window / level", "as loaded (what the model sees)")
        wait_idle(page)

        # --- zoom and pan, linked: with opacity 0 and no outlines every panel is the same native crop
        lesion = page.get_by_text("Outline the known lesion (demo ground truth)")
        if lesion.count():  # the first demo image is normal: no lesion outline to switch off
            lesion.click()
            wait_idle(page)
        _press(page, "Opacity", "Home")
        before = _srcs(page)
        choose(page, "Zoom", "4×")
        _wait_panels_changed(page, before)
        panels = _panels(page)
        v = view_for(display.shape[:2], 4.0)
        expected = np.repeat(display[v.y0 : v.y1, v.x0 : v.x1, None], 3, axis=2)
        assert [p.shape for p in panels] == [expected.shape] * 3  # native pixels: 56×56 of a 224×224 image
        for p in panels:
            np.testing.assert_array_equal(p, expected)
        before = _srcs(page)
        _press(page, "Pan ←→", "ArrowRight", 15)
        _press(page, "Pan ↑↓", "ArrowLeft", 10)
        _wait_panels_changed(page, before)
        x0, x1, y0, y1 = _caption_crop(page)
        assert (x0, y0) != (v.x0, v.y0)
        expected = np.repeat(display[y0:y1, x0:x1, None], 3, axis=2)
        for p in _panels(page):
            np.testing.assert_array_equal(p, expected)
        _press(page, "Opacity", "ArrowRight", 9)
        page.get_by_text("Show the map's grid").click()
        wait_idle(page)
        wait_all_images(page, 4)
        page.screenshot(path=str(ARTIFACTS / "viewer-02-zoom.png"), full_page=True)
        page.get_by_text("Show the map's grid").click()
        choose(page, "Zoom", "1×")
        wait_idle(page)

        # --- drawing: the chart is off until asked for, its library already loaded while the page was quiet
        # (viewer.preload_charts); a box dragged on it is the expected region
        assert page.locator(".st-key-viewer_draw").count() == 0
        page.wait_for_function("() => window.__preloadCharts === 'done'", timeout=60_000, polling=200)
        page.get_by_text("Draw the expected region").click()
        page.locator(".st-key-viewer_draw .nsewdrag").first.wait_for(timeout=180_000)
        wait_idle(page)
        _drag(page, 0.30, 0.30, 0.60, 0.70)
        page.get_by_text(re.compile(r"^Drawn region")).first.wait_for(timeout=180_000)
        wait_idle(page)
        first_text, first_energy = _region_text(page), _energy(page)
        m = re.search(r"box x (\d+)–(\d+), y (\d+)–(\d+)", first_text)
        assert m, first_text
        bx0, bx1, by0, by1 = (int(g) for g in m.groups())
        # the chart's axes are native pixels: the box lands where it was dragged (± 3 px of a 224 image)
        assert abs(bx0 - 0.30 * 224) <= 3
        assert abs(bx1 - 0.60 * 224) <= 3
        assert abs(by0 - 0.30 * 224) <= 3
        assert abs(by1 - 0.70 * 224) <= 3
        assert page.get_by_text(re.compile(r"energy inside the drawn finding")).count() >= 1
        page.screenshot(path=str(ARTIFACTS / "viewer-03-region.png"), full_page=True)

        _drag(page, 0.02, 0.02, 0.15, 0.15)  # replace it with a corner box: the map's energy there differs
        page.wait_for_function(
            "(old) => Array.from(document.querySelectorAll('p')).some("
            "(p) => p.innerText.startsWith('Drawn region') && !p.innerText.includes(old))",
            arg=f"x {bx0}–{bx1}",
            timeout=180_000,
        )
        wait_idle(page)
        corner_energy = _energy(page)
        assert corner_energy != first_energy
        assert corner_energy < first_energy

        # --- a lasso (freehand) added to the box: the region becomes the union
        page.get_by_text("adds to the region").click()
        wait_idle(page)
        chart = page.locator(".st-key-viewer_draw .nsewdrag").first
        chart.hover()
        page.locator('.st-key-viewer_draw .modebar-btn[data-title="Lasso Select"]').first.click()
        box = chart.bounding_box()
        path = [(0.45, 0.45), (0.70, 0.48), (0.66, 0.72), (0.50, 0.70), (0.42, 0.58)]
        page.mouse.move(box["x"] + box["width"] * path[0][0], box["y"] + box["height"] * path[0][1])
        page.mouse.down()
        for fx, fy in [*path[1:], path[0]]:
            page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy, steps=6)
        page.mouse.up()
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('p')).some("
            "(p) => p.innerText.startsWith('Drawn region') && p.innerText.includes('polygon of'))",
            timeout=180_000,
        )
        wait_idle(page)
        union_text = _region_text(page)
        assert "box x" in union_text, union_text  # the corner box is kept: the lasso was added
        union_energy = _energy(page)
        assert union_energy > corner_energy
        page.screenshot(path=str(ARTIFACTS / "viewer-05-lasso.png"), full_page=True)
        page.get_by_text("replaces the region").click()
        wait_idle(page)

        # --- export, clear, import: the region comes back with the same numbers
        page.get_by_text("Export or import annotations").click()
        with page.expect_download(timeout=120_000) as download:
            page.get_by_role("button", name=re.compile(r"^All annotations of this session")).click()
        saved = tmp_path / "annotations.json"
        download.value.save_as(saved)
        doc = json.loads(saved.read_text())
        assert len(doc["annotations"]) == 1
        assert [r["kind"] for r in doc["annotations"][0]["regions"]] == ["box", "polygon"]
        page.get_by_role("button", name="Clear the region").click()
        page.get_by_text("No region drawn on this image yet.").wait_for(timeout=120_000)
        wait_idle(page)
        toggle = page.get_by_text("Import annotations or a mask")
        if not toggle.is_visible():
            page.get_by_text("Export or import annotations").click()
        toggle.click()
        page.locator('.st-key-viewer_import input[type="file"]').wait_for(state="attached", timeout=120_000)
        page.locator('.st-key-viewer_import input[type="file"]').set_input_files(str(saved))
        page.get_by_text(re.compile(r"^Drawn region")).first.wait_for(timeout=180_000)
        wait_idle(page)
        assert _energy(page) == union_energy
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(ARTIFACTS / "viewer-04-imported.png"), full_page=True)
