"""Launch the dashboard warm: the server answers its first browser with the demo already loaded.

    .venv/bin/python -m streamlit run serve.py      # the README's command (flags as for any `streamlit run`)
    .venv/bin/python serve.py                       # the same, without the CLI

This wraps ``dashboard.py`` in an ``st.App`` whose lifespan hook runs after Streamlit's runtime has started
and before the server accepts a connection (Streamlit's documented place to preload cached resources). The
hook imports what every page imports, loads the demo models and fills the caches of the views a new
session opens (``ui/warm.py``); what it cannot warm stays cold and is computed on first use, as with
``streamlit run dashboard.py``, which still works and starts at once. ``VERIFICATION_WARM=first`` warms only
the first Attention view (a shorter start); ``VERIFICATION_WARM=0`` skips warming.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # `ui` and `verification` import as they do for `streamlit run dashboard.py`
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("serve")


@asynccontextmanager
async def lifespan(app: st.App) -> AsyncIterator[None]:
    mode = os.environ.get("VERIFICATION_WARM", "full").strip().lower()
    if mode not in ("0", "off", "no", "false"):
        import anyio

        from ui.warm import warm

        t0 = time.perf_counter()
        report = await anyio.to_thread.run_sync(lambda: warm(full=mode != "first"))
        print(f"  {report.summary()} (wall {time.perf_counter() - t0:.1f} s)", flush=True)
    yield


app = st.App(ROOT / "dashboard.py", lifespan=lifespan)

if __name__ == "__main__":
    app.run()
