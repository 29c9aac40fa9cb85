"""Every page of the dashboard through streamlit's AppTest, on the built-in demo.

Each test drives the real ``dashboard.py`` (sidebar + navigation + page) in-process: pages render without an
exception, switching method redraws from the cache, switching model and uploading files work, and bad uploads
show an error while the previous state keeps drawing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pandas as pd
import pytest
import streamlit as st
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest
from torch import nn

from tests.app.conftest import DASHBOARD

pytestmark = pytest.mark.usefixtures("navigation_only")

PAGES = [
    "pages/attention.py",
    "pages/similarity.py",
    "pages/features.py",
    "pages/compare.py",
    "pages/consistency.py",
    "pages/dataset.py",
    "pages/export.py",
]
TIMEOUT = 300


def _app() -> AppTest:
    at = AppTest.from_file(str(DASHBOARD), default_timeout=TIMEOUT)
    return at.run()


VERDICT_ICON = (
    ":material/gpp_bad:"  # an "unsuitable" verdict is drawn as st.error; it is a result, not a failure
)


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error if e.icon not in (VERDICT_ICON, NOT_ASSESSABLE_ICON)]


NOT_ASSESSABLE_ICON = ":material/block:"  # an image outside the model's domain: a result, not a failure


def _metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no metric {label!r} in {[m.label for m in at.metric]}"
    return str(found[0])


def _verdict(at: AppTest) -> str:
    """The word of the (first) verdict metric: SUITABLE, UNSUITABLE or CANNOT VERIFY."""
    return _metric(at, "Verdict")


def _banners(at: AppTest) -> list[str]:
    return [b.value for b in [*at.success, *at.error, *at.warning]]


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not _errors(at), _errors(at)


class _Tables(HTMLParser):
    """The <table>s of an HTML string as rows of cell texts (header row first)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _tables(at: AppTest) -> list[pd.DataFrame]:
    """Every HTML table the page drew (ui.evidence.table), in page order, as frames of its cells' texts."""
    out = []
    for element in at.get("html"):
        parser = _Tables()
        parser.feed(element.proto.body)
        out += [pd.DataFrame(rows[1:], columns=rows[0]) for rows in parser.tables]
    return out


def _images(at: AppTest) -> list[Any]:
    return list(at.get("image"))


