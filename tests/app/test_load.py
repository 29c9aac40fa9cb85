"""Load: 8 concurrent browser sessions on one dashboard server, each on its own model, image and method.

Two fresh servers on loopback (their caches do not share anything):

* **A**, one session, goes through the 8 choices one after the other and records, for each, the heatmap the
  page draws, the prediction line and how long the image change took to draw (the single-session latency);
* **B** gets 8 sessions at once (8 browser contexts in one headless Chromium), each sets its model and method,
  waits for the others, then all change their image at the same moment (the concurrent latency).

Each (model, image) pair is used by one session only, so every measured change is a computation, not a cache
hit. Pass: no session shows an exception or an error box; each session's heatmap equals A's for the same
choice (decoded pixels; cross-talk between sessions would show another map) and so does its prediction line;
the server's resident memory (sampled from /proc every 0.2 s) stays under :data:`RSS_BOUND_MB` and within
:data:`SESSION_MEMORY_BOUND_MB` of A's. The latencies (median, p95) and the memory are printed (``pytest -s``)
and written to ``test-artifacts/load.json``. No request of any session may leave loopback (favicon, fonts).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.app.browser_harness import (
    ARTIFACTS,
    BROWSER_TEST,
    CHROMIUM,
    CHROMIUM_ARGS,
    OVERLAY,
    OVERLAY_CHANGED_JS,
    OVERLAY_DECODED_JS,
    streamlit_server,
)

pytestmark = BROWSER_TEST
SESSIONS = 8
# Measured (this test, 5 runs, 2 cores, load average 10-30): one session's server peaks at 1.20-1.39 GB
# resident, eight concurrent sessions at 1.63-2.02 GB (+0.43 to +0.77 GB). The bounds leave room to vary.
RSS_BOUND_MB = 3072.0  # the server with 8 sessions on 4 models
SESSION_MEMORY_BOUND_MB = 1024.0  # what 7 more concurrent sessions may add over one session's peak
TIMEOUT_MS = 240_000
RETRY_MS = 60_000  # an image choice with no new heatmap by then is chosen again (the latency keeps it)
# (demo model label, image option index, method label): 8 distinct (model, image) pairs, 4 methods. Each model
# keeps one method and gets two images of its own, so one session needs at most 4 page runs (ordered this way,
# the single session A needs 15) and no measured (model, image) pair was computed before.
CHOICES: list[tuple[str, int, str]] = [
    ("Sound classifier", 1, "Grad-CAM"),
    ("Sound classifier", 2, "Grad-CAM"),
    ("Shortcut classifier (marker)", 3, "Grad-CAM++"),
    ("Shortcut classifier (marker)", 4, "Grad-CAM++"),
    ("With garbage class", 5, "LayerCAM"),
    ("With garbage class", 6, "LayerCAM"),
    ("Lesion segmentation", 7, "HiResCAM"),
    ("Lesion segmentation", 8, "HiResCAM"),
]
DEFAULTS = ("Sound classifier", 0, "Grad-CAM")  # what a new session shows
ERROR_SELECTORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


LOOPBACK = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")
OUTSIDE: list[str] = []  # requests that would leave the machine (any session, both servers)


def _record_outside(context: Any) -> None:
    context.on("request", lambda r: None if r.url.startswith(LOOPBACK) else OUTSIDE.append(r.url))


@dataclass
class Outcome:
    choice: tuple[str, int, str]
    latency_s: float = float("nan")
    overlay: np.ndarray | None = field(default=None, repr=False)
    prediction: str = ""
    errors: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- the browser


async def _choose(page: Any, label: str, option: str | int) -> str:
    """Pick ``option`` (its label, typed to filter the list, or its position) in the selectbox ``label``;
    returns the option's text."""
    await page.get_by_role("combobox", name=label, exact=True).first.click()
    if isinstance(option, int):
        item = page.get_by_role("option").nth(option)
        text = (await item.inner_text()).strip()
        await item.click()
        return text
    await page.keyboard.type(option)  # the list is virtualised: only typed matches are sure to be drawn
    await page.get_by_role("option", name=option, exact=True).first.click()
    return option


async def _shown(page: Any, label: str) -> str:
    """The option the selectbox ``label`` shows as chosen."""
    return str(await page.get_by_role("combobox", name=label, exact=True).first.input_value()).strip()


