"""The viewer's pieces (crop, map sampling, grid, selection → regions, window on a DICOM) and the Attention
page driven through AppTest: zoom crops every panel alike, window/level leaves the model's input alone, and a
region in the annotation store (what a box drawn in the browser lands as) becomes the image's finding
annotation with its numbers shown."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import DASHBOARD
from ui import viewer
from verification.annotations import Annotation, AnnotationStore, Region
from verification.errors import InvalidInputError
from verification.io import load_image

pytestmark = pytest.mark.usefixtures("navigation_only")
TIMEOUT = 300


# ------------------------------------------------------------------------------------------- pieces


def test_view_for_crops_at_native_pixels_and_stays_inside() -> None:
    v = viewer.view_for((1955, 1841), 1.0)
    assert (v.x0, v.y0, v.x1, v.y1) == (0, 0, 1841, 1955)
    assert max(v.out) == 512  # the whole film is shrunk
    z = viewer.view_for((1955, 1841), 2.0)
    assert (z.x1 - z.x0, z.y1 - z.y0) == (920, 978)  # 1841 / 2, 1955 / 2 rounded
    assert z.out == (978, 920)
    assert z.scale == 1.0  # native pixels: no 512 cap once zoomed in
    corner = viewer.view_for((100, 200), 4.0, 1.0, 0.0)
    assert (corner.x0, corner.y0, corner.x1, corner.y1) == (150, 0, 200, 25)
    big = viewer.view_for((4000, 4000), 1.5)
    assert max(big.out) == viewer.VIEW_MAX_SIDE
    assert big.scale < 1.0


def test_sample_map_on_the_whole_image_equals_cv2_resize() -> None:
    rng = np.random.default_rng(1)
    m = rng.random((7, 7)).astype(np.float32)
    v = viewer.view_for((224, 224), 1.0)
    expected = cv2.resize(m, (224, 224), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(viewer.sample_map(m, (224, 224), v), expected, atol=1e-4)


def test_sample_map_of_a_crop_equals_the_crop_of_the_full_upsample() -> None:
    rng = np.random.default_rng(2)
    m = rng.random((7, 9)).astype(np.float32)
    size = (140, 180)
    full = cv2.resize(m, (180, 140), interpolation=cv2.INTER_LINEAR)
    v = viewer.view_for(size, 4.0, 0.3, 0.6)
    assert v.scale == 1.0
    np.testing.assert_allclose(viewer.sample_map(m, size, v), full[v.y0 : v.y1, v.x0 : v.x1], atol=1e-4)


def test_nearest_shows_the_cells_as_computed() -> None:
    m = np.arange(4, dtype=np.float32).reshape(2, 2)
    out = viewer.sample_map(m, (8, 8), viewer.view_for((8, 8), 1.0), nearest=True)
    np.testing.assert_array_equal(out, np.kron(m, np.ones((4, 4), np.float32)))


def test_grid_lines_sit_on_the_cell_boundaries() -> None:
    pic = np.zeros((70, 70, 3), np.uint8)
    out = viewer.grid_lines(pic, (7, 7), (70, 70), viewer.view_for((70, 70), 1.0))
    cols = np.nonzero(out[35, :, 0])[0].tolist()
    rows = np.nonzero(out[:, 35, 0])[0].tolist()
    assert cols == [10, 20, 30, 40, 50, 60]
    assert rows == [10, 20, 30, 40, 50, 60]


def test_regions_from_a_plotly_selection() -> None:
    sel = {
        "box": [{"xref": "x", "yref": "y", "x": [10.0, 30.0], "y": [40.0, 5.0]}],
        "lasso": [{"x": [1.0, 9.0, 5.0], "y": [1.0, 1.0, 8.0]}],
        "points": [],
    }
    regions = viewer.regions_from_selection(sel)
    assert regions[0] == Region.box(10, 40, 30, 5)
    assert regions[1].kind == "polygon"
    assert len(regions[1].points) == 3
    assert viewer.regions_from_selection({"box": [], "lasso": []}) == []


def test_region_numbers_hand_derived() -> None:
    m = np.zeros((10, 10), np.float32)
    m[2:4, 2:4] = 1.0  # all the energy in 4 pixels
    mask = np.zeros((10, 10), bool)
    mask[0:5, 0:5] = True  # 25 % of the image
    n = viewer.region_numbers(m, mask)
    assert n["energy inside the region"] == pytest.approx(1.0)
    assert n["area share (a uniform map's energy inside)"] == pytest.approx(0.25)
    assert n["pointing game (map maximum inside)"] == 1.0
    assert n["IoU at the map's Otsu threshold"] == pytest.approx(4 / 25)


def _dicom(center: float, width: float) -> bytes:
    from tests.test_annotations import _cr

    return _cr(WindowCenter=[center, 800.0], WindowWidth=[width, 300.0])


def test_window_on_a_dicom_changes_only_the_drawing() -> None:
    data = _dicom(1500.0, 1000.0)
    image = load_image(data, name="w.dcm")
    pixels_before = image.pixels.copy()
    src = viewer.display_source(image, data)
    assert src.frame is not None
    assert len(src.frame.presets) == 2
    v = viewer.view_for(image.size, 1.0)
    loader = viewer.windowed(image, src, viewer.Window("loader", viewer.LOADER), v)
    first = viewer.windowed(image, src, viewer.Window("preset", "1", preset=src.frame.presets[0]), v)
    second = viewer.windowed(image, src, viewer.Window("preset", "2", preset=src.frame.presets[1]), v)
    np.testing.assert_array_equal(loader, first)  # the file's first window is what the loader applied
    assert not np.array_equal(first, second)
    narrow = viewer.windowed(image, src, viewer.Window("window", "manual", 1000.0, 10.0), v)
    grey = narrow[..., 0]
    # by hand: LINEAR_EXACT around 1000 ± 5 on values 40·x + y
    values = src.values
    np.testing.assert_array_equal(grey == 255, values >= 1005)  # (1005 - 1000) / 10 + 0.5 = 1
    np.testing.assert_array_equal(grey == 0, values <= 995)
    np.testing.assert_array_equal(image.pixels, pixels_before)


# ------------------------------------------------------------------------------------------- the page


def _app() -> AppTest:
    return AppTest.from_file(str(DASHBOARD), default_timeout=TIMEOUT).run()


def _image_captions(at: AppTest) -> list[str]:
    return [i.caption for el in at.get("image") for i in el.proto.imgs]


def test_zoom_crops_every_panel_alike_and_window_keeps_the_prediction() -> None:
    at = _app()
    assert not at.exception
    prediction = [m.value for m in at.markdown if m.value.startswith("Prediction:")]
    at.selectbox(key="viewer_zoom").set_value(4.0).run()
    assert not at.exception
    captions = _image_captions(at)
    assert any("x 84–140, y 84–140 of 224×224, drawn at 56×56 (native pixels (1:1))" in c for c in captions)
    at.selectbox(key="viewer_window").set_value("auto (2–98 %)").run()
    assert not at.exception
    assert [m.value for m in at.markdown if m.value.startswith("Prediction:")] == prediction


def test_a_stored_region_is_the_images_finding_annotation() -> None:
    at = _app()
    item_hash = at.session_state["workspace"].images.items[0].image.content_hash
    store = AnnotationStore(
        [Annotation(item_hash, "x.png", (224, 224), (Region.box(60, 60, 160, 160),), "nodule")]
    )
    at.session_state["viewer_annotations"] = store
    at.run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "**Drawn region** (nodule): box x 60–160, y 60–160 · 10,000 pixels" in text
    assert "E2 localisation" in text
    numbers = next(t.value for t in at.table if "measure" in t.value.columns)
    energy = float(numbers.loc[numbers["measure"] == "energy inside the region", "value"].iloc[0])
    assert 0.0 <= energy <= 1.0
    # a region elsewhere gives other numbers
    store.set(Annotation(item_hash, "x.png", (224, 224), (Region.box(0, 0, 30, 30),), "nodule"))
    at.run()
    numbers2 = next(t.value for t in at.table if "measure" in t.value.columns)
    energy2 = float(numbers2.loc[numbers2["measure"] == "energy inside the region", "value"].iloc[0])
    assert energy2 != energy
    at.button(key="viewer_clear").click().run()
    assert not at.exception
    assert "No region drawn on this image yet." in [i.value for i in at.info]


def test_cells_are_the_raw_map_after_relu_and_min_max() -> None:
    raw = np.array([[-1.0, 0.0], [2.0, 4.0]], np.float32)
    np.testing.assert_allclose(viewer.cells(raw), [[0.0, 0.0], [0.5, 1.0]])
    assert not viewer.cells(np.full((3, 3), -2.0)).any()


def test_grid_too_fine_to_see_is_not_drawn() -> None:
    pic = np.zeros((224, 224, 3), np.uint8)
    assert not viewer.grid_lines(pic, (64, 64), (224, 224), viewer.view_for((224, 224), 1.0)).any()
    assert not viewer.grid_lines(pic, (64, 64), (224, 224), viewer.view_for((224, 224), 4.0)).any()
    assert viewer.grid_lines(pic, (16, 16), (224, 224), viewer.view_for((224, 224), 1.0)).any()


def test_an_uploaded_dicom_offers_its_own_windows_and_a_seg_download() -> None:
    at = _app()
    at.radio(key="images_source").set_value("upload").run()
    data = _dicom(1500.0, 1000.0)
    at.file_uploader(key="images_upload").set_value([("w.dcm", data, "application/dicom")]).run()
    assert not at.exception
    options = at.selectbox(key="viewer_window").options
    assert any("window 1 from the file: C 1500 / W 1000" in o and "as loaded" in o for o in options)
    assert any("window 2 from the file: C 800 / W 300" in o for o in options)
    prediction = [m.value for m in at.markdown if m.value.startswith("Prediction:")]
    second = next(o for o in options if "window 2" in o)
    at.selectbox(key="viewer_window").set_value(second).run()
    assert not at.exception
    assert any("window: window 2 from the file" in c for c in _image_captions(at))
    assert [m.value for m in at.markdown if m.value.startswith("Prediction:")] == prediction
    image_hash = at.session_state["workspace"].images.items[0].image.content_hash
    at.session_state["viewer_annotations"] = AnnotationStore(
        [Annotation(image_hash, "w.dcm", (60, 80), (Region.box(10, 10, 40, 30),), "nodule")]
    )
    at.run()
    assert not at.exception
    labels = [b.proto.label for b in at.get("download_button")]
    assert "DICOM SEG of this image" in labels
    assert "PNG mask of this image" in labels


def test_seven_metrics_against_the_drawn_region_hand_derived() -> None:
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True
    same = dict((m, v) for m, v, _ in viewer.reference_metrics(mask.astype(np.float32), mask))
    assert same["IoU"] == pytest.approx(1.0)
    assert same["Cosine"] == pytest.approx(1.0)
    assert same["Wasserstein (spatial)"] == pytest.approx(0.0, abs=1e-6)
    apart = np.zeros((32, 32), np.float32)
    apart[20:28, 20:28] = 1.0
    other = dict((m, v) for m, v, _ in viewer.reference_metrics(apart, mask))
    assert other["IoU"] == pytest.approx(0.0)
    assert other["Cosine"] == pytest.approx(0.0)
    assert other["Wasserstein (spatial)"] > 0.3  # the squares sit 12/32 apart on both axes


def test_a_region_a_few_pixels_wide_is_measured_at_native_resolution() -> None:
    mask = np.zeros((224, 224), bool)
    mask[100:103, 150:153] = True  # 3×3 pixels: less than one cell of a 64×64 grid
    same = dict((m, v) for m, v, _ in viewer.reference_metrics(mask.astype(np.float32), mask))
    assert same["IoU"] == pytest.approx(1.0)
    assert same["Dice"] == pytest.approx(1.0)
    assert same["Cosine"] == pytest.approx(1.0)
    beside = np.zeros((224, 224), np.float32)
    beside[100:103, 154:157] = 1.0  # 4 px to the right: no overlap at native resolution
    moved = dict((m, v) for m, v, _ in viewer.reference_metrics(beside, mask))
    assert moved["IoU"] == pytest.approx(0.0)
    assert moved["Cosine"] == pytest.approx(0.0)
    # a map on the model's grid is upsampled to the image; a large film is measured with its long side at 1024
    grid_map, grid_mask = viewer.region_grid(np.ones((7, 7), np.float32), np.zeros((2000, 1000), bool))
    assert grid_map.shape == grid_mask.shape == (1024, 512)
    assert viewer.region_grid_size((224, 224)) == (224, 224)


def test_the_real_1841x1955_film_zoomed_is_sent_at_native_pixels() -> None:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("data_store")
    if spec is None or spec.origin is None:
        pytest.skip("pydicom-data (data_store) is not installed")
    data = (Path(spec.origin).parent / "data" / "RG1_UNCR.dcm").read_bytes()
    image = load_image(data, name="RG1_UNCR.dcm")
    src = viewer.display_source(image, data)
    assert src.frame is not None  # MONOCHROME1: inverted after any window
    whole = viewer.windowed(
        image, src, viewer.Window("loader", viewer.LOADER), viewer.view_for(image.size, 1.0)
    )
    assert whole.shape == (512, 482, 3)  # the whole film, shrunk for the page
    v = viewer.view_for(image.size, 2.0, 0.3, 0.4)
    crop = viewer.windowed(image, src, viewer.Window("loader", viewer.LOADER), v)
    assert crop.shape == (978, 920, 3)  # native pixels of the crop: no 512 cap once zoomed
    np.testing.assert_array_equal(crop[..., 0], image.display[v.y0 : v.y1, v.x0 : v.x1])
    lo, hi = src.percentiles[2.0], src.percentiles[98.0]
    auto = viewer.windowed(image, src, viewer.Window("window", "auto", (lo + hi) / 2, hi - lo), v)
    assert auto.shape == crop.shape
    assert not np.array_equal(auto, crop)


def test_grid_caption_names_the_grid_and_a_layer_only_when_there_is_one() -> None:
    assert viewer.grid_caption((7, 7), "features.12", (224, 224), False) == (
        "computed on a 7×7 grid at layer features.12, upsampled (bilinear) to 224×224"
    )
    stored = viewer.grid_caption((64, 64), None, (224, 224), True, stored=True)
    assert stored == "kept on a 64×64 grid, drawn cell by cell (nearest) to 224×224"
    assert "None" not in viewer.grid_caption((64, 64), "None", (224, 224), False, stored=True)


def test_the_drawing_chart_is_drawn_on_request_and_the_chart_library_preloads() -> None:
    at = _app()
    assert not at.get("plotly_chart"), "the drawing chart (plotly) waits for its toggle"
    scripts = [h for h in at.get("html") if "__preloadCharts" in h.proto.body]
    assert len(scripts) == 1
    assert scripts[0].proto.unsafe_allow_javascript
    at.toggle(key="viewer_draw_open").set_value(True).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1


def test_the_preloaded_chunks_are_the_ones_streamlit_imports_for_charts_grids_and_metrics() -> None:
    """The preload imports Streamlit's own chunks (same URL, so the same module): they must exist and be the
    ones its entry script lazily imports for a plotly chart, a dataframe, a metric and a segmented control
    (an upgrade renames them)."""
    import re
    from pathlib import Path

    import streamlit as st

    chunks = viewer._preload_chunks()
    assert chunks[0] == viewer._chart_chunk()
    assert [c.split(".")[0] for c in chunks] == ["PlotlyChart", "DataFrame", "Metric", "ButtonGroup"]
    static = Path(st.__file__).parent / "static"
    entry = re.search(
        r'<script type="module"[^>]* src="\./(static/js/index\.[^"]+\.js)"',
        (static / "index.html").read_text(),
    )
    assert entry, "Streamlit's index.html names its entry script"
    index = (static / entry.group(1)).read_text(encoding="utf-8")
    script = viewer._PRELOAD_JS % {"quiet": 0, "chunks": json.dumps(chunks)}
    for chunk in chunks:
        assert f"import(`./{chunk}`)" in index
        assert f'"{chunk}"' in script


def test_an_annotation_of_another_size_than_its_image_is_set_aside_and_never_imported() -> None:
    """Same content hash, another size: not this image's annotation (never rasterised at that size)."""
    at = _app()
    image = at.session_state["workspace"].images.items[0].image
    wrong = Annotation(image.content_hash, "x.png", (300, 300), (Region.box(0, 0, 10, 10),), "nodule")
    store = AnnotationStore([wrong])
    at.session_state["viewer_annotations"] = store
    at.run()
    assert not at.exception
    assert any("it was set aside" in e.value for e in at.error), [e.value for e in at.error]
    assert "No region drawn on this image yet." in [i.value for i in at.info]
    assert image.content_hash not in store
    # imported from a JSON file: refused, and what the session had is kept
    mine = Annotation("cd" * 32, "mine.png", (8, 8), (Region.box(0, 0, 3, 3),), "nodule")
    store.set(mine)
    with pytest.raises(InvalidInputError, match="it was not made on this image"):
        viewer.import_file(store, image, "a.json", AnnotationStore([wrong]).to_json().encode(), "nodule")
    assert list(store) == [mine]