def _png(seed: int, size: tuple[int, int] = (180, 200)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random(size) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def count_cams(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Record every call into the CAM engine made by the dashboard (methods per call), on a cold cache."""
    import ui.loaders

    calls: list[tuple[str, ...]] = []
    real: Callable[..., Any] = ui.loaders.compute_cams

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(tuple(kwargs.get("methods", ())))
        return real(*args, **kwargs)

    st.cache_data.clear()
    monkeypatch.setattr(ui.loaders, "compute_cams", counting)
    return calls


@pytest.mark.parametrize(
    "page",
    # Consistency runs every demo checkpoint over the test set on first view.
    [pytest.param(p, marks=pytest.mark.slow) if p.endswith("consistency.py") else p for p in PAGES],
)
def test_page_renders_on_the_demo(page: str) -> None:
    at = _app()
    if page != PAGES[0]:
        at.switch_page(page).run()
    _ok(at)
    assert at.title, "every page has a title"


def test_attention_opens_with_heatmaps_and_a_prediction() -> None:
    at = _app()
    _ok(at)
    # image, overlay, reference, the method grid (seven gradient methods)
    assert len(_images(at)) >= 3 + 7
    text = " ".join(m.value for m in at.markdown)
    assert "Prediction: **" in text
    assert any("%" in h.proto.body for h in at.get("html")), "probability bars"


def test_switching_method_redraws_from_the_cache(count_cams: list[tuple[str, ...]]) -> None:
    at = _app()
    _ok(at)
    first = list(count_cams)
    assert first
    assert all(len(methods) >= 6 for methods in first), "all gradient methods in one call"
    for method in ("gradcampp", "layercam", "eigencam", "ms_gradcampp"):
        at.selectbox(key="method").set_value(method).run()
        _ok(at)
    assert count_cams == first, "switching between one-pass methods must not call the CAM engine again"


def test_switching_model_changes_the_prediction() -> None:
    at = _app()
    at.selectbox(key="model_a_demo").set_value("shortcut").run()
    _ok(at)
    assert len(_images(at)) >= 3
    at.selectbox(key="model_a_demo").set_value("garbage").run()
    _ok(at)
    assert any("garbage" in c.value for c in at.sidebar.caption)


def test_segmentation_model_shows_mask_and_threshold() -> None:
    at = _app()
    at.selectbox(key="model_a_demo").set_value("segmentation").run()
    _ok(at)
    assert at.slider(key="seg_threshold").value == pytest.approx(0.5)
    assert any("Predicted mask" in m.value for m in at.markdown)
    at.slider(key="seg_threshold").set_value(0.8).run()
    _ok(at)


def test_uploading_images_replaces_the_working_set() -> None:
    at = _app()
    at.radio(key="images_source").set_value("upload").run()
    at.file_uploader(key="images_upload").set_value(
        [("first.png", _png(1), "image/png"), ("second.png", _png(2), "image/png")]
    ).run()
    _ok(at)
    options = at.selectbox(key="image_index").options  # AppTest lists the formatted labels
    assert len(options) == 2
    assert "first.png" in options[0]
    assert "second.png" in options[1]
    assert len(_images(at)) >= 3


def test_bad_image_upload_shows_an_error_and_keeps_the_previous_images() -> None:
    at = _app()
    before = at.selectbox(key="image_index").options
    at.radio(key="images_source").set_value("upload").run()
    at.file_uploader(key="images_upload").set_value(("broken.png", b"this is not a png", "image/png")).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("broken.png" in e for e in errors), errors
    assert any("Still showing" in w.value for w in at.warning)
    assert at.selectbox(key="image_index").options == before
    assert len(_images(at)) >= 3, "the page still draws the previous images"


def test_bad_model_upload_shows_an_error_and_keeps_the_demo_model() -> None:
    at = _app()
    at.radio(key="model_a_source").set_value("upload").run()
    at.file_uploader(key="model_a_upload").set_value(
        ("model.pt", b"\x80\x04garbage", "application/octet-stream")
    )
    at.run()
    assert not at.exception
    assert any("model.pt" in e.value for e in at.error), [e.value for e in at.error]
    assert any("Still using" in w.value for w in at.warning)
    assert len(_images(at)) >= 3


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_pickled_model_needs_the_trust_checkbox() -> None:
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(_Tiny(), buf)
    at = _app()
    at.radio(key="model_a_source").set_value("upload").run()
    at.file_uploader(key="model_a_upload").set_value(("tiny.pt", buf.getvalue(), "application/octet-stream"))
    at.run()
    assert any("trust" in e.value for e in at.error), [e.value for e in at.error]
    at.checkbox(key="model_a_trust").check().run()
    assert not at.exception
    assert not [e.value for e in at.error if "Model A" in e.value]
    assert any("pickle" in c.value or "_Tiny" in c.value for c in at.sidebar.caption)


def _labelled_zip(n_per_class: int = 3) -> bytes:
    """A zip of demo test images in one folder per class (labels from folder names)."""
    import zipfile

    from verification import demo

    buf = io.BytesIO()
    counts: dict[str, int] = {}
    with zipfile.ZipFile(buf, "w") as zf:
        for item in demo.demo_images("test"):
            if item.label is None or counts.get(item.label, 0) >= n_per_class:
                continue
            counts[item.label] = counts.get(item.label, 0) + 1
            zf.write(item.path, f"set/{item.label}/{item.path.name}")
        zf.writestr("set/notes.txt", "not an image")
    return buf.getvalue()


@pytest.mark.slow
def test_dataset_check_runs_with_a_result_table() -> None:
    at = _app()
    at.switch_page("pages/dataset.py").run()
    at.button[0].click().run()  # "Run the check" on the sidebar's images
    _ok(at)
    tables = _tables(at)
    assert any("deciding line" in t.columns for t in tables), "per-class table"
    assert any("votes" in t.columns for t in tables), "per-line table"
    assert len(tables[-1]) == 60, "per-image table"
    assert any('class="bandcard"' in h.proto.body for h in at.get("html")), "band charts"
    assert at.get("plotly_chart"), "per-image charts"
    assert _metric(at, "Images assessed").endswith("of 60")


def test_dataset_check_on_an_uploaded_labelled_zip() -> None:
    at = _app()
    at.switch_page("pages/dataset.py").run()
    at.radio(key="dataset_source").set_value("upload").run()
    at.file_uploader(key="dataset_upload").set_value(("set.zip", _labelled_zip(), "application/zip")).run()
    at.button[0].click().run()
    _ok(at)
    assert _metric(at, "Images assessed").endswith("of 9")
    assert _metric(at, "Accuracy") != "n/a", "labels from the zip's folders give the accuracy"
    # Nine images cannot reach the images a class needs: the verdict says so instead of passing.
    assert _verdict(at) != "SUITABLE"


def test_dataset_check_on_a_broken_zip_shows_an_error() -> None:
    at = _app()
    at.switch_page("pages/dataset.py").run()
    at.radio(key="dataset_source").set_value("upload").run()
    at.file_uploader(key="dataset_upload").set_value(
        ("set.zip", b"PK\x03\x04 broken", "application/zip")
    ).run()
    at.button[0].click().run()
    assert not at.exception
    assert any("not a readable zip" in e.value for e in at.error)


def test_reference_built_from_a_labelled_zip() -> None:
    at = _app()
    at.radio(key="bundle_source").set_value("build").run()
    at.file_uploader(key="bundle_build_upload").set_value(
        ("set.zip", _labelled_zip(4), "application/zip")
    ).run()
    build = next(b for b in at.sidebar.button if b.label == "Build reference")
    build.click().run()
    _ok(at)
    assert any(c.value.startswith("built from") for c in at.sidebar.caption)


def test_bad_bundle_upload_keeps_the_demo_bundle() -> None:
    at = _app()
    at.radio(key="bundle_source").set_value("upload").run()
    at.file_uploader(key="bundle_upload").set_value(("bundle.json", b"{not json", "application/json")).run()
    assert not at.exception
    assert any("bundle" in e.value.lower() for e in at.error)
    assert any(c.value.startswith("demo bundle") for c in at.sidebar.caption)


def test_a_bundle_uploaded_as_its_two_files_is_read_from_bytes() -> None:
    from verification import demo

    npz = demo.demo_reference_bundle()
    manifest = npz.with_suffix(".json")
    at = _app()
    at.radio(key="bundle_source").set_value("upload").run()
    at.file_uploader(key="bundle_upload").set_value(
        [
            (npz.name, npz.read_bytes(), "application/octet-stream"),
            (manifest.name, manifest.read_bytes(), "application/json"),
        ]
    ).run()
    _ok(at)
    assert any(c.value.startswith(f"uploaded bundle {manifest.name}") for c in at.sidebar.caption)


def test_attention_controls_survive_a_visit_to_other_pages() -> None:
    at = _app()
    at.selectbox(key="method").set_value("layercam")
    at.slider(key="opacity").set_value(0.7).run()
    for page in ("pages/similarity.py", "pages/compare.py", "pages/export.py", "pages/attention.py"):
        at.switch_page(page).run()
    _ok(at)
    assert at.selectbox(key="method").value == "layercam"
    assert at.slider(key="opacity").value == pytest.approx(0.7)


def test_garbage_class_is_shown_as_a_rejection_not_a_diagnosis() -> None:
    at = _app()
    at.selectbox(key="model_a_demo").set_value("garbage").run()
    at.selectbox(key="images_split").set_value("ood").run()
    shown = []
    for index in range(min(5, len(at.selectbox(key="image_index").options))):
        at.selectbox(key="image_index").set_value(index).run()
        assert not at.exception
        shown.append(any("rejected as out-of-distribution" in e.value for e in at.error))
        if shown[-1]:
            assert any("Rejected input" in m.value for m in at.markdown)
    assert any(shown), "the garbage-class model rejects out-of-distribution demo images"


class _Broken(_Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this model always fails")


def test_a_model_whose_forward_raises_is_reported_and_the_app_keeps_working() -> None:
    buf = io.BytesIO()
    torch.save(_Broken(), buf)
    at = _app()
    at.radio(key="model_a_source").set_value("upload").run()
    at.checkbox(key="model_a_trust").check()
    at.file_uploader(key="model_a_upload").set_value(
        ("broken.pt", buf.getvalue(), "application/octet-stream")
    )
    at.run()
    assert not at.exception
    assert any("broken.pt" in e or "always fails" in e for e in _errors(at)), _errors(at)
    assert any("Still using" in w.value for w in at.warning)
    assert len(_images(at)) >= 3


@pytest.mark.slow
def test_slow_methods_join_the_grid_on_request() -> None:
    at = _app()
    before = len(_images(at))
    at.toggle(key="attention_slow").set_value(True).run()
    _ok(at)
    assert (
        len(_images(at)) == before + 5
    )  # Score-CAM, Ablation-CAM, saliency, integrated gradients, occlusion


# ---------------------------------------------------------------------------------------------- verdicts


def test_shortcut_model_on_the_marker_split_is_unsuitable_naming_the_deciding_line() -> None:
    at = _app()
    at.selectbox(key="model_a_demo").set_value("shortcut").run()
    at.selectbox(key="images_split").set_value("shortcut").run()
    at.switch_page("pages/similarity.py").run()
    _ok(at)
    assert _verdict(at) == "UNSUITABLE"
    banner = next(b for b in at.error if b.icon == VERDICT_ICON).value
    assert "UNSUITABLE — decided by E" in banner, banner
    assert "accuracy" in banner
    lines = next(t for t in _tables(at) if "votes" in t.columns)  # the evidence lines
    deciding = lines[lines["votes"] == "deciding"]
    assert len(deciding) == 1
    assert deciding.iloc[0]["result"].endswith("failed")


def test_sound_model_on_ood_images_is_not_assessable_never_suitable() -> None:
    at = _app()
    at.selectbox(key="images_split").set_value("ood").run()
    _ok(at)
    assert any(e.icon == NOT_ASSESSABLE_ICON and "Not assessable" in e.value for e in at.error)
    assert not any("SUITABLE" in b and "UNSUITABLE" not in b for b in _banners(at))
    at.switch_page("pages/similarity.py").run()
    _ok(at)
    assert _verdict(at) != "SUITABLE"
    images = _tables(at)[-1]
    assert len(images) == int(_metric(at, "Images assessed").split(" of ")[1]), "every image, one row each"
    assert images["assessed"].str.startswith("not assessable").mean() >= 0.9


def _mismatched_model() -> bytes:
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(_Tiny(), buf)  # three outputs named class_0 … class_2: not the bundle's classes
    return buf.getvalue()


def test_a_model_whose_classes_do_not_match_the_bundle_cannot_be_verified() -> None:
    at = _app()
    at.radio(key="model_a_source").set_value("upload").run()
    at.checkbox(key="model_a_trust").check()
    at.file_uploader(key="model_a_upload").set_value(
        ("tiny.pt", _mismatched_model(), "application/octet-stream")
    )
    at.run()
    at.switch_page("pages/similarity.py").run()
    _ok(at)
    assert _verdict(at) == "CANNOT VERIFY"
    assert not [b for b in at.error if b.icon == VERDICT_ICON], "a missing input is not a red 'unsuitable'"
    banner = next(w.value for w in at.warning if "CANNOT VERIFY" in w.value)
    assert "do not match" in banner, "it says what is missing: a bundle for this model's classes"


def test_compare_never_calls_the_shortcut_model_better() -> None:
    at = _app()
    at.selectbox(key="images_split").set_value("shortcut").run()
    at.switch_page("pages/compare.py").run()
    _ok(at)
    assert not at.toggle(key="model_b_enabled").value, "model B is off until asked for"
    at.button[0].click().run()  # "Compare with a second model" on the page
    _ok(at)
    winners = [s.value for s in at.success if "better supported" in s.value]
    assert not any("shortcut" in w for w in winners), winners
    assert at.dataframe, "line-by-line table"


def test_a_multilabel_model_gets_independent_sigmoid_probabilities() -> None:
    import json
    import re

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(_Tiny(), buf)
    sidecar = json.dumps({"task": "multilabel", "class_names": ["normal", "nodule", "effusion"]}).encode()
    at = _app()
    at.radio(key="model_a_source").set_value("upload").run()
    at.checkbox(key="model_a_trust").check()
    at.file_uploader(key="model_a_sidecar").set_value(("tiny.json", sidecar, "application/json"))
    at.file_uploader(key="model_a_upload").set_value(("tiny.pt", buf.getvalue(), "application/octet-stream"))
    at.run()
    _ok(at)
    assert any("multilabel" in c.value for c in at.sidebar.caption)
    assert any("Labels are independent" in m.value for m in at.markdown)
    bars = next(h.proto.body for h in at.get("html") if "%" in h.proto.body and "normal" in h.proto.body)
    probs = [float(p) / 100 for p in re.findall(r">(\d+\.\d)%<", bars)]
    assert len(probs) == 3
    assert abs(sum(probs) - 1.0) > 0.05, "sigmoid per label, not a softmax over the labels"
