"""Server folders (issue #14, item 7): the Dataset check reads a folder on the server only when the operator
allows chosen root folders (``VERIFICATION_FOLDER_ROOTS``), off by default; paths are resolved and must stay
inside a root, also through ``..`` and symbolic links."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import DASHBOARD, ROOT
from ui import loaders
from verification import server_paths
from verification.errors import ImageLoadError

DEMO_PNG = sorted((ROOT / "assets" / "demo" / "images" / "test").glob("00[0-1]_*.png"))
OFF = "turned off"
OUTSIDE = "Only folders inside"


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """root/ (allowed) with class folders and two escaping links; outside/ (not allowed) with an image."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "set" / "normal").mkdir(parents=True)
    (root / "set" / "nodule").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(DEMO_PNG[0], root / "set" / "normal" / "a.png")
    shutil.copy(DEMO_PNG[1], root / "set" / "nodule" / "b.png")
    shutil.copy(DEMO_PNG[0], outside / "secret.png")
    os.symlink(outside / "secret.png", root / "set" / "normal" / "link.png")  # a file link out of the root
    os.symlink(outside, root / "escape")  # a folder link out of the root
    monkeypatch.setenv(server_paths.ENV, str(root))
    return {"root": root.resolve(), "outside": outside.resolve()}


def test_off_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(server_paths.ENV, raising=False)
    assert not server_paths.enabled()
    with pytest.raises(ImageLoadError, match=OFF):
        server_paths.resolve_folder(str(tmp_path))
    with pytest.raises(ImageLoadError, match=OFF):
        loaders.sources_from_folder(str(tmp_path))


def test_roots_that_do_not_exist_are_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(server_paths.ENV, os.pathsep.join([str(tmp_path / "missing"), "", str(tmp_path)]))
    assert server_paths.allowed_roots() == (tmp_path.resolve(),)
    monkeypatch.setenv(server_paths.ENV, str(tmp_path / "missing"))
    assert not server_paths.enabled()


@pytest.mark.parametrize(
    "text",
    ["{outside}", "{root}/../outside", "{root}/escape", "{root}/escape/", "../outside", "/", "/etc"],
)
def test_paths_outside_the_roots_refused(tree: dict[str, Path], text: str) -> None:
    path = text.format(root=tree["root"], outside=tree["outside"])
    with pytest.raises(ImageLoadError, match=OUTSIDE) as info:
        server_paths.resolve_folder(path)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("text", ["", "  ", "x" * 5000, "set\x00/normal", "~"])  # "~": a name in the root
def test_unusable_paths_refused(tree: dict[str, Path], text: str) -> None:
    with pytest.raises(ImageLoadError):
        server_paths.resolve_folder(text)


def test_inside_paths_resolved_relative_to_the_first_root(tree: dict[str, Path]) -> None:
    root = tree["root"]
    assert server_paths.resolve_folder("set") == root / "set"
    assert server_paths.resolve_folder(str(root / "set" / "normal" / "..")) == root / "set"
    assert server_paths.resolve_folder(str(root)) == root
    with pytest.raises(ImageLoadError, match="not a folder"):
        server_paths.resolve_folder("set/normal/a.png")


def test_folder_sources_drop_links_that_leave_the_roots(tree: dict[str, Path]) -> None:
    sources = loaders.sources_from_folder("set")
    assert sorted((s.name, s.label) for s in sources) == [
        ("nodule/b.png", "nodule"),
        ("normal/a.png", "normal"),
    ]
    assert all(s.path is not None and tree["outside"] not in s.path.resolve().parents for s in sources)


# ------------------------------------------------------------------------------------------------- AppTest


def _dataset_page() -> AppTest:
    at = AppTest.from_file(str(DASHBOARD), default_timeout=300).run()
    return at.switch_page("pages/dataset.py").run()


def _labels(at: AppTest) -> list[str]:
    return [str(o) for o in at.radio(key="dataset_source").options]


@pytest.mark.usefixtures("navigation_only")
def test_page_hides_server_folders_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(server_paths.ENV, raising=False)
    at = _dataset_page()
    assert not at.exception, [e.value for e in at.exception]
    assert not any("server" in label or "machine" in label for label in _labels(at)), _labels(at)
    assert not at.text_input  # no path box anywhere on the page


@pytest.mark.usefixtures("navigation_only")
def test_page_reads_only_inside_the_allowed_roots(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enabled: the option appears; a path outside the root (directly, by '..' or through a link) is refused
    with an error on the page and nothing is verified; the same session's state is ignored once the operator
    turns the option off again."""
    verified: list[object] = []

    def verify_sources(*args: object, **kwargs: object) -> None:
        verified.append(args)

    monkeypatch.setattr(loaders, "verify_sources", verify_sources)
    at = _dataset_page()
    assert any("server" in label for label in _labels(at)), _labels(at)
    at.radio(key="dataset_source").set_value("folder").run()
    for text in (str(tree["outside"]), f"{tree['root']}/../outside", f"{tree['root']}/escape"):
        at.text_input(key="dataset_folder").set_value(text).run()
        at.button[0].click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert any(OUTSIDE in e.value for e in at.error), [e.value for e in at.error]
    assert verified == []
    monkeypatch.delenv(server_paths.ENV)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="dataset_source").value != "folder"
    assert not at.text_input
