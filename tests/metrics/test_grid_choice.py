"""The comparison grid as a user choice: native resolution by default where annotations are involved."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from verification.cli import build_parser
from verification.errors import InputTooLargeError
from verification.metrics import DEFAULT_SIZE
from verification.reference import default_grid

MODEL = SimpleNamespace(input_size=(224, 200))


def test_default_grid_rules() -> None:
    assert default_grid(MODEL, None) == DEFAULT_SIZE  # type: ignore[arg-type]
    assert default_grid(MODEL, None, [None, None]) == DEFAULT_SIZE  # type: ignore[arg-type]
    lesion = np.zeros((224, 200), np.float32)
    assert default_grid(MODEL, None, [None, lesion]) == (224, 200)  # type: ignore[arg-type]
    assert default_grid(MODEL, (32, 48), [lesion]) == (32, 48)  # type: ignore[arg-type]
    with pytest.raises(InputTooLargeError):
        default_grid(MODEL, (5000, 5000))  # type: ignore[arg-type]


BUILD = ["reference", "build", "m.pt", "data", "-o", "out"]


@pytest.mark.parametrize(
    ("text", "want"), [("native", "native"), ("NATIVE", "native"), ("96", (96, 96)), ("128x64", (128, 64))]
)
def test_cli_grid_values(text: str, want: object) -> None:
    assert build_parser().parse_args([*BUILD, "--grid", text]).grid == want


@pytest.mark.parametrize("text", ["0", "abc", "1x2x3", "5000", "-3"])
def test_cli_grid_refuses(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*BUILD, f"--grid={text}"])
    assert "--grid" in capsys.readouterr().err


def test_reference_build_takes_grid() -> None:
    assert build_parser().parse_args([*BUILD, "--grid", "native"]).grid == "native"
    assert build_parser().parse_args(BUILD).grid is None
