"""The HTML report is self-contained (opens offline) and carries the verdict, its numbers and provenance; the
report table and JSON keep every number."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from ui import figures
from ui.loaders import compare_reports, report_json, report_table
from ui.report import GalleryRow, render_html
from verification.reference import reference_from_maps, verify_maps

CLASSES = ("normal", "nodule")


def _blob(center: tuple[float, float], size: int = 32, sigma: float = 4.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.exp(-((yy - center[0]) ** 2 + (xx - center[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


@pytest.fixture(scope="module")
def bundle_and_report():
    rng = np.random.default_rng(0)
    # Reference set: class 0 looks top-left, class 1 bottom-right, with jitter.
    maps, labels = [], []
    for k, centre in enumerate([(10, 10), (22, 22)]):
        for _ in range(8):
            maps.append(_blob((centre[0] + rng.normal(0, 1), centre[1] + rng.normal(0, 1))))
            labels.append(k)
    bundle = reference_from_maps(np.stack(maps), labels, CLASSES, grid=(32, 32), method="gradcam", layer="x")
    # Three images on target, one looking at the wrong corner.
    test = np.stack([_blob((10, 10)), _blob((11, 9)), _blob((22, 21)), _blob((28, 3))])
    report = verify_maps(test, [0, 0, 1, 0], bundle, names=["a.png", "b.png", "c.png", "marker.png"])
    return bundle, report


def test_report_opens_offline_with_everything_inline(bundle_and_report) -> None:
    bundle, report = bundle_and_report
    picture = np.zeros((40, 40, 3), np.uint8)
    gallery = [GalleryRow("a.png", picture, picture, None, "Grad-CAM · predicted normal")]
    charts = figures.similarity_charts(report, bundle)
    html = render_html(
        title="t",
        report=report,
        table=report_table(report),
        charts=charts,
        gallery=gallery,
        provenance={"Model": {"sha256": "abc123"}},
        colorbar=figures.colorbar_html("turbo"),
    )
    # Nothing is fetched: no external script, stylesheet or image in the markup (the inlined plotly.js holds
    # link texts of its own, so script bodies are left out of the search).
    markup = re.sub(r"<script[^>]*>.*?</script>", "<script></script>", html, flags=re.DOTALL)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", markup)
    assert "<script src" not in markup
    assert html.count("<script") >= len(charts)
    assert "Plotly" in html
    assert len(html) > 3_000_000  # plotly.js inlined once (~4.5 MB)
    assert markup.count("data:image/png;base64,") == 2  # image + overlay of the one gallery row
    assert report.verdict.upper() in html
    assert "abc123" in html
    assert "marker.png" in html


def test_report_numbers_survive_in_table_and_json(bundle_and_report) -> None:
    _, report = bundle_and_report
    assert bool(report.flagged[3])  # the map on the wrong corner
    assert not report.flagged[:3].any()
    table = report_table(report)
    assert list(table["verdict"]) == ["ok", "ok", "ok", "flagged"]
    assert table.loc[3, "flagged metrics"].count(",") + 1 == int(report.n_flags[3])
    doc = json.loads(report_json(report))
    assert doc["summary"]["flagged"] == 1
    assert doc["rows"][3]["image"] == "marker.png"
    np.testing.assert_allclose(
        [row["iou"] for row in doc["rows"]], report.values[:, report.metrics.index("iou")], rtol=0, atol=0
    )


def test_compare_prefers_the_model_with_fewer_flags(bundle_and_report) -> None:
    bundle, good = bundle_and_report
    bad = verify_maps(np.stack([_blob((28, 3))] * 4), [0, 0, 1, 0], bundle, names=list(good.names))
    result = compare_reports(good, bad)
    assert result.better == "A"
    assert "A 25%" in result.reason
    iou = result.table.set_index("metric").loc["IoU"]
    assert iou["B − A"] < 0
    assert iou["better"] == "A"
    assert compare_reports(good, good).better is None
