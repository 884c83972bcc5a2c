"""The event-loop monitor: lag, and the route of a request that blocks the loop.

A handler that calls ``time.sleep(0.3)`` inside ``async def`` holds the loop for
300 ms, twice the default detection bound (100 ms threshold + one 50 ms probe
interval); a handler that does not block is never named.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from polyframe_testing.peers import asgi_client
from service_kit.fastapi import install
from service_kit.loopmonitor import NO_REQUEST, LoopMonitor
from service_kit.telemetry import Telemetry

BLOCK_SECONDS = 0.3
#: The monitor's defaults, as install() starts it.
PROBE_INTERVAL = 0.05
#: How long a test waits for the watchdog thread to report (never reached when it works).
PATIENCE = 15.0

MakeTelemetry = Callable[..., Telemetry]


def build_app(telemetry: Telemetry) -> FastAPI:
    app = FastAPI()
    install(app, telemetry=telemetry)

    @app.get("/block/{item_id}")
    async def block(item_id: int) -> dict[str, int]:
        time.sleep(BLOCK_SECONDS)  # noqa: ASYNC251 - the behaviour under test
        return {"id": item_id}

    @app.get("/fine")
    async def fine() -> dict[str, bool]:
        await asyncio.sleep(BLOCK_SECONDS)  # as long, but the loop stays free
        return {"ok": True}

    return app


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """The test session's heap, collected and frozen: a full collection of it, which takes
    long enough late in a run to hold the loop by itself, cannot then land in a request
    under test (and merge with its block, or be blamed on a handler that awaits)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.fixture
async def served(
    frozen_heap: None, make_telemetry: MakeTelemetry
) -> AsyncIterator[tuple[Telemetry, httpx.AsyncClient]]:
    telemetry = make_telemetry("fastapi")
    app = build_app(telemetry)
    async with asgi_client(app) as client:
        yield telemetry, client


async def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the watchdog"
        await asyncio.sleep(0.01)


def blocked_log(caplog: pytest.LogCaptureFixture, route: str) -> list[logging.LogRecord]:
    """The monitor's warnings naming ``route`` (a busy test machine may stall the loop
    outside any request too: those are named ``__no_request__``)."""
    return [
        r
        for r in caplog.records
        if r.name == "service_kit.loopmonitor" and getattr(r, "route", None) == route
    ]


