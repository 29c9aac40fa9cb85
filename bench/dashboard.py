"""Dashboard latency in a real browser (headless Chromium through Playwright, a real server).

    .venv/bin/python bench/dashboard.py [--repeats 5] [--load-procs 2] [--only idle|loaded] [--think 2]
                                        [--launcher ui/serve.py]

Each scenario starts the server the README's command starts (``streamlit run ui/serve.py``: the warm launcher;
``--launcher dashboard.py`` measures the plain script) and drives it with Chromium from
``tests/app/browser_harness.py``. Every figure is a median and a 95th percentile over ``--repeats`` runs.

What is measured (all times from the browser's own clock, ``performance.now()``; a step starts when the page
receives the user's action — the pointer press on the choice, the file put into the input — not when the
driver began looking for the element; opening a selectbox's list is not part of the step):

* **first heatmap, cold server** — a new server process per repeat; from the moment its health endpoint
  answers (a warm launcher answers only after warming) to the Attention overlay decoded in the first browser;
* **image switch** — choosing another demo image (one not shown before in this server) in the sidebar;
* **page switch** — clicking another page in the top navigation (each page once per browser session, the
  server's caches warm from earlier sessions); the page's title must be the one clicked; every page is also
  listed on its own (``page switch → Similarity``: median / p95 over its ``--repeats`` visits, held to the
  same target);
* **method switch** — choosing another gradient method on the same image;
* **DICOM upload** — "Upload images" and a 2-D DICOM (``assets/demo/samples/cxr_nodule_dx_monochrome1.dcm``
  with a fresh SOPInstanceUID per repeat, so no cache knows it) put into the upload widget.

"Drawn": the Attention overlay ``<img>`` shows a new picture whose pixels are decoded (``complete``,
``naturalWidth > 0`` and its ``img.decode()`` promise resolved). "Settled": Streamlit's script state is
``notRunning`` (``data-test-script-state`` on the app root; a run or fragment run has started since the
interaction), no element is stale (``data-stale="true"``), no spinner, skeleton or running-status icon is on
the page, and every ``<img>`` in the app is decoded as above; the time is when that state began, and it must
hold for a further ``QUIET_MS`` (a second rerun inside that window restarts the wait). Every message from the
server counts as activity: a run of 50 ms may never show "running" in the page, but it sends messages, and
the page is not settled before the last. Where the time went is printed beside each step: the server's first
message (its answer began) and its last (the run ended); the rest up to "drawn" is the browser's (rendering,
fetching and decoding the pictures). A step that does not settle is listed as FAILED with what held it.

Between a settled page and the next action the bench waits ``--think`` seconds (default 2: a reader looks at
the picture before the next click; the page preloads its chart library once quiet, and what it does in that
time is part of what the reader gets). ``--think 0`` clicks as soon as the page has settled.

The loaded scenario starts ``--load-procs`` background processes (each a single-threaded loop of 512×512
float64 numpy matrix products, at normal priority) before the server, and stops them after. ``uptime``'s
load average is printed with every table.

Measured 2026-12-01 (``--repeats 5``, median / p95 s; 2 cores shared with other engineers' jobs, so the
load is given): "idle" at load 1.3–1.5: first heatmap on a cold server 1.80 / 1.88, new session on a warm
server 2.06 / 3.09, image switch drawn 0.33 / 0.42 and settled 0.37 / 0.48, method switch 0.18 / 0.21, page
switch 0.35 / 0.96 (Similarity 0.90 / 1.16), DICOM upload drawn 0.46 / 0.50; "loaded" (load rising 1.6 →
8.9 with the other jobs): cold first heatmap 2.69 / 3.52, image switch settled 0.45 / 1.40, page switch
0.74 / 2.60 (Similarity 2.39 / 3.34). Cold first heatmap before the background warm stage yielded to readers
(``ui/serve.py``), interleaved with after on the same machine, 8 pairs at load 4.9–7.1: 3.07 → 2.50 median.
Similarity page as the reports' SVG band charts and plain HTML tables instead of five plotly figures and a
dozen grids (``ui/evidence.py``), old and new servers alternately, 7 switches each at load 1.9–5.5: settled
1.55 / 1.82 → 0.70 / 0.93, Chromium CPU 1.95 → 0.91 s; this bench (``--repeats 3``) at load 4–5: Similarity
0.67 / 0.90. New session on a warm server with the script cache refilled after Streamlit clears it
(``ui.warm.refill_on_clear``), alternately, 8 each at load 3–4: drawn 3.79 / 4.35 → 3.10 / 3.64, the
server's run (first to last message) 0.57 → 0.38 median; ~1.4 s of either is the browser loading the app.
The Similarity page no longer loads the dataframe grid's JavaScript (~1.6 MB), so the next page with a grid
(Feature maps) paid it: Feature maps from Attention, first time in a tab 0.85–1.04 s, second time (after
Similarity) 0.37 s (load 0.5–0.7). The Attention page's idle preload now imports the grid's, metric's and
segmented control's chunks after plotly's (``ui.viewer.preload_charts``): first time 0.61–0.74 s (load
0.4–1.3); this bench (``--repeats 3``, load 1.0 → 2.0): page switch 0.33 / 0.75, Feature maps 0.75 / 0.81
(0.85–1.05 in two runs before), Similarity 0.44 / 0.50, every page ≤ 0.81 p95; a second run (load 0.9 → 1.2):
page switch 0.34 / 0.68, Feature maps 0.63 / 0.67, Similarity 0.47 / 0.49, Report & export 0.16 / 1.49 (its
first visit 1.64 s, of which the server's run 1.60 s: the server, not the browser).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.app.browser_harness import (
    ROOT,
    chromium_page,
    goto_page,
    streamlit_server,
)

QUIET_MS = 600  # a settled state must last this long (the time reported is when it began)
THINK_S = 2.0  # before each step the reader looks at the settled page this long (--think)
TIMEOUT_MS = 180_000
PAGE_TIMEOUT_MS = 30_000  # a warm page that has not settled by then is reported as FAILED
DICOM_SAMPLE = ROOT / "assets" / "demo" / "samples" / "cxr_nodule_dx_monochrome1.dcm"
# Methods whose maps differ on the demo images (Grad-CAM, XGrad-CAM and HiResCAM coincide on some of them,
# and an identical picture is served under the same URL: nothing new to draw).
METHOD_CYCLE = ["Grad-CAM++", "LayerCAM", "EigenCAM (class-agnostic)", "Grad-CAM"]
# (navigation title, text the page's h1 starts with)
PAGE_CYCLE = [
    ("Similarity", "Similarity"),
    ("Feature maps", "Early feature maps"),
    ("Compare models", "Compare models"),
    ("Consistency", "Consistency"),
    ("Dataset check", "Dataset check"),
    ("Report & export", "Report"),
    ("Attention", "Attention"),
]
PAGE_PREFIX = "  page switch → "  # one page's own settled times (held to the page switch target)
TARGETS = {  # seconds, idle machine; the loaded run is held to twice these
    "first heatmap, cold server": 2.5,
    "image switch, drawn": 0.5,
    "image switch, settled": 0.5,
    "page switch, settled": 1.0,
    "method switch, drawn": 0.5,
    "method switch, settled": 0.5,
    "DICOM upload, drawn": None,
    "DICOM upload, settled": None,
}

# Installed in every document before its scripts run: a 10 ms poll that records when the app became
# settled and when the overlay showed a new decoded picture, on the page's own clock. Every message from the
# server (Streamlit's websocket: deltas, script started/finished) is counted and timed: a run of 50 ms may
# never show "running" in the DOM, but it always sends messages, and the page is not settled before the last.
RECORDER_JS = """
(() => {
  const OVERLAY = '.st-key-overlay_main img';
  const decoded = new WeakMap();
  const rec = {mark: 0, actAt: null, sawRunning: false, settledSince: null, drawnAt: null, oldSrc: null,
               msgs: 0, firstMsg: null, lastMsg: null};
  window.__bench = rec;
  // the step starts when the page receives the user's action (pointer press, file chosen), not when the
  // driver began to look for the element
  for (const type of ['pointerdown', 'mousedown', 'click', 'change', 'input', 'keydown']) {
    window.addEventListener(type, () => { if (rec.actAt === null) rec.actAt = performance.now(); }, true);
  }
  const NativeWS = window.WebSocket;
  window.WebSocket = class extends NativeWS {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', () => {
        const now = performance.now();
        rec.msgs += 1; rec.lastMsg = now; if (rec.firstMsg === null) rec.firstMsg = now;
        rec.settledSince = null;
      });
    }
  };
  const isDecoded = (img) => {
    const src = img.currentSrc || img.src;
    if (!(img.complete && img.naturalWidth > 0)) return false;
    if (decoded.get(img) === src) return true;
    if (img.__benchDecoding !== src) {
      img.__benchDecoding = src;
      img.decode().then(() => decoded.set(img, src), () => {});
    }
    return false;
  };
  rec.begin = (oldSrc) => {
    rec.mark = performance.now(); rec.actAt = null; rec.sawRunning = false; rec.settledSince = null;
    rec.drawnAt = null;
    rec.oldSrc = oldSrc === undefined ? null : oldSrc; rec.msgs = 0; rec.firstMsg = null; rec.lastMsg = null;
    return rec.mark;
  };
  rec.overlaySrc = () => { const i = document.querySelector(OVERLAY); return i ? i.src : null; };
  rec.blockers = () => {
    const app = document.querySelector('[data-testid="stApp"]');
    const busy = Array.from(document.querySelectorAll(BUSY)).map(
      (e) => (e.getAttribute('data-testid') || e.tagName) + ' ' + (e.innerText || '').slice(0, 60));
    const pending = app ? Array.from(app.querySelectorAll('img')).filter((i) => !isDecoded(i)).map(
      (i) => (i.currentSrc || i.src).slice(-48)) : [];
    return {state: app ? app.getAttribute('data-test-script-state') : null, msgs: rec.msgs,
            sawRunning: rec.sawRunning, busy, pending};
  };
  const BUSY = '[data-stale="true"], [data-testid="stSpinner"], [data-testid="stSkeleton"], ' +
    '[data-testid="stAppSkeleton"], [data-testid="stStatusWidgetRunningIcon"], ' +
    '[data-testid="stStatusWidgetRunningManIcon"]';
  const tick = () => {
    const now = performance.now();
    const app = document.querySelector('[data-testid="stApp"]');
    const state = app ? app.getAttribute('data-test-script-state') : null;
    if (state === 'running') rec.sawRunning = true;
    const ov = document.querySelector(OVERLAY);
    if (rec.drawnAt === null && ov && ov.src !== rec.oldSrc && isDecoded(ov)) rec.drawnAt = now;
    let settled = (rec.sawRunning || rec.msgs > 0) && state === 'notRunning' && !document.querySelector(BUSY);
    if (settled && app) {
      for (const img of app.querySelectorAll('img')) { if (!isDecoded(img)) { settled = false; } }
    }
    if (!settled) rec.settledSince = null;
    else if (rec.settledSince === null) rec.settledSince = now;
  };
  setInterval(tick, 10);
})();
"""
# Settled for QUIET_MS: a snapshot of the record taken at that moment (a message arriving later resets it).
SETTLED_JS = f"""() => {{
  const r = window.__bench;
  if (!r || r.settledSince === null || performance.now() - r.settledSince < {QUIET_MS}) return false;
  return {{m: r.actAt === null ? r.mark : r.actAt, d: r.drawnAt, s: r.settledSince, f: r.firstMsg,
           l: r.lastMsg}};
}}"""
DRAWN_JS = "() => window.__bench && window.__bench.drawnAt !== null"


@dataclass
class Timing:
    drawn: float | None  # s from the interaction to the new overlay decoded (None: no overlay involved)
    settled: float  # s from the interaction to settled
    first_msg: float | None = None  # s to the server's first message (its answer began; diagnostic)
    last_msg: float | None = None  # s to the server's last message (the run's end; diagnostic)


class NotSettled(Exception):
    """The page did not settle in time; the message says what held it (script state, stale or busy elements,
    pictures not decoded)."""


@dataclass
class Results:
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def failed(self, name: str, why: object, timeout_ms: float = TIMEOUT_MS) -> None:
        """A measurement that never reached its state in time: listed with what held it, never averaged in."""
        self.notes.append(f"FAILED: {name} did not settle within {timeout_ms / 1000:.0f} s: {why}")
        print(f"  FAILED: {name}: {why}", file=sys.stderr, flush=True)

    def add(self, name: str, value: float | None) -> None:
        if value is not None:
            self.samples.setdefault(name, []).append(value)
            print(f"  {name}: {value:.2f} s", file=sys.stderr, flush=True)

    def timing(self, name: str, t: Timing) -> None:
        """A step's drawn and settled times, and where the time went (server's first / last message)."""
        self.add(f"{name}, drawn", t.drawn)
        self.add(f"{name}, settled", t.settled)
        self.add(f"  ({name}: server's first message)", t.first_msg)
        self.add(f"  ({name}: server's last message)", t.last_msg)


def _wait_settled(page: Any, timeout_ms: float) -> dict[str, Any]:
    """Wait for a settled page; returns the recorder's times (mark or action, drawn, settled, messages)."""
    try:
        handle = page.wait_for_function(SETTLED_JS, timeout=timeout_ms, polling=50)
    except PlaywrightTimeout as exc:
        raise NotSettled(page.evaluate("() => window.__bench.blockers()")) from exc
    return dict(handle.json_value())


