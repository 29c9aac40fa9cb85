"""Uploaded images are read once per set of uploads, not on every rerun of the page."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

import ui.sidebar
from tests.app.conftest import DASHBOARD

pytestmark = pytest.mark.usefixtures("navigation_only")


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_a_rerun_with_the_same_uploads_does_not_read_them_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = ui.sidebar.expand_uploads

    def counting(files: list[tuple[str, bytes]]) -> object:
        calls.append(len(files))
        return real(files)

    monkeypatch.setattr(ui.sidebar, "expand_uploads", counting)
    at = AppTest.from_file(str(DASHBOARD), default_timeout=300).run()
    at.radio(key="images_source").set_value("upload").run()
    at.file_uploader(key="images_upload").set_value(
        [("first.png", _png(1), "image/png"), ("broken.png", b"not a png", "image/png")]
    ).run()
    assert calls == [2]
    at.selectbox(key="image_index").set_value(0).run()  # another widget: a rerun with the same uploads
    at.run()
    assert calls == [2], "the same uploads were read again on a rerun"
    assert any("broken.png" in e.value for e in at.error), "a bad file's error still shows on every run"
    at.file_uploader(key="images_upload").set_value([("second.png", _png(2), "image/png")]).run()
    assert calls == [2, 1], "new uploads are read"
    assert "second.png" in at.selectbox(key="image_index").options[0]
