"""The background warm stage yields to readers: ``ui.warm.Activity`` (script runs in progress, the last
request) and ``ui.serve.Readers`` (the middleware that notes requests). Small waits, no server."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from ui import warm

QUIET = 0.2


def test_wait_idle_waits_for_a_run_in_progress_then_for_the_quiet() -> None:
    activity = warm.Activity()
    started, release = threading.Event(), threading.Event()

    def reader() -> None:
        with activity.run():
            started.set()
            release.wait(5)

    thread = threading.Thread(target=reader)
    thread.start()
    started.wait(5)
    threading.Timer(0.5, release.set).start()
    t0 = time.monotonic()
    waited = activity.wait_idle(QUIET, max_wait_s=10)
    ended = time.monotonic() - t0
    thread.join(5)
    # the run held it for 0.5 s, then the quiet after the run's end
    assert ended >= 0.5 + QUIET - 0.02, ended
    assert ended < 3, ended
    assert waited == pytest.approx(ended, abs=0.05)


def test_a_request_restarts_the_quiet_and_max_wait_bounds_the_wait() -> None:
    activity = warm.Activity()
    time.sleep(QUIET)  # quiet already
    assert activity.wait_idle(QUIET, max_wait_s=10) < 0.05
    activity.touch()
    assert activity.wait_idle(QUIET, max_wait_s=10) >= QUIET - 0.02
    with activity.run():  # a run that never ends in time: the wait gives up at max_wait_s
        t0 = time.monotonic()
        activity.wait_idle(QUIET, max_wait_s=0.3)
        assert 0.28 <= time.monotonic() - t0 < 1.0


def test_a_step_waits_before_it_starts_and_the_wait_is_not_its_time() -> None:
    report = warm.WarmReport()
    with warm._step(report, "one", lambda: 0.7):
        pass
    assert report.waited == pytest.approx(0.7)
    assert report.steps["one"] < 0.1
    assert "after waiting 0.7 s for readers" in report.summary()


def _call(mw: Any, scope: dict[str, Any], incoming: list[dict[str, Any]]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for _ in range(len(incoming)):
            await receive()

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        return None

    mw.app = app
    asyncio.run(mw(scope, receive, send))


def test_readers_note_pages_pictures_and_websocket_messages_but_not_the_probes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ui import serve

    activity = warm.Activity()
    touches: list[str] = []
    monkeypatch.setattr(activity, "touch", lambda: touches.append("t"))
    mw = serve.Readers(lambda *a: None)  # type: ignore[arg-type]
    mw.activity = activity
    for path in ("/_stcore/health", "/api/warm", "/_stcore/script-health-check"):
        _call(mw, {"type": "http", "path": path}, [])
    assert touches == []
    _call(mw, {"type": "http", "path": "/media/abc.jpg"}, [])
    _call(mw, {"type": "http", "path": "/static/js/index.js"}, [])
    assert len(touches) == 2
    _call(mw, {"type": "websocket", "path": "/_stcore/stream"}, [{"type": "websocket.receive"}] * 3)
    assert len(touches) == 2 + 1 + 3  # the connection, then each message