def _measure(page: Any, act: Any, *, watch_overlay: bool, timeout_ms: float = TIMEOUT_MS) -> Timing:
    """Time ``act`` (one click: what a user does) to the new overlay decoded and to the page settled."""
    time.sleep(THINK_S)  # what the page does meanwhile (preloading) is part of what a reader gets
    old = page.evaluate("() => window.__bench.overlaySrc()") if watch_overlay else "__none__"
    page.evaluate("(old) => window.__bench.begin(old)", old)
    act()
    # settled implies every picture decoded, the overlay too; drawnAt is set only if its picture changed
    rec = _wait_settled(page, timeout_ms)

    def since(key: str) -> float | None:
        return None if rec[key] is None else (rec[key] - rec["m"]) / 1000

    return Timing(
        drawn=since("d") if watch_overlay else None,
        settled=(rec["s"] - rec["m"]) / 1000,
        first_msg=since("f"),
        last_msg=since("l"),
    )


@contextlib.contextmanager
def _browser() -> Iterator[Any]:
    with chromium_page() as page:
        page.context.add_init_script(RECORDER_JS)
        yield page


def _open(page: Any, url: str) -> Timing:
    """Navigate and wait for the first overlay and a settled page; times from navigation start."""
    page.goto(url)
    page.wait_for_function(DRAWN_JS, timeout=TIMEOUT_MS, polling=50)
    rec = _wait_settled(page, TIMEOUT_MS)

    def at(key: str) -> float | None:  # navigation start is the page clock's 0
        return None if rec[key] is None else rec[key] / 1000

    return Timing(drawn=at("d"), settled=rec["s"] / 1000, first_msg=at("f"), last_msg=at("l"))


