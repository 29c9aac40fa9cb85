"""The model upload form (issue #15), through AppTest on the real ``dashboard.py``: a missing field is named
by the form's own control, label names typed in the form reach the model (and the pages), the task is the
user's choice, a head that looks multi-label is pointed out but never switched silently, and the sidecar is
offered for download."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from tests.app.conftest import DASHBOARD, ROOT
from verification.io.records import LoadedImage, LoadedModel

pytestmark = pytest.mark.usefixtures("navigation_only")

SAMPLE = ROOT / "assets" / "demo" / "samples" / "sound_model.safetensors"
TIMEOUT = 300


def _upload_form() -> AppTest:
    at = AppTest.from_file(str(DASHBOARD), default_timeout=TIMEOUT).run()
    at.radio(key="model_a_source").set_value("upload").run()
    return at


def _sidebar_errors(at: AppTest) -> list[str]:
    return [e.value for e in at.sidebar.error]


def _model_caption(at: AppTest) -> str:
    found = [c.value for c in at.sidebar.caption if "classes:" in c.value]
    assert found, [c.value for c in at.sidebar.caption]
    return str(found[0])


def test_weights_only_points_at_the_architecture_field() -> None:
    at = _upload_form()
    at.file_uploader(key="model_a_upload").set_value(
        ("sound_model.safetensors", SAMPLE.read_bytes(), "application/octet-stream")
    )
    at.run()
    assert not at.exception
    errors = _sidebar_errors(at)
    assert any("choose its architecture in the **Architecture** field below" in e for e in errors), errors
    assert not any("--architecture" in e or "architecture argument" in e for e in errors), errors
    # shown where the field is: the error comes before the Architecture input in the sidebar
    order = [getattr(el, "label", None) or getattr(el, "value", "") for el in at.sidebar]
    where_error = next(i for i, v in enumerate(order) if "**Architecture** field below" in str(v))
    where_field = next(i for i, v in enumerate(order) if str(v).startswith("Architecture (for bare"))
    assert where_error < where_field, order


def _sidecar_without_names() -> bytes:
    doc = json.loads(SAMPLE.with_suffix(".json").read_text())
    doc.pop("class_names")
    return json.dumps(doc).encode()


def test_label_names_and_task_from_the_form_reach_the_model() -> None:
    at = _upload_form()
    at.file_uploader(key="model_a_sidecar").set_value(
        ("s.json", _sidecar_without_names(), "application/json")
    )
    at.file_uploader(key="model_a_upload").set_value(
        ("sound_model.safetensors", SAMPLE.read_bytes(), "application/octet-stream")
    )
    at.run()
    assert not at.exception
    assert "class_0, class_1, class_2" in _model_caption(at)
    assert any("have no names" in c.value and "**Label names**" in c.value for c in at.sidebar.caption)
    assert at.get("download_button"), "the sidecar is offered for download"
    at.button(key="model_a_names_fill").click().run()  # the current names, ready to edit
    assert at.text_area(key="model_a_names").value == "class_0\nclass_1\nclass_2"

    at.text_area(key="model_a_names").set_value("clear\nmass\nfluid").run()
    assert not at.exception
    assert not _sidebar_errors(at), _sidebar_errors(at)
    caption = _model_caption(at)
    assert "classification" in caption
    assert "clear, mass, fluid" in caption
    # the single-label reading is said, with where to change it
    assert any("Read as single-label" in c.value and "**Task**" in c.value for c in at.sidebar.caption)

    at.selectbox(key="model_a_task").set_value("multilabel").run()
    assert not at.exception
    assert "multilabel" in _model_caption(at)
    assert not any("Read as single-label" in c.value for c in at.sidebar.caption)
    # the Attention page (the default page) now draws one map per label, named as typed
    assert any("One map per label" in m.value for m in at.markdown), [m.value for m in at.markdown]
    pictures = [str(i.proto) for i in at.get("image")]  # the captions ride in the image protos
    assert any("clear · σ" in p or "mass · σ" in p or "fluid · σ" in p for p in pictures)

    at.text_area(key="model_a_names").set_value("only\ntwo").run()  # wrong count: the form's field says so
    errors = _sidebar_errors(at)
    assert any("**Label names**" in e for e in errors), errors
    assert any("Still using" in w.value for w in at.sidebar.warning)


class _SigmoidHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 5)
        self.out = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.head(self.pool(self.features(x)).flatten(1)))


def test_a_head_that_looks_multilabel_is_pointed_out_not_switched() -> None:
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(_SigmoidHead().eval(), buf)
    at = _upload_form()
    at.checkbox(key="model_a_trust").check()
    at.file_uploader(key="model_a_upload").set_value(("heads.pt", buf.getvalue(), "application/octet-stream"))
    at.run()
    assert not at.exception
    hints = [i.value for i in at.sidebar.info if "may be a multi-label model" in i.value]
    assert hints, [i.value for i in at.sidebar.info]
    assert "Sigmoid" in hints[0]
    assert "**Task**" in hints[0]
    assert "· classification ·" in _model_caption(at), "never switched without the user"
    at.selectbox(key="model_a_task").set_value("multilabel").run()
    assert not at.exception
    assert "· multilabel ·" in _model_caption(at)
    assert not [i.value for i in at.sidebar.info if "may be a multi-label model" in i.value]


def test_the_download_is_the_sidecar_of_the_model_as_used(tmp_path: Path) -> None:
    """What the button offers (ui.model_form.download_bytes) reloads as the same model."""
    from ui.model_form import download_bytes
    from verification.io.models import load_model
    from verification.io.sidecar import parse_sidecar, read_sidecar_bytes, sidecar_of

    (tmp_path / "m.safetensors").write_bytes(SAMPLE.read_bytes())
    doc = json.loads(SAMPLE.with_suffix(".json").read_text())
    doc.update(class_names=["clear", "mass", "fluid"], task="multilabel")
    (tmp_path / "m.json").write_text(json.dumps(doc))
    model = load_model(tmp_path / "m.safetensors")
    data = download_bytes(model)
    assert parse_sidecar(read_sidecar_bytes(data)) == sidecar_of(model)
    (tmp_path / "m.json").write_bytes(data)
    again = load_model(tmp_path / "m.safetensors")
    assert (again.class_names, again.task) == (("clear", "mass", "fluid"), "multilabel")


def tiny_multilabel() -> tuple[LoadedModel, LoadedImage]:
    """A five-label model whose biases make labels a, b and e present, and a 32×32 noise image."""
    import numpy as np

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)
    ).eval()
    head = net[4]
    assert isinstance(head, nn.Linear)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([6.0, 5.0, -6.0, -6.0, 4.0]))  # labels 0, 1, 4 present
    model = LoadedModel(
        net, 1, (32, 32), ("a", "b", "c", "d", "e"), (0.5,), (0.25,), "module", "tiny-ml", task="multilabel"
    )
    pixels = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    return model, LoadedImage(pixels, (pixels * 255).astype(np.uint8), "x.png", "png", "img-hash")


def _label_maps_script() -> None:
    import threading

    from tests.app.test_model_form import tiny_multilabel
    from ui import label_maps

    model, image = tiny_multilabel()
    label_maps.draw(model, threading.Lock(), image, method="gradcam", layer="1")


def _label_maps_pixels_script() -> None:
    """Draws the per-label maps with every picture the page shows kept, beside the backend renderer's
    pictures of the backend's label maps."""
    import threading
    from typing import Any

    import numpy as np
    import streamlit as st

    from tests.app.test_model_form import tiny_multilabel
    from ui import label_maps
    from verification import render
    from verification.io.images import to_tensor
    from verification.multilabel import label_cams

    model, image = tiny_multilabel()
    shown: list[np.ndarray] = []
    draw_image = st.image

    def keep(picture: Any, *args: Any, **kwargs: Any) -> Any:
        shown.append(np.asarray(picture))
        return draw_image(picture, *args, **kwargs)

    st.image = keep
    try:
        label_maps.draw(
            model, threading.Lock(), image, method="gradcam", layer="1", colormap="turbo", opacity=0.6
        )
    finally:
        st.image = draw_image
    maps = label_cams(model, to_tensor([image], model), methods=("gradcam",), layers="1").results[0].maps
    expected = [render.overlay(image.display, m, opacity=0.6, colormap="turbo", max_side=384) for m in maps]
    st.session_state["pictures"] = (shown, expected)


def test_one_map_per_positive_label_is_drawn() -> None:
    at = AppTest.from_function(_label_maps_script, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("One map per label" in m.value and "3 label(s)" in m.value for m in at.markdown)
    pictures = list(at.get("image"))
    assert len(pictures) == 3, [p for p in pictures]


def test_the_label_maps_shown_are_the_backend_renderers_pictures_pixel_for_pixel() -> None:
    at = AppTest.from_function(_label_maps_pixels_script, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    shown, expected = at.session_state["pictures"]
    assert len(shown) == len(expected) == 3
    for got, want in zip(shown, expected, strict=True):
        assert got.dtype == want.dtype == "uint8"
        assert got.shape == want.shape
        assert (got == want).all()
