"""The reports' example pictures: read from the paths the examples name, unless the caller gives them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from verification.report.pictures import example_pictures
from verification.verdict import Example


def _report(image: str) -> Any:
    cam = np.outer(np.hanning(8), np.hanning(8)).astype(np.float32)
    return SimpleNamespace(examples=(Example(image, None, cam),), references={})


def test_given_displays_are_the_only_pictures_no_file_is_read_by_name(tmp_path: Path) -> None:
    path = tmp_path / "on_disk.png"
    Image.fromarray(np.full((20, 20), 200, np.uint8)).save(path)
    ((_, read, _),) = example_pictures(_report(str(path)))  # no displays (the CLI): read from the path
    assert read is not None
    assert read.shape[:2] == (20, 20)
    other = {"another.png": np.zeros((20, 20, 3), np.uint8)}
    ((_, picture, _),) = example_pictures(_report(str(path)), other)  # the dashboard's: not among them
    assert picture is None
    ((_, given, _),) = example_pictures(_report(str(path)), {str(path): np.zeros((30, 30, 3), np.uint8)})
    assert given is not None
    assert given.shape[:2] == (30, 30)
