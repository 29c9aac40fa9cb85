"""The dashboard runs offline (issue #14, item 7): in headless Chromium, every request the page makes while it
opens and visits every page goes to the app's own server on localhost — the favicon and the fonts included.

Requests to any other host are recorded and refused (so a regression fails here instead of waiting on DNS);
``data:`` and ``blob:`` URLs never leave the browser and are allowed. Skipped only when Debian's
``/usr/bin/chromium`` is absent.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.app.browser_harness import (
    NEEDS_CHROMIUM,
    ROOT,
    chromium_page,
    goto_page,
    streamlit_server,
    wait_idle,
    wait_overlay,
)

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
IN_BROWSER = {"data", "blob", "about"}
SETTLE_MS = 1500
PAGES = ["Similarity", "Feature maps", "Compare models", "Consistency", "Dataset check", "Report & export"]


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in IN_BROWSER or (
        parts.scheme in ("http", "https", "ws", "wss") and parts.hostname in LOCAL_HOSTS
    )


def test_no_request_leaves_the_machine() -> None:
    requests: list[str] = []
    external: list[str] = []

    def route(r: Any) -> None:
        url = r.request.url
        requests.append(url)
        if _local(url):
            r.continue_()
        else:
            external.append(url)
            r.abort()

    with streamlit_server() as url, chromium_page() as page:
        page.context.route("**/*", route)
        page.on("websocket", lambda ws: requests.append(ws.url))
        page.goto(url)
        wait_overlay(page)
        wait_idle(page)
        favicon = page.eval_on_selector("link[rel='shortcut icon']", "(link) => link.href")
        for title in PAGES:  # each page's frame, widgets and charts load their scripts, styles and fonts
            goto_page(page, title)
            page.get_by_role("heading", level=1).filter(has_text=title.split()[0]).first.wait_for(
                timeout=120_000
            )
            page.wait_for_timeout(SETTLE_MS)
        wait_idle(page)
        fonts = page.evaluate("() => Array.from(document.fonts).map((f) => [f.family, f.status])")

    assert requests, "the request log is empty: the recorder did not run"
    assert not external, f"{len(external)} request(s) left the machine: {sorted(set(external))[:10]}"
    assert all(_local(u) for u in requests)
    assert any(u.startswith(f"{url}/_stcore/stream") or "/_stcore/stream" in u for u in requests), "websocket"
    assert _local(favicon), favicon
    assert urlsplit(favicon).path.endswith(".png"), f"favicon {favicon} is not the app's own PNG"
    assert any(u.endswith(".woff2") for u in requests), "no font file was requested from the app"
    assert not [f for f in fonts if f[1] == "error"], f"fonts failed to load: {fonts}"
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "offline-requests.txt").write_text(
        "\n".join(requests) + "\n", encoding="utf-8"
    )