def _fresh_dicom(folder: Path, i: int) -> Path:
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(DICOM_SAMPLE)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = folder / f"bench_{i}.dcm"
    ds.save_as(path)
    return path


def run_scenario(launcher: str, repeats: int, res: Results) -> None:
    # 1. cold server: a new server per repeat, one browser; the rest of the measures on the last server.
    for r in range(repeats):
        t_spawn = time.perf_counter()
        with streamlit_server(script=launcher, timeout=300) as url:
            ready = time.perf_counter() - t_spawn
            res.add("server start → health answers (warming)", ready)
            with _browser() as page:
                t0 = time.perf_counter()
                try:
                    first = _open(page, url)
                except NotSettled as exc:
                    res.failed("first heatmap, cold server", exc)
                    continue
                res.add("first heatmap, cold server", first.drawn)
                res.add("first page settled, cold server", first.settled)
                res.add("  (first heatmap: server's first message)", first.first_msg)
                res.add("  (first heatmap: server's last message)", first.last_msg)
                res.add("(python clock) first heatmap, cold server", time.perf_counter() - t0)
            if r < repeats - 1:
                continue
            waited = _wait_warm(url)
            if waited is not None:
                res.notes.append(f"background warm of the other views: {waited}")
            _interactions(url, repeats, res)


