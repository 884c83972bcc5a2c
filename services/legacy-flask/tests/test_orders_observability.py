"""The orders service's observability: its fault drill and what its metrics say.

``POST /api/orders/_drills/hold-thread`` (``ORDERS_DRILLS=true``) keeps a worker thread
busy; under gunicorn a burst of them fills the thread pool (the kit's gunicorn tests
measure that on a real server). Here: the route, its limits, and the request metrics.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select

from legacy_flask.settings import OrdersSettings
from polyframe_testing.telemetry import finished_spans, metric_value

DRILL = "/api/orders/_drills/hold-thread"
SERVICE = {"service_name": "legacy-flask", "framework": "flask"}


def value(name: str, **labels: str) -> float:
    """The sum of the samples ``name`` of this service that carry ``labels``."""
    return metric_value(name, **SERVICE, **labels)


@pytest.fixture
def spans(api: Any) -> InMemorySpanExporter:
    """Finished spans, from the tracer provider the app set up (once per process)."""
    return finished_spans()


def test_hold_thread_drill_holds_and_is_counted_under_its_route(make_api: Any) -> None:
    api = make_api(drills=True)
    labels = {
        "http_route": DRILL,
        "http_request_method": "POST",
        "http_response_status_code": "200",
    }
    before = value("http_server_request_duration_seconds_count", **labels)
    held = value("http_server_request_duration_seconds_sum", **labels)
    response = api.client.post(DRILL, query_string={"ms": "50"})
    assert response.status_code == 200
    assert response.get_json() == {"held_ms": 50}
    assert value("http_server_request_duration_seconds_count", **labels) == before + 1
    assert value("http_server_request_duration_seconds_sum", **labels) - held >= 0.05


def test_hold_thread_drill_holds_over_a_minute_as_a_hung_request_does(
    make_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = make_api(drills=True)
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # the drill's own sleep, not waited for
    response = api.client.post(DRILL, query_string={"ms": "120000"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert slept == [120.0]


@pytest.mark.parametrize("ms", ["0", "120001", "-1", "abc", ""])
def test_hold_thread_drill_refuses_out_of_range_values(make_api: Any, ms: str) -> None:
    api = make_api(drills=True)
    response = api.client.post(DRILL, query_string={"ms": ms})
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    body = response.get_json()
    assert [(error["field"], error["location"]) for error in body["errors"]] == [("ms", "query")]


def test_drills_are_absent_unless_enabled(api: Any) -> None:
    response = api.client.post(DRILL, query_string={"ms": "1"})
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert (
        value(
            "http_server_request_duration_seconds_count",
            http_route=DRILL,
            http_response_status_code="404",
        )
        == 0
    )  # an unknown path is counted as unmatched, never under its raw path


def test_drills_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_SERVICE_SECRET", "a-real-secret-9f2c71")
    monkeypatch.setenv("ORDERS_DRILLS", "true")
    with pytest.raises(ValueError, match="ORDERS_DRILLS must stay off in production"):
        OrdersSettings()
    monkeypatch.setenv("ORDERS_ENVIRONMENT", "development")
    assert OrdersSettings().drills is True


def test_order_creation_statements_traced_and_counted(
    api: Any, body: Any, spans: InMemorySpanExporter
) -> None:
    route = {"http_route": "/api/orders"}
    requests = value("polyframe_db_queries_per_request_count", **route)
    queries = value("polyframe_db_queries_per_request_sum", **route)
    response = api.create(api.member(), body())
    assert response.status_code == 201, response.text
    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.kind is SpanKind.SERVER]
    assert server.attributes["http.route"] == "/api/orders"
    statements = [
        s
        for s in finished
        if s.kind is SpanKind.CLIENT
        and s.attributes.get("db.system.name")
        and s.context.trace_id == server.context.trace_id
    ]
    assert {s.name.split()[0] for s in statements} >= {"INSERT"}
    assert value("polyframe_db_queries_per_request_count", **route) == requests + 1
    assert value("polyframe_db_queries_per_request_sum", **route) == queries + len(statements)


def test_the_audit_event_remembers_the_span_that_wrote_it(
    api: Any, body: Any, spans: InMemorySpanExporter
) -> None:
    from legacy_flask.models import OutboxEvent

    response = api.create(api.member(), body())
    assert response.status_code == 201, response.text
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    engine = api.app.extensions["polyframe.db"][0]
    with engine.connect() as connection:
        (row,) = connection.execute(select(OutboxEvent.trace_id, OutboxEvent.span_id)).all()
    assert row.trace_id == format(server.context.trace_id, "032x")
    assert row.span_id == format(server.context.span_id, "016x")