async def _idle(page: Any) -> None:
    with contextlib.suppress(Exception):  # the run ended before we looked, or none started
        await page.wait_for_selector('[data-test-script-state="running"]', timeout=1_500)
    await page.wait_for_selector('[data-test-script-state="notRunning"]', timeout=TIMEOUT_MS)


async def _overlay_src(page: Any) -> str:
    await page.wait_for_function(OVERLAY_DECODED_JS, arg=OVERLAY, timeout=TIMEOUT_MS, polling=50)
    return str(await page.eval_on_selector(OVERLAY, "(img) => img.src"))


async def _overlay_pixels(page: Any, src: str) -> np.ndarray:
    from PIL import Image

    if src.startswith("data:"):
        data = base64.b64decode(src.split(",", 1)[1])
    else:
        data = await (await page.request.get(src)).body()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


async def _prediction(page: Any) -> str:
    lines = await page.get_by_text("Prediction:").all_inner_texts()
    if lines:
        return lines[0].strip()
    masks = await page.get_by_text("Predicted mask").all_inner_texts()  # segmentation: no class prediction
    return masks[0].strip() if masks else ""


async def _errors(page: Any) -> list[str]:
    """Exceptions and error boxes; the garbage model's "input rejected" notice (icon "block") is a result."""
    texts = await page.locator(ERROR_SELECTORS).all_inner_texts()
    return [t[:200] for t in texts if not t.startswith("block")]


async def _prepare(page: Any, current: tuple[str, str], model: str, method: str) -> None:
    """Pick the model and the method where they differ from ``current`` (model, method)."""
    await _overlay_src(page)
    if model != current[0]:
        await _pick(page, "Demo model", model)
        await _overlay_src(page)
    if method != current[1]:
        await _pick(page, "Method", method)


async def _pick(page: Any, label: str, option: str) -> None:
    """Choose ``option`` and wait for the page's run; a click lost while the page redrew is made once more."""
    await _choose(page, label, option)
    await _idle(page)
    if await _shown(page, label) != option:
        await _choose(page, label, option)
        await _idle(page)
    assert await _shown(page, label) == option, (label, option)


async def _measure(page: Any, image: int) -> tuple[float, str]:
    """Change the image; seconds until the new heatmap is decoded in the page."""
    old = await _overlay_src(page)
    t0 = time.monotonic()
    wanted = await _choose(page, "Image to inspect", image)
    try:
        await page.wait_for_function(OVERLAY_CHANGED_JS, arg=[OVERLAY, old], timeout=RETRY_MS, polling=20)
    except Exception:  # a click that landed while the page was redrawing is lost: choose once more
        await _idle(page)
        await _choose(page, "Image to inspect", image)
        await page.wait_for_function(OVERLAY_CHANGED_JS, arg=[OVERLAY, old], timeout=TIMEOUT_MS, polling=20)
    latency = time.monotonic() - t0
    await _idle(page)
    if await _shown(page, "Image to inspect") != wanted:
        # the overlay was redrawn for another reason while the click was lost: choose once more, so that the
        # picture compared below is this image's (a session showing another session's map still fails)
        await _choose(page, "Image to inspect", image)
        await _idle(page)
    assert await _shown(page, "Image to inspect") == wanted
    return latency, await _overlay_src(page)


async def _single_session(url: str) -> list[Outcome]:
    from playwright.async_api import async_playwright

    outcomes = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1600, "height": 1100})
        _record_outside(context)
        page = await context.new_page()
        await page.goto(url)
        current = (DEFAULTS[0], DEFAULTS[2])
        for choice in CHOICES:
            model, image, method = choice
            out = Outcome(choice)
            await _prepare(page, current, model, method)
            current = (model, method)
            out.latency_s, src = await _measure(page, image)
            out.overlay = await _overlay_pixels(page, src)
            out.prediction = await _prediction(page)
            out.errors = await _errors(page)
            outcomes.append(out)
        await browser.close()
    return outcomes


