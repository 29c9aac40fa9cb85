"""The trust tick belongs to the file it was given for: another upload in its place is not trusted.

A user ticks "I trust this file" for their own pickled model, then drops a different file into the same
uploader. That second file must be refused until the box is ticked again for it, and nothing in it may run.
"""

from __future__ import annotations

import io
import pathlib
import pickle
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from tests.app.conftest import DASHBOARD

pytestmark = pytest.mark.usefixtures("navigation_only")


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (pathlib.Path.touch, (str(self.marker),))


def _trust_errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error if "trust" in e.value.lower()]


def test_a_tick_for_one_file_does_not_trust_the_next(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save(_Tiny(), buf)
    marker = tmp_path / "payload_ran"
    at = AppTest.from_file(str(DASHBOARD), default_timeout=300).run()
    at.radio(key="model_a_source").set_value("upload").run()
    at.file_uploader(key="model_a_upload").set_value(("mine.pt", buf.getvalue(), "application/octet-stream"))
    at.run()
    assert _trust_errors(at), "a pickle is refused before the tick"
    at.checkbox(key="model_a_trust").check().run()
    assert not at.exception
    assert not _trust_errors(at), "the ticked file loads"

    evil = pickle.dumps(_Payload(marker))
    at.file_uploader(key="model_a_upload").set_value(("other.pt", evil, "application/octet-stream"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not marker.exists(), "the second file ran code on the first file's tick"
    assert at.checkbox(key="model_a_trust").value is False
    assert _trust_errors(at), "the second file is refused until it is trusted itself"
    assert any("tick the box again" in c.value for c in at.sidebar.caption)