def _wait_warm(url: str) -> str | None:
    """With the warm launcher, wait until its background stage is done (the interactions below are measured
    on a fully warm server; the first heatmaps above were measured while it ran)."""
    import json
    import urllib.request

    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/warm", timeout=5) as r:
                status = json.load(r)
        except OSError:
            return None  # not the warm launcher
        if status.get("done"):
            rest = status.get("rest") or {}
            return f"{rest.get('wall_s', 0.0):.1f} s, steps {rest.get('steps')}, failed {rest.get('failed')}"
        time.sleep(1.0)
    raise TimeoutError("the warm launcher's background stage did not finish in 900 s")


def _interactions(url: str, repeats: int, res: Results) -> None:
    # 2. a new session on the warm server
    for _ in range(repeats):
        with _browser() as page:
            res.add("first heatmap, new session on a warm server", _open(page, url).drawn)
    with _browser() as page:
        _open(page, url)
        # 3. image switch: images never shown in this server (index 1, 2, ...)
        for i in range(1, repeats + 1):
            try:
                option = _open_choices(page, "Image to inspect").nth(i)
                res.timing("image switch", _measure(page, option.click, watch_overlay=True))
            except NotSettled as exc:
                res.failed("image switch", exc)
                break
        # 4. method switch
        for i in range(max(repeats, len(METHOD_CYCLE))):
            label = METHOD_CYCLE[i % len(METHOD_CYCLE)]
            try:
                _open_choices(page, "Method")
                option = page.get_by_role("option", name=label, exact=True).first
                t = _measure(page, option.click, watch_overlay=True)
            except NotSettled as exc:
                res.failed("method switch", exc)
                break
            if t.drawn is None:
                res.notes.append(
                    f"method switch to {label}: the same picture as before (not counted as drawn)"
                )
            res.timing("method switch", t)
    # 5. page switch: every page once per session, `repeats` sessions
    for _ in range(repeats):
        with _browser() as page:
            _open(page, url)
            for title, heading in PAGE_CYCLE:
                try:
                    t = _measure(
                        page,
                        lambda title=title: goto_page(page, title),
                        watch_overlay=False,
                        timeout_ms=PAGE_TIMEOUT_MS,
                    )
                except NotSettled as exc:
                    res.failed(f"page switch → {title}", exc, PAGE_TIMEOUT_MS)
                    break  # the session's state is unknown: the next session starts over
                h1 = page.get_by_role("heading", level=1).first.inner_text(timeout=TIMEOUT_MS)
                if not h1.startswith(heading):
                    raise RuntimeError(f"clicked {title!r} but the page's title is {h1!r}")
                res.timing("page switch", t)
                res.add(f"{PAGE_PREFIX}{title}", t.settled)
    # 6. DICOM upload, a file no cache knows, in a new session each time
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            path = _fresh_dicom(Path(tmp), i)
            with _browser() as page:
                _open(page, url)
                page.get_by_text("Upload images", exact=True).click()
                dropzone = page.locator('[data-testid="stFileUploaderDropzoneInput"]').last
                dropzone.wait_for(state="attached", timeout=TIMEOUT_MS)
                _wait_settled(page, TIMEOUT_MS)
                try:
                    t = _measure(
                        page,
                        lambda d=dropzone, path=path: d.set_input_files(str(path)),
                        watch_overlay=True,
                    )
                except NotSettled as exc:
                    res.failed("DICOM upload", exc)
                    continue
                page.get_by_text(path.name).first.wait_for(timeout=TIMEOUT_MS)
                res.timing("DICOM upload", t)


