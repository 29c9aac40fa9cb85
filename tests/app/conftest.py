"""Fixtures for the dashboard tests; the repository root is importable (``ui``, ``verification``)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

DASHBOARD = ROOT / "dashboard.py"


@pytest.fixture
def navigation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make AppTest behave like the real server with ``st.navigation``.

    AppTest resets ``PagesManager.uses_pages_directory`` before every run, so with a ``pages/`` folder next to
    the script each rerun after the first runs the page file alone (multipage v1) instead of dashboard.py. The
    real server clears that flag for good the first time ``st.navigation`` runs; this does the same.
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self: PagesManager, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