async def test_a_blocking_handler_is_counted_under_its_route(
    served: tuple[Telemetry, httpx.AsyncClient],
    samples: Any,
    spans: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    telemetry, client = served
    caplog.set_level(logging.WARNING, logger="service_kit.loopmonitor")
    service = {"service_name": telemetry.service}
    spans.clear()

    response = await client.get("/block/7")
    assert response.json() == {"id": 7}
    await eventually(
        lambda: samples.value("polyframe_event_loop_blocked_seconds_total", **service) > 0
    )
    route = {**service, "http_route": "/block/{item_id}"}
    assert samples.value("polyframe_event_loop_blocks_total", **route) == 1
    # The block's length is added when the loop runs again: from when the probe was due.
    blocked = samples.value("polyframe_event_loop_blocked_seconds_total", **route)
    assert blocked >= BLOCK_SECONDS - PROBE_INTERVAL

    (server,) = [s for s in spans.get_finished_spans() if s.attributes.get("http.route")]
    assert server.attributes["http.route"] == "/block/{item_id}"
    assert server.attributes["event_loop.blocked"] is True
    (event,) = [e for e in server.events if e.name == "event_loop.blocked"]
    assert event.attributes["threshold_ms"] == 100
    assert event.attributes["blocked_ms_so_far"] >= 150

    (warning,) = blocked_log(caplog, "/block/{item_id}")
    assert warning.trace_id == format(server.context.trace_id, "032x")  # type: ignore[attr-defined]


async def test_a_handler_that_awaits_is_not_counted(
    served: tuple[Telemetry, httpx.AsyncClient],
    samples: Any,
    spans: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    telemetry, client = served
    caplog.set_level(logging.WARNING, logger="service_kit.loopmonitor")
    service = {"service_name": telemetry.service}
    spans.clear()
    lag_before = samples.value("polyframe_event_loop_lag_seconds_count", **service)

    assert (await client.get("/fine")).json() == {"ok": True}
    # The probe ran meanwhile (every 50 ms), each time on time.
    assert samples.value("polyframe_event_loop_lag_seconds_count", **service) > lag_before
    assert samples.series("polyframe_event_loop_blocks_total", **service, http_route="/fine") == []
    (server,) = [s for s in spans.get_finished_spans() if s.attributes.get("http.route")]
    assert "event_loop.blocked" not in server.attributes
    assert [e.name for e in server.events if e.name == "event_loop.blocked"] == []
    assert blocked_log(caplog, "/fine") == []


async def test_lag_histogram_shows_the_block(
    served: tuple[Telemetry, httpx.AsyncClient], samples: Any
) -> None:
    telemetry, client = served
    service = {"service_name": telemetry.service}

    def late_probes() -> float:  # probes that ran more than 100 ms late
        count = samples.value("polyframe_event_loop_lag_seconds_count", **service)
        return count - samples.value("polyframe_event_loop_lag_seconds_bucket", **service, le="0.1")

    before = late_probes()
    await client.get("/block/1")
    await eventually(lambda: late_probes() > before)


async def test_a_block_outside_any_request(make_telemetry: MakeTelemetry, samples: Any) -> None:
    telemetry = make_telemetry("fastapi")
    monitor = LoopMonitor(telemetry, interval=0.02, threshold=0.05)
    monitor.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # noqa: ASYNC251 - the behaviour under test
        await eventually(
            lambda: (
                samples.value(
                    "polyframe_event_loop_blocked_seconds_total", service_name=telemetry.service
                )
                > 0
            )
        )
    finally:
        await monitor.stop()
    assert samples.series("polyframe_event_loop_blocks_total", service_name=telemetry.service) == [
        {"service_name": telemetry.service, "framework": "fastapi", "http_route": NO_REQUEST}
    ]
    assert monitor._watchdog is not None
    assert not monitor._watchdog.is_alive()
    assert monitor._probe is not None
    assert monitor._probe.done()


async def test_requests_are_forgotten_when_they_finish(
    served: tuple[Telemetry, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    _telemetry, client = served
    seen: list[int] = []
    original = LoopMonitor.request_started

    def spy(self: LoopMonitor, state: Any, scope: Any) -> None:
        original(self, state, scope)
        seen.append(len(self.requests))
        monitors.append(self)

    monitors: list[LoopMonitor] = []
    monkeypatch.setattr(LoopMonitor, "request_started", spy)
    await asyncio.gather(client.get("/fine"), client.get("/fine"))
    assert sorted(seen) == [1, 2]
    assert monitors[0].requests == {}


def watchdogs() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "polyframe-loop-watchdog")


async def test_lifespan_runs_the_app_s_own_and_the_monitor(make_telemetry: MakeTelemetry) -> None:
    """install() wraps the app's lifespan: the monitor starts before it and stops after."""
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append(f"start with {watchdogs()} watchdog(s)")
        app.state.ready = True
        yield
        events.append("stop")

    app = FastAPI(lifespan=lifespan)
    install(app, telemetry=make_telemetry("fastapi"))

    @app.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": app.state.ready}

    before = watchdogs()
    async with asgi_client(app) as client:
        assert (await client.get("/ready")).json() == {"ready": True}
        assert watchdogs() == before + 1
    assert events == [f"start with {before + 1} watchdog(s)", "stop"]
    assert watchdogs() == before


async def test_disabled_telemetry_starts_no_monitor(make_telemetry: MakeTelemetry) -> None:
    app = FastAPI()
    install(app, telemetry=make_telemetry("fastapi", enabled=False))
    before = watchdogs()
    async with LifespanManager(app):
        assert watchdogs() == before
