"""The admin service's observability: the N+1 drill, the middleware order, route labels,
and the audit trail joining the producer's trace.

Django is configured once per process (see conftest.py) with drills off, so the URLconf
with the drill is ``admin_django.urls`` loaded again, as a module of its own, while
``settings.CONFIG.drills`` is on: exactly what a process started with
``ADMIN_DRILLS=true`` imports.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.db.utils import ConnectionHandler
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client
from django.urls import path
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import admin_django.urls
from admin_django.audit.models import AuditEvent
from admin_django.conf import AdminSettings
from admin_django.settings import _database
from admin_django.support.roles import ACTING
from polyframe_testing.logs import loggers_restored
from polyframe_testing.telemetry import finished_spans, metric_value
from service_kit import metrics, telemetry
from service_kit.logs import JsonFormatter
from service_kit.tracecontext import trace_id_from

DRILL = "/api/audit/_drills/n-plus-one"
SERVICE = {"service_name": "admin-django", "framework": "django"}
KIT_MIDDLEWARE = "service_kit.django.RequestContextMiddleware"


def value(name: str, **labels: str) -> float:
    """The sum of the samples ``name`` of this service that carry ``labels``."""
    return metric_value(name, **SERVICE, **labels)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """Finished spans, from the tracer provider the app set up (once per process)."""
    return finished_spans()


@pytest.fixture
def drills(settings: Any) -> ModuleType:
    """The project's URLconf as a process with ``ADMIN_DRILLS=true`` imports it."""
    settings.CONFIG = settings.CONFIG.model_copy(update={"drills": True})
    spec = importlib.util.spec_from_file_location(
        "admin_django_urls_with_drills", admin_django.urls.__file__
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    settings.ROOT_URLCONF = module
    return module


@pytest.fixture
def access_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The access-log lines as the service writes them (its JSON formatter, which adds the
    trace and span ids of the moment the line is written)."""
    buffer = io.StringIO()
    with loggers_restored(["service_kit.access"]):
        handler = logging.StreamHandler(buffer)
        handler.setFormatter(JsonFormatter("admin-django"))
        access = logging.getLogger("service_kit.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]


@pytest.fixture
def telemetry_warnings(caplog: pytest.LogCaptureFixture) -> Callable[[], list[logging.LogRecord]]:
    caplog.set_level(logging.WARNING, logger="service_kit.telemetry")
    return lambda: [r for r in caplog.records if r.name == "service_kit.telemetry"]


# --- the N+1 drill ------------------------------------------------------------------------


@pytest.mark.usefixtures("db", "drills")
def test_n_plus_one_drill_is_detected_by_route(
    spans: InMemorySpanExporter, telemetry_warnings: Callable[[], list[logging.LogRecord]]
) -> None:
    route = {"http_route": DRILL}
    flagged = value("polyframe_db_repeated_queries_total", **route)
    queries = value("polyframe_db_queries_per_request_sum", **route)

    response = Client().get(DRILL, {"n": "25"})

    assert response.status_code == 200
    assert response.json() == {"queries": 25}
    assert value("polyframe_db_repeated_queries_total", **route) == flagged + 1
    assert value("polyframe_db_queries_per_request_sum", **route) == queries + 25
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    (event,) = [e for e in server.events if e.name == "db.repeated_query"]
    assert event.attributes["db.repeated_query.count"] == 25
    assert "audit_auditevent" in str(event.attributes["db.repeated_query.shape"])
    assert server.attributes["db.repeated_query.count"] == 25
    statements = [s for s in spans.get_finished_spans() if s.attributes.get("db.system.name")]
    assert len(statements) == 25
    assert all(
        s.parent is not None and s.parent.span_id == server.context.span_id for s in statements
    )
    (warning,) = telemetry_warnings()
    assert warning.route == DRILL  # type: ignore[attr-defined]
    assert warning.count == 25  # type: ignore[attr-defined]


@pytest.mark.usefixtures("db", "drills")
def test_n_plus_one_drill_at_the_threshold_is_not_flagged(
    telemetry_warnings: Callable[[], list[logging.LogRecord]],
) -> None:
    from django.conf import settings

    threshold = settings.CONFIG.db_repeated_query_threshold
    route = {"http_route": DRILL}
    flagged = value("polyframe_db_repeated_queries_total", **route)
    response = Client().get(DRILL, {"n": str(threshold)})
    assert response.json() == {"queries": threshold}
    assert value("polyframe_db_repeated_queries_total", **route) == flagged
    assert telemetry_warnings() == []


@pytest.mark.usefixtures("drills")
@pytest.mark.parametrize("n", ["0", "501", "-3", "abc", ""])
def test_n_plus_one_drill_refuses_out_of_range_values(
    n: str, problem: Callable[[Any, int], dict[str, Any]]
) -> None:
    body = problem(Client().get(DRILL, {"n": n}), 422)
    assert [(error["field"], error["location"]) for error in body["errors"]] == [("n", "query")]


@pytest.mark.usefixtures("drills")
def test_slow_drill_holds_its_thread_and_refuses_bad_values(
    problem: Callable[[Any, int], dict[str, Any]],
) -> None:
    response = Client().get("/api/audit/_drills/slow", {"ms": "5"})
    assert response.status_code == 200
    assert response.json() == {"slept_ms": 5}
    body = problem(Client().get("/api/audit/_drills/slow", {"ms": "120001"}), 422)
    assert [(error["field"], error["location"]) for error in body["errors"]] == [("ms", "query")]


@pytest.mark.usefixtures("drills")
def test_slow_drill_holds_over_a_minute_as_a_hung_request_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # the drill's own sleep, not waited for
    response = Client().get("/api/audit/_drills/slow", {"ms": "120000"})
    assert response.status_code == 200, response.content
    assert slept == [120.0]


def test_drills_are_absent_unless_enabled(problem: Callable[[Any, int], dict[str, Any]]) -> None:
    body = problem(Client().get(DRILL, {"n": "3"}), 404)
    assert body["instance"] == DRILL


def test_drills_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ADMIN_ENVIRONMENT", "ADMIN_INSTRUMENTATION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ADMIN_SECRET_KEY", "a-real-django-secret-key-4f1c9e8b7a")
    monkeypatch.setenv("ADMIN_SERVICE_SECRET", "a-real-service-secret-0d3e")
    monkeypatch.setenv("ADMIN_DRILLS", "true")
    with pytest.raises(ValueError, match="ADMIN_DRILLS must stay off in production"):
        AdminSettings()
    monkeypatch.setenv("ADMIN_ENVIRONMENT", "development")
    assert AdminSettings().drills is True


# --- the middleware order, and what it is for ------------------------------------------------


def test_kit_middleware_comes_before_opentelemetry_s() -> None:
    from django.conf import settings

    assert settings.MIDDLEWARE[0] == KIT_MIDDLEWARE
    assert "opentelemetry" in settings.MIDDLEWARE[1]
    assert settings.MIDDLEWARE.count(KIT_MIDDLEWARE) == 1


def test_a_disallowed_host_under_api_still_gets_a_problem(
    problem: Callable[[Any, int], dict[str, Any]],
) -> None:
    response = Client().get("/api/audit/events", HTTP_HOST="evil.example")
    body = problem(response, 400)
    assert body["instance"] == "/api/audit/events"
    assert "evil.example" not in response.content.decode()


@pytest.mark.parametrize("url", ["/healthz", "/metrics"])
def test_probes_and_scrapes_by_pod_ip_are_answered(url: str) -> None:
    response = Client().get(url, HTTP_HOST="10.42.0.17:8103")
    assert response.status_code == 200
    assert response["X-Request-ID"]


# --- route labels ------------------------------------------------------------------------------


@pytest.mark.usefixtures("db")
def test_the_admin_catch_all_is_one_route_label() -> None:
    labels = {"http_route": "/admin/{url}", "http_request_method": "GET"}
    before = value("http_server_request_duration_seconds_count", **labels)
    for url in ("/admin/no/such/page/", "/admin/another/one", "/admin/x"):
        Client().get(url)
    assert value("http_server_request_duration_seconds_count", **labels) == before + 3
    raw = [
        sample.labels["http_route"]
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
        if sample.labels.get("service_name") == "admin-django" and "http_route" in sample.labels
    ]
    assert not any("no/such/page" in route or "another/one" in route for route in raw)


# --- the audit trail joins the producer's trace ------------------------------------------------


@pytest.mark.usefixtures("db")
def test_recording_an_event_is_a_child_of_its_delivery_span(
    spans: InMemorySpanExporter,
    service_headers: Callable[..., dict[str, str]],
    event_body: Callable[..., dict[str, Any]],
) -> None:
    trace_id, delivery_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    joined = event_body(trace_id=trace_id, span_id=delivery_span)
    alone = event_body(trace_id=None)
    response = Client().post(
        "/api/audit/events",
        {"events": [joined, alone]},
        content_type="application/json",
        headers=service_headers("users-fastapi"),
    )
    assert response.status_code == 201, response.content
    (record,) = [s for s in spans.get_finished_spans() if s.name.startswith("audit.record")]
    assert record.name == "audit.record user.registered"
    assert record.kind is SpanKind.CONSUMER
    assert format(record.context.trace_id, "032x") == trace_id
    assert record.parent is not None
    assert format(record.parent.span_id, "016x") == delivery_span
    assert record.attributes["audit.event_id"] == joined["id"]
    assert record.attributes["audit.service"] == "users-fastapi"


# --- one trace id per request: log line, span, outgoing call, audit event ---------------------


SUPPORT_USER_ROUTE = "/admin/support/users/{user_id}/"


@pytest.mark.usefixtures("db")
def test_a_request_without_traceparent_is_one_trace_in_log_span_call_and_audit_event(
    spans: InMemorySpanExporter,
    access_lines: Callable[[], list[dict[str, Any]]],
    login: Callable[..., Client],
    peers: Any,
) -> None:
    """A console request (Traefik sends no ``traceparent`` in a cluster): the access line,
    written after OpenTelemetry's span ended, names that span's trace, as do the call to
    the users service and the audit event it records."""
    user = peers.add_user("tracy@example.com")
    staff = login("sam", group=ACTING)
    spans.clear()
    path = f"/admin/support/users/{user['id']}/"

    response = staff.post(path, {"action": "deactivate"})

    assert response.status_code == 302
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    trace_id = format(server.context.trace_id, "032x")
    (line,) = [line for line in access_lines() if line.get("route") == SUPPORT_USER_ROUTE]
    assert line["trace_id"] == trace_id
    assert line["span_id"] == format(server.context.span_id, "016x")
    [sent] = peers.sent("POST", f"/api/users/{user['id']}/deactivate")
    assert trace_id_from(sent.headers["traceparent"]) == trace_id
    [event] = AuditEvent.objects.filter(service="admin-django")
    assert event.trace_id == trace_id
    # The span is named as the metrics' route label, not Django's ``<uuid:user_id>``.
    assert server.attributes["http.route"] == SUPPORT_USER_ROUTE
    assert server.name == f"POST {SUPPORT_USER_ROUTE}"


# -- the database connections (service_kit.djangodb) --------------------------------------------


def _connections_now(_request: HttpRequest) -> HttpResponse:
    """A view that queries, then reports this process's connection gauges mid-request."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({state: value(POOL, state=state) for state in ("in_use", "idle")})


POOL = "polyframe_db_pool_connections"


@pytest.fixture
def admin_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """admin-django's telemetry as the process's current one, which the engine counts under
    (in one pytest process, another package's tests may have set up theirs since)."""
    monkeypatch.setattr(telemetry, "_current", telemetry.Telemetry("admin-django", "django"))


@pytest.mark.usefixtures("db", "admin_telemetry")
def test_a_connection_is_in_use_during_a_request_and_idle_after(settings: Any) -> None:
    urls = ModuleType("connections_now_urls")
    urls.urlpatterns = [path("api/audit/_connections", _connections_now)]  # type: ignore[attr-defined]
    settings.ROOT_URLCONF = urls

    during = Client().get("/api/audit/_connections").json()

    # This thread's connection: in use while it served the request; kept open after it
    # (CONN_MAX_AGE), idle then. (Other threads' connections, if any are open, are idle.)
    assert during["in_use"] == 1
    assert value(POOL, state="in_use") == 0
    assert value(POOL, state="idle") == during["idle"] + 1


@pytest.mark.usefixtures("admin_telemetry")
def test_database_down_is_a_connect_error(django_db_blocker: Any) -> None:
    """A connection the database refuses is counted as such (admin-django's own engine)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens once the socket is closed
    settings = _database(f"postgresql://polyframe@127.0.0.1:{closed}/x")
    assert settings["ENGINE"] == "service_kit.djangodb.postgresql"
    down = ConnectionHandler({"default": settings})["default"]
    before = value("polyframe_db_connect_errors_total")
    with django_db_blocker.unblock():
        for _ in range(2):
            with pytest.raises(OperationalError):
                down.ensure_connection()
    assert value("polyframe_db_connect_errors_total") == before + 2
    assert down.connection is None