async def _concurrent_sessions(url: str) -> list[Outcome]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        ready = 0
        all_ready = asyncio.Event()

        async def session(choice: tuple[str, int, str]) -> Outcome:
            nonlocal ready
            model, image, method = choice
            out = Outcome(choice)
            context = await browser.new_context(viewport={"width": 1600, "height": 1100})
            _record_outside(context)
            page = await context.new_page()
            await page.goto(url)
            await _prepare(page, (DEFAULTS[0], DEFAULTS[2]), model, method)
            ready += 1
            if ready == len(CHOICES):
                all_ready.set()
            await asyncio.wait_for(all_ready.wait(), TIMEOUT_MS / 1000)
            out.latency_s, src = await _measure(page, image)  # all sessions change their image at once
            out.overlay = await _overlay_pixels(page, src)
            out.prediction = await _prediction(page)
            out.errors = await _errors(page)
            await context.close()
            return out

        outcomes = await asyncio.gather(*(session(c) for c in CHOICES))
        await browser.close()
    return list(outcomes)


# ---------------------------------------------------------------------------------------------- the server


def _server_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in b" ".join(args) and port.encode() in args:
            return int(proc.name)
    raise RuntimeError(f"no streamlit process listens on {url}")


class RssSampler(threading.Thread):
    """VmRSS of one process every ``period`` seconds until stopped; keeps the peak."""

    def __init__(self, pid: int, period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[float] = []
        self._stop_event = threading.Event()

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.samples.append(self.rss_mb())
            except OSError:
                return
            self._stop_event.wait(self.period)

    def stop(self) -> float:
        self._stop_event.set()
        self.join(timeout=5)
        return max(self.samples) if self.samples else float("nan")


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"median": float(np.median(arr)), "p95": float(np.percentile(arr, 95)), "max": float(arr.max())}


def test_eight_concurrent_sessions_match_one_session() -> None:
    t_start = time.monotonic()
    with streamlit_server() as url_a, streamlit_server() as url_b:
        sampler_a = RssSampler(_server_pid(url_a))
        sampler_a.start()
        single = asyncio.run(_single_session(url_a))
        peak_a = sampler_a.stop()
        sampler_b = RssSampler(_server_pid(url_b))
        sampler_b.start()
        concurrent = asyncio.run(_concurrent_sessions(url_b))
        peak_b = sampler_b.stop()
    report: dict[str, Any] = {
        "sessions": SESSIONS,
        "choices": [list(c) for c in CHOICES],
        "single_latency_s": [round(o.latency_s, 3) for o in single],
        "concurrent_latency_s": [round(o.latency_s, 3) for o in concurrent],
        "single": _stats([o.latency_s for o in single]),
        "concurrent": _stats([o.latency_s for o in concurrent]),
        "server_rss_peak_one_session_mb": round(peak_a, 1),
        "server_rss_peak_8_sessions_mb": round(peak_b, 1),
        "wall_s": round(time.monotonic() - t_start, 1),
        "requests_outside_loopback": sorted(set(OUTSIDE)),
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\nimage change → heatmap drawn: one session median {report['single']['median']:.2f} s, "
        f"p95 {report['single']['p95']:.2f} s; {SESSIONS} concurrent sessions median "
        f"{report['concurrent']['median']:.2f} s, p95 {report['concurrent']['p95']:.2f} s; server RSS peak "
        f"{peak_a:.0f} MB (one session) vs {peak_b:.0f} MB ({SESSIONS}); {report['wall_s']:.0f} s in all"
    )

    for a, b in zip(single, concurrent):
        assert not a.errors, (a.choice, a.errors)
        assert not b.errors, (b.choice, b.errors)
        assert a.overlay is not None
        assert b.overlay is not None
        assert a.overlay.shape == b.overlay.shape, (a.choice, a.overlay.shape, b.overlay.shape)
        diff = np.abs(a.overlay - b.overlay)
        # identical up to rounding in the colour map; a map from another session differs by tens of levels
        assert float(diff.mean()) < 0.5, (a.choice, float(diff.mean()))
        assert int(np.percentile(diff, 99.9)) <= 8, (a.choice, int(np.percentile(diff, 99.9)))
        assert a.prediction == b.prediction, (a.choice, a.prediction, b.prediction)
    # the choices really differ from each other, so the equalities above are not vacuous
    distinct = {o.overlay.tobytes() for o in single if o.overlay is not None}
    assert len(distinct) == len(CHOICES)
    assert not OUTSIDE, f"requests left the machine: {sorted(set(OUTSIDE))[:5]}"
    assert peak_b < RSS_BOUND_MB, f"server resident memory peaked at {peak_b:.0f} MB"
    assert peak_b < peak_a + SESSION_MEMORY_BOUND_MB, (peak_a, peak_b)
