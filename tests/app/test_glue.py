"""The dashboard draws maps only through the backend's one renderer (verification.render): no module of ui/ or
pages/ maps colours or blends pictures itself, so a heatmap on a page has the pixels of the same map in the
command line's and the report's pictures (the blend itself: tests/test_render.py)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.app.conftest import DASHBOARD

ROOT = DASHBOARD.parent
# What colour-maps or blends: OpenCV's colour maps and weighted sums, matplotlib and PIL's blending.
FORBIDDEN_ATTRIBUTES = {"applyColorMap", "addWeighted", "get_cmap", "colormaps", "blend", "alpha_composite"}
FORBIDDEN_MODULES = {"matplotlib"}


def _glue_files() -> list[Path]:
    return sorted([*(ROOT / "ui").glob("*.py"), *(ROOT / "pages").glob("*.py"), DASHBOARD])


def _offences(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and (
            node.attr in FORBIDDEN_ATTRIBUTES or node.attr.startswith("COLORMAP_")
        ):
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
        found += [
            f"{path.name}:{node.lineno} import {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES
        ]
        if isinstance(node, ast.ImportFrom):  # `from cv2 import applyColorMap`: imported by name
            found += [
                f"{path.name}:{node.lineno} import {a.name}"
                for a in node.names
                if a.name in FORBIDDEN_ATTRIBUTES or a.name.startswith("COLORMAP_")
            ]
    return found


def test_no_page_or_ui_module_maps_colours_or_blends_itself() -> None:
    files = _glue_files()
    assert len(files) > 10
    assert [o for f in files for o in _offences(f)] == []


def test_the_check_finds_a_page_that_blends_on_its_own(tmp_path: Path) -> None:
    page = tmp_path / "rogue.py"
    page.write_text(
        "import cv2\nfrom matplotlib import cm\n"
        "pic = cv2.addWeighted(a, 0.5, cv2.applyColorMap(m, cv2.COLORMAP_JET), 0.5, 0)\n"
    )
    assert _offences(page) == [
        "rogue.py:2 import matplotlib",
        "rogue.py:3 .addWeighted",
        "rogue.py:3 .applyColorMap",
        "rogue.py:3 .COLORMAP_JET",
    ]


def test_the_check_finds_a_blend_imported_by_name(tmp_path: Path) -> None:
    page = tmp_path / "rogue.py"
    page.write_text("from cv2 import COLORMAP_JET, applyColorMap\nfrom PIL.Image import blend\n")
    assert _offences(page) == [
        "rogue.py:1 import COLORMAP_JET",
        "rogue.py:1 import applyColorMap",
        "rogue.py:2 import blend",
    ]
