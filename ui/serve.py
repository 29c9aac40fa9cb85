"""Launch the dashboard warm: the server answers its first browser with the demo already loaded.

    .venv/bin/python -m streamlit run ui/serve.py   # the README's command (flags as for any `streamlit run`)
    .venv/bin/python ui/serve.py                    # the same, without the CLI

This wraps ``dashboard.py`` in an ``st.App`` whose lifespan hook runs after Streamlit's runtime has started
and before the server accepts a connection (Streamlit's documented place to preload cached resources). The
hook imports what every page imports, loads the demo models and fills the caches of the Attention page as a
new session opens it (``ui.warm.warm_first``); the views a session reaches next (the set's verdict, the other
images, feature maps, the checkpoint series) are then warmed in a background thread while the server already
serves (``ui.warm.warm_rest``), in the gaps between what readers do: it starts once nothing has come for
``START_QUIET_S`` (the reader who opened the page the server just announced gets it first) and waits before
each step until no script run is in progress and no request came for ``ui.warm.QUIET_S`` (:class:`Readers`
notes every request but the probes). ``GET /api/warm`` says how far that got. Whatever is not warm is computed
on first use, as with ``streamlit run dashboard.py``, which still works and starts at once.

``VERIFICATION_WARM``: ``full`` (default, as above), ``blocking`` (both stages before serving), ``first``
(the first stage only), ``0`` (no warming).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import streamlit as st
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `ui` and `verification` import as they do for `streamlit run dashboard.py`
    sys.path.insert(0, str(ROOT))

MODES = ("full", "blocking", "first", "0")
START_QUIET_S = 5.0  # the background stage starts after this long without a request or a script run
PROBES = ("/_stcore/health", "/_stcore/script-health-check", "/api/warm")  # not a reader
STATUS: dict[str, Any] = {"mode": None, "first": None, "rest": None, "done": False}


def _mode() -> str:
    mode = os.environ.get("VERIFICATION_WARM", "full").strip().lower()
    return mode if mode in MODES else "full"


def _summary(report: Any, t0: float) -> dict[str, Any]:
    return {
        "steps": {k: round(v, 3) for k, v in report.steps.items()},
        "failed": report.failed,
        "waited_s": round(report.waited, 3),
        "wall_s": round(time.perf_counter() - t0, 3),
    }


class Readers:
    """ASGI middleware: every request (page, scripts, pictures) and websocket message but the probes marks the
    server busy for the background warm stage (``ui.warm.ACTIVITY``)."""

    def __init__(self, app: ASGIApp) -> None:
        from ui.warm import ACTIVITY

        self.app, self.activity = app, ACTIVITY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and not str(scope.get("path", "")).endswith(PROBES):
            self.activity.touch()
        elif kind == "websocket":
            self.activity.touch()
            inner = receive

            async def receive() -> Message:
                message = await inner()
                self.activity.touch()
                return message

        await self.app(scope, receive, send)


def _rest(warmed: Any, wait: bool) -> None:
    from ui.warm import ACTIVITY, MAX_WAIT_S, WarmReport, freeze_heap, wait_for_readers, warm_rest

    t0, report = time.perf_counter(), WarmReport()
    try:
        if wait:
            report.waited += ACTIVITY.wait_idle(START_QUIET_S, max_wait_s=MAX_WAIT_S)
        warm_rest(warmed, report, wait_for_readers if wait else None)
        freeze_heap()
    finally:
        STATUS["rest"] = _summary(report, t0)
        STATUS["done"] = True
        print(f"  warm (background): {report.summary()}", flush=True)


@asynccontextmanager
async def lifespan(app: st.App) -> AsyncIterator[None]:
    mode = STATUS["mode"] = _mode()
    if mode == "0":
        STATUS["done"] = True
        yield
        return
    import anyio

    from ui.warm import ACTIVITY, WarmReport, freeze_heap, warm_first

    t0, report = time.perf_counter(), WarmReport()
    warmed = await anyio.to_thread.run_sync(lambda: warm_first(report))
    freeze_heap()
    STATUS["first"] = _summary(report, t0)
    print(f"  warm (before serving): {report.summary()}", flush=True)
    if warmed is None or mode == "first":
        STATUS["done"] = True
    elif mode == "blocking":
        await anyio.to_thread.run_sync(lambda: _rest(warmed, False))
    else:
        ACTIVITY.touch()  # the quiet before the background stage starts now, when the server starts serving
        threading.Thread(target=_rest, args=(warmed, True), name="warm-rest", daemon=True).start()
    yield


async def warm_status(request: Request) -> JSONResponse:
    """How far the warm start got: the steps of each stage with their seconds, and whether it is done."""
    return JSONResponse(STATUS)


app = st.App(
    ROOT / "dashboard.py",
    lifespan=lifespan,
    routes=[Route("/api/warm", warm_status)],
    middleware=[Middleware(Readers)],
)

if __name__ == "__main__":
    app.run()
