"""Drive the real dashboard in headless Chromium: start ``streamlit run`` on a free port, open pages, wait for
heatmaps to be decoded. Shared by ``tests/app/test_browser.py`` and ``bench/dashboard.py``."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from verification.pacs.orthanc import stop_process

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# every browser test: skipped, with the way to install it, where Debian's chromium is absent
NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)"
)
# the marks of a test that drives the whole dashboard in Chromium (a server and a browser each: slow)
BROWSER_TEST = [pytest.mark.browser, pytest.mark.slow, NEEDS_CHROMIUM]
ARTIFACTS = ROOT / "test-artifacts"  # screenshots and measurements the browser tests leave
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The Attention page puts its main overlay in a keyed container: Streamlit gives it the class st-key-<key>.
OVERLAY = ".st-key-overlay_main img"

# True when the main overlay image exists and its pixels are decoded (not merely the <img> element present).
OVERLAY_DECODED_JS = """(sel) => {
  const img = document.querySelector(sel);
  return !!img && img.complete && img.naturalWidth > 0;
}"""
# True when every image in the main area (the whole page outside Streamlit) is decoded, and there are ≥ n.
ALL_DECODED_JS = """(n) => {
  const root = document.querySelector('[data-testid="stMain"]') || document;
  const imgs = Array.from(root.querySelectorAll('img'));
  return imgs.length >= n && imgs.every((i) => i.complete && i.naturalWidth > 0);
}"""
# True when the overlay shows a picture other than ``old`` and it is decoded.
OVERLAY_CHANGED_JS = """([sel, old]) => {
  const img = document.querySelector(sel);
  return !!img && img.src !== old && img.complete && img.naturalWidth > 0;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def streamlit_server(
    *, timeout: float = 120.0, script: str = "dashboard.py", env: dict[str, str] | None = None
) -> Iterator[str]:
    """``streamlit run <script>`` on 127.0.0.1:<free port>; yields the URL; kills the server after.

    ``script="ui/serve.py"`` is the warm launcher: its health endpoint answers only once the demo is warm.
    ``env``: variables added to the server's environment. Its output goes to :func:`server_log` of the URL."""
    port = free_port()
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    log = open(server_log(f"http://127.0.0.1:{port}"), "wb")  # noqa: SIM115 (closed in finally)
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        script,
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        stop_process(proc)
        log.close()


def server_log(url: str) -> Path:
    """The file :func:`streamlit_server` writes the server's output to."""
    return ROOT / "test-artifacts" / f"streamlit-{url.rsplit(':', 1)[1]}.log"


@contextmanager
def chromium_page(*, width: int = 1600, height: int = 1100) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
            yield context.new_page()
        finally:
            browser.close()


def wait_overlay(page: Any, *, timeout_ms: float = 120_000) -> str:
    """Wait until the Attention page's main heatmap is decoded; returns its src."""
    page.wait_for_function(OVERLAY_DECODED_JS, arg=OVERLAY, timeout=timeout_ms, polling=50)
    return str(page.eval_on_selector(OVERLAY, "(img) => img.src"))


def wait_overlay_changed(page: Any, old_src: str, *, timeout_ms: float = 120_000) -> str:
    page.wait_for_function(OVERLAY_CHANGED_JS, arg=[OVERLAY, old_src], timeout=timeout_ms, polling=20)
    return str(page.eval_on_selector(OVERLAY, "(img) => img.src"))


def wait_all_images(page: Any, n: int = 1, *, timeout_ms: float = 120_000) -> None:
    page.wait_for_function(ALL_DECODED_JS, arg=n, timeout=timeout_ms, polling=100)


def wait_idle(page: Any, *, timeout_ms: float = 180_000) -> None:
    """Wait until Streamlit has finished the script run that the last interaction started.

    The app root carries ``data-test-script-state`` ("running" / "notRunning"); a click needs a moment to
    reach the server, so first give the run up to 2 s to start, then wait for it to end.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    # No "running" within 2 s: the run was over before we looked, or this interaction started none.
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_selector('[data-test-script-state="running"]', timeout=2_000)
    page.wait_for_selector('[data-test-script-state="notRunning"]', timeout=timeout_ms)


def choose(page: Any, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox whose label is ``label``."""
    page.get_by_role("combobox", name=label, exact=True).first.click()
    page.get_by_role("option", name=option, exact=True).first.click()


def goto_page(page: Any, title: str) -> None:
    """Click a page in the top navigation."""
    page.locator('[data-testid="stTopNavLink"], [data-testid="stSidebarNavLink"]').filter(
        has_text=title
    ).first.click()
