"""Launch the dashboard warm: the server answers its first browser with the demo already loaded.

    .venv/bin/python -m streamlit run ui/serve.py   # the README's command (flags as for any `streamlit run`)
    .venv/bin/python ui/serve.py                    # the same, without the CLI

This wraps ``dashboard.py`` in an ``st.App`` whose lifespan hook runs after Streamlit's runtime has started
and before the server accepts a connection (Streamlit's documented place to preload cached resources). The
hook imports what every page imports, loads the demo models and fills the caches of the Attention page as a
new session opens it (``ui.warm.warm_first``); the views a session reaches next (the set's verdict, the
other images, feature maps, the checkpoint series) are then warmed in a background thread while the server
already serves (``ui.warm.warm_rest``). ``GET /api/warm`` says how far that got. Whatever is not warm is
computed on first use, as with ``streamlit run dashboard.py``, which still works and starts at once.

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
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `ui` and `verification` import as they do for `streamlit run dashboard.py`
    sys.path.insert(0, str(ROOT))

MODES = ("full", "blocking", "first", "0")
STATUS: dict[str, Any] = {"mode": None, "first": None, "rest": None, "done": False}


def _mode() -> str:
    mode = os.environ.get("VERIFICATION_WARM", "full").strip().lower()
    return mode if mode in MODES else "full"


def _summary(report: Any, t0: float) -> dict[str, Any]:
    return {
        "steps": {k: round(v, 3) for k, v in report.steps.items()},
        "failed": report.failed,
        "wall_s": round(time.perf_counter() - t0, 3),
    }


def _rest(warmed: Any) -> None:
    from ui.warm import WarmReport, freeze_heap, warm_rest

    t0, report = time.perf_counter(), WarmReport()
    try:
        warm_rest(warmed, report)
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

    from ui.warm import WarmReport, freeze_heap, warm_first

    t0, report = time.perf_counter(), WarmReport()
    warmed = await anyio.to_thread.run_sync(lambda: warm_first(report))
    freeze_heap()
    STATUS["first"] = _summary(report, t0)
    print(f"  warm (before serving): {report.summary()}", flush=True)
    if warmed is None or mode == "first":
        STATUS["done"] = True
    elif mode == "blocking":
        await anyio.to_thread.run_sync(lambda: _rest(warmed))
    else:
        threading.Thread(target=_rest, args=(warmed,), name="warm-rest", daemon=True).start()
    yield


async def warm_status(request: Request) -> JSONResponse:
    """How far the warm start got: the steps of each stage with their seconds, and whether it is done."""
    return JSONResponse(STATUS)


app = st.App(ROOT / "dashboard.py", lifespan=lifespan, routes=[Route("/api/warm", warm_status)])

if __name__ == "__main__":
    app.run()
