"""The users service's observability: its fault drill and what its metrics say.

``POST /api/users/_drills/block-loop`` (``USERS_DRILLS=true``) blocks the event loop
from inside an async handler; the loop monitor must name that route. The app runs
with its lifespan (the monitor starts there), in process.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from polyframe_testing.peers import asgi_client
from polyframe_testing.telemetry import finished_spans, metric_value
from users_fastapi.main import create_app
from users_fastapi.settings import UsersSettings

DRILL = "/api/users/_drills/block-loop"
SERVICE = {"service_name": "users-fastapi", "framework": "fastapi"}
#: How long a test waits for the loop monitor's thread (never reached when it works).
PATIENCE = 15.0


def value(name: str, **labels: str) -> float:
    """The sum of the samples ``name`` of this service that carry ``labels``."""
    return metric_value(name, **SERVICE, **labels)


async def read(name: str, **labels: str) -> float:
    """``value``, read on a thread: collecting the whole registry takes 100-200 ms late in
    a long session, and done on the loop it is itself a block outside any request (CI saw
    one merge with the drill's and name it ``__no_request__``)."""
    return await asyncio.to_thread(value, name, **labels)


@asynccontextmanager
async def running(settings: UsersSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan run (the loop monitor starts there), a client to it."""
    async with asgi_client(create_app(settings)) as client:
        yield client


async def loop_settled() -> None:
    """Let the loop probe run twice: whatever held the loop before (the app's start-up,
    counted as a block outside any request) is over, and the next block is a new one."""
    probes = await read("polyframe_event_loop_lag_seconds_count")
    deadline = time.monotonic() + PATIENCE
    while await read("polyframe_event_loop_lag_seconds_count") < probes + 2:
        assert time.monotonic() < deadline, "the loop probe does not run"
        await asyncio.sleep(0.01)


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """This long test session's heap, collected and frozen: a full collection of it, which
    takes long enough late in a run to hold the loop by itself, cannot then land in the
    request under test and merge with the block it causes (a block is named once, by
    the task the monitor finds holding the loop)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.fixture
async def drills(frozen_heap: None, settings: UsersSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(settings.model_copy(update={"drills": True})) as client:
        await loop_settled()
        yield client


@pytest.fixture
def spans(api: Any) -> InMemorySpanExporter:
    """Finished spans, from the tracer provider the app set up (once per process)."""
    return finished_spans()


async def test_block_loop_drill_is_counted_under_its_route(
    drills: httpx.AsyncClient,
) -> None:
    # A block is named once, by the request the watchdog finds holding the loop. On a
    # starved machine the whole process can stall for longer than the detection bound just
    # before the drill starts; the stall is then named ``__no_request__`` and the drill
    # joins it. The drill is tried again then (three times at most): a monitor that names
    # no request fails all three.
    blocks: dict[str, float] = {}
    for _attempt in range(3):
        await loop_settled()
        before = await read("polyframe_event_loop_blocks_total", http_route=DRILL)
        # Well past the monitor's 150 ms detection bound, so that its watchdog thread gets
        # to look even on a busy machine.
        response = await drills.post(DRILL, params={"ms": 1000})
        assert response.status_code == 200
        assert response.json() == {"blocked_ms": 1000}
        await loop_settled()  # the probe ran again: the block is over and was judged
        blocks = {
            route: await read("polyframe_event_loop_blocks_total", http_route=route)
            for route in (DRILL, "__no_request__")
        }
        if blocks[DRILL] >= before + 1:
            break
    else:
        raise AssertionError(f"the drill was never named: {blocks}")
    count = await read(
        "http_server_request_duration_seconds_count",
        http_route=DRILL,
        http_request_method="POST",
        http_response_status_code="200",
    )
    assert count >= 1


@pytest.mark.parametrize("ms", ["0", "10001", "-5", "abc"])
async def test_block_loop_drill_refuses_out_of_range_values(
    drills: httpx.AsyncClient, ms: str
) -> None:
    response = await drills.post(DRILL, params={"ms": ms})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert [(error["field"], error["location"]) for error in body["errors"]] == [("ms", "query")]


async def test_slow_drill_answers_and_refuses_bad_values(drills: httpx.AsyncClient) -> None:
    slow, quick = await asyncio.gather(
        drills.get("/api/users/_drills/slow", params={"ms": 300}),
        drills.get("/api/users/_drills/slow", params={"ms": 1}),
    )
    assert slow.status_code == quick.status_code == 200
    assert slow.json() == {"slept_ms": 300}
    assert quick.json() == {"slept_ms": 1}
    refused = await drills.get("/api/users/_drills/slow", params={"ms": 0})
    assert refused.status_code == 422


async def test_drills_are_absent_unless_enabled(api: Any) -> None:
    response = await api.client.post(DRILL, params={"ms": 1})
    body = api.problem(response, 404)
    assert body["instance"] == DRILL


def test_drills_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, signing_key_pem: str
) -> None:
    monkeypatch.setenv("USERS_JWT_PRIVATE_KEY", signing_key_pem)
    monkeypatch.setenv("USERS_DRILLS", "true")
    with pytest.raises(ValueError, match="USERS_DRILLS must stay off in production"):
        UsersSettings()
    monkeypatch.setenv("USERS_ENVIRONMENT", "development")
    assert UsersSettings().drills is True


async def test_database_work_counted_per_request(api: Any, spans: InMemorySpanExporter) -> None:
    """The async engine's statements are traced and counted for the request that ran them."""
    route = {"http_route": "/api/users/register"}
    requests = value("polyframe_db_queries_per_request_count", **route)
    queries = value("polyframe_db_queries_per_request_sum", **route)
    await api.register()
    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.attributes.get("http.route") == route["http_route"]]
    statements = [
        s
        for s in finished
        if s.kind is SpanKind.CLIENT
        and s.attributes.get("db.system.name")
        and s.context.trace_id == server.context.trace_id
    ]
    assert {s.name for s in statements} <= {"INSERT sqlite", "INSERT postgresql"}
    assert len(statements) >= 2  # the user, and its audit event in the outbox
    assert value("polyframe_db_queries_per_request_count", **route) == requests + 1
    assert value("polyframe_db_queries_per_request_sum", **route) == queries + len(statements)
    assert value("polyframe_db_repeated_queries_total", **route) == 0


async def test_metrics_route_answers(api: Any) -> None:
    await api.register()
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'http_route="/api/users/register"' in response.text
    assert 'service_name="users-fastapi"' in response.text