def _open_choices(page: Any, label: str) -> Any:
    """Open the selectbox ``label`` and return its options (opening the list is not part of the step: the
    step starts with the click on a choice, as a user's wait does)."""
    page.get_by_role("combobox", name=label, exact=True).first.click()
    options = page.get_by_role("option")
    options.first.wait_for(timeout=TIMEOUT_MS)
    return options


LOAD_LOOP = (
    "import numpy as np\n"
    "a = np.random.default_rng(0).random((512, 512))\n"
    "while True:\n"
    "    a = a @ a\n"
    "    a /= np.abs(a).max()\n"
)


@contextlib.contextmanager
def background_load(procs: int) -> Iterator[str]:
    """``procs`` processes, each a single-threaded loop of 512×512 float64 matrix products."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = [subprocess.Popen([sys.executable, "-c", LOAD_LOOP], env=env) for _ in range(procs)]
    try:
        time.sleep(2.0)
        yield f"{procs} process(es) of a single-threaded 512×512 float64 numpy matmul loop"
    finally:
        for p in started:
            p.terminate()
        for p in started:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def report(res: Results, *, scenario: str, factor: float, load_before: str, load_after: str) -> None:
    print(f"\n## {scenario}")
    print(f"uptime before: {load_before}")
    print(f"uptime after : {load_after}")
    print(f"{'metric':<46} {'n':>3} {'median s':>9} {'p95 s':>7} {'target s':>9}  ok")
    for name, values in res.samples.items():
        v = np.asarray(values)
        target = TARGETS.get(name, TARGETS["page switch, settled"] if name.startswith(PAGE_PREFIX) else None)
        med, p95 = float(np.median(v)), float(np.percentile(v, 95))
        limit = None if target is None else target * factor
        ok = "" if limit is None else ("yes" if p95 <= limit else ("median" if med <= limit else "NO"))
        shown = "" if limit is None else f"≤ {limit:.2f}"
        print(f"{name:<46} {len(v):>3} {med:>9.2f} {p95:>7.2f} {shown:>9}  {ok}")
    for note in res.notes:
        print(note)


def main() -> None:
    global THINK_S
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop servers and load processes on a kill
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load-procs", type=int, default=2, help="background processes of the loaded run")
    parser.add_argument("--only", choices=["idle", "loaded"], default=None)
    parser.add_argument("--launcher", default="ui/serve.py", help="script given to `streamlit run`")
    parser.add_argument(
        "--think", type=float, default=THINK_S, help="seconds between a settled page and the next action"
    )
    args = parser.parse_args()
    THINK_S = args.think
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    print(
        f"dashboard latency, headless Chromium, `streamlit run {args.launcher}`, {args.repeats} repeats, "
        f"{args.think:g} s between a settled page and the next action"
    )
    if args.only in (None, "idle"):
        res, before = Results(), _uptime()
        run_scenario(args.launcher, args.repeats, res)
        report(res, scenario="idle (no background job)", factor=1.0, load_before=before, load_after=_uptime())
    if args.only in (None, "loaded"):
        with background_load(args.load_procs) as what:
            res, before = Results(), _uptime()
            run_scenario(args.launcher, args.repeats, res)
            after = _uptime()
        report(res, scenario=f"loaded: {what}", factor=2.0, load_before=before, load_after=after)


if __name__ == "__main__":
    main()
