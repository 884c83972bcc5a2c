"""The framework-neutral request cycle: ids, telemetry, refusals, errors, the access log."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from service_kit.client import ServiceUnavailableError
from service_kit.context import current_request_id
from service_kit.cycle import RequestCycle, openapi_route, problem_for, too_large_read
from service_kit.problems import DEPENDENCY_UNAVAILABLE, INTERNAL, conflict
from service_kit.telemetry import Telemetry
from service_kit.tracecontext import trace_id_var

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
DURATION = "http_server_request_duration_seconds"


def headers(**values: str) -> Callable[[str], str | None]:
    """A header look-up as adapters give it (case-insensitive)."""
    lowered = {name.lower().replace("_", "-"): value for name, value in values.items()}
    return lambda name: lowered.get(name.lower())


def test_ids_are_set_for_the_request_and_taken_out_after() -> None:
    cycle = RequestCycle(
        None,
        "GET",
        "/api/things",
        headers(x_request_id="req-1", traceparent=f"00-{TRACE_ID}-00f067aa0ba902b7-01"),
    )
    assert (cycle.request_id, current_request_id(), trace_id_var.get()) == (
        "req-1",
        "req-1",
        TRACE_ID,
    )
    cycle.close()
    assert (current_request_id(), trace_id_var.get()) == (None, None)


def test_malformed_ids_are_replaced() -> None:
    cycle = RequestCycle(None, "GET", "/", headers(x_request_id="bad id\n", traceparent="nope"))
    try:
        assert cycle.request_id != "bad id\n"
        assert len(cycle.request_id) == 32
        assert len(trace_id_var.get() or "") == 32
    finally:
        cycle.close()


def test_finish_logs_once_and_records_once(
    make_telemetry: Callable[..., Telemetry], samples: Any, log_stream: Any
) -> None:
    telemetry = make_telemetry("tests")
    cycle = RequestCycle(telemetry, "POST", "/api/things/7", headers(x_request_id="req-2"))
    assert cycle.state is not None
    for status in (201, 500):  # a second finish (a framework's teardown) changes nothing
        cycle.finish(route="/api/things/{id}", status=status, request_bytes=3, response_bytes=9)
    cycle.close()
    (line,) = log_stream.access()
    assert (line["method"], line["route"], line["status"], line["request_id"]) == (
        "POST",
        "/api/things/{id}",
        201,
        "req-2",
    )
    assert line["duration_ms"] >= 0
    assert samples.requests(telemetry.service) == {("POST", "/api/things/{id}", "201")}


def test_a_request_never_answered_is_counted_as_500_and_not_logged(
    make_telemetry: Callable[..., Telemetry], samples: Any, log_stream: Any
) -> None:
    telemetry = make_telemetry("tests")
    cycle = RequestCycle(telemetry, "GET", "/api/x", headers())
    cycle.finish(
        route="/api/x", status=500, request_bytes=None, response_bytes=None, answered=False
    )
    cycle.close()
    assert log_stream.access() == []
    assert samples.requests(telemetry.service) == {("GET", "/api/x", "500")}


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_operational_paths_are_neither_counted_nor_logged(
    make_telemetry: Callable[..., Telemetry], samples: Any, log_stream: Any, path: str
) -> None:
    telemetry = make_telemetry("tests")
    cycle = RequestCycle(telemetry, "GET", path, headers())
    assert cycle.state is None
    cycle.finish(route=path, status=200, request_bytes=None, response_bytes=2)
    cycle.close()
    assert log_stream.access() == []
    samples.assert_none_counted(telemetry.service)


def test_the_clock_starts_where_the_adapter_says(
    make_telemetry: Callable[..., Telemetry], samples: Any, log_stream: Any
) -> None:
    """A server that knows when the request arrived (queued for a thread) passes it."""
    telemetry = make_telemetry("tests")
    arrived = time.perf_counter() - 2.0
    cycle = RequestCycle(telemetry, "GET", "/api/slow", headers(), started=arrived)
    assert cycle.state is not None
    assert cycle.state.started == arrived
    cycle.finish(route="/api/slow", status=200, request_bytes=None, response_bytes=None)
    cycle.close()
    assert log_stream.access()[0]["duration_ms"] >= 2000
    assert samples.value(f"{DURATION}_sum", service_name=telemetry.service) >= 2.0


@pytest.mark.parametrize(
    ("method", "has_body", "content_type", "length", "expected"),
    [
        ("POST", True, "application/json", 10, None),
        ("POST", True, "application/merge-patch+json; charset=utf-8", 10, None),
        ("POST", True, "text/plain; charset=utf-8", 10, (415, "not text/plain")),
        ("PUT", True, None, 10, (415, "not none")),
        ("PATCH", True, "application/x-www-form-urlencoded", 10, (415, "not application/x-www")),
        ("POST", False, "text/plain", 0, None),  # no body: nothing to refuse
        ("GET", True, "text/plain", 10, None),  # a body on GET is the framework's business
        ("POST", True, "application/json", 65, (413, "exceeds 64 bytes")),
        ("GET", True, "text/plain", 65, (413, "exceeds 64 bytes")),
    ],
)
def test_refusals(
    method: str,
    has_body: bool,
    content_type: str | None,
    length: int,
    expected: tuple[int, str] | None,
) -> None:
    cycle = RequestCycle(None, method, "/api/items", headers())
    try:
        refusal = cycle.refusal(
            has_body=has_body, content_type=content_type, content_length=length, max_body_bytes=64
        )
    finally:
        cycle.close()
    if expected is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert refusal.status == expected[0]
        assert expected[1] in (refusal.detail or "")


def test_without_a_limit_only_the_media_type_is_checked() -> None:
    cycle = RequestCycle(None, "POST", "/", headers())
    try:
        assert (
            cycle.refusal(has_body=True, content_type="application/json", content_length=10**9)
            is None
        )
    finally:
        cycle.close()


def test_response_headers_carry_the_id_and_the_missing_security_headers() -> None:
    cycle = RequestCycle(None, "GET", "/", headers(x_request_id="req-3"))
    cycle.close()
    api = cycle.response_headers("application/json", ["Cache-Control"])
    assert api["X-Request-ID"] == "req-3"
    assert api["X-Content-Type-Options"] == "nosniff"
    assert "Cache-Control" not in api  # the application's own is kept
    assert "Content-Security-Policy" in api
    page = cycle.response_headers("text/html", [])
    assert "Content-Security-Policy" not in page


class DatabaseDownError(Exception):
    pass


def test_problem_for_each_kind_of_failure(log_stream: Any) -> None:
    assert problem_for(conflict("taken"), "POST", "/a").status == 409
    unavailable = problem_for(ServiceUnavailableError("users", "timeout"), "POST", "/a")
    assert (unavailable.status, unavailable.type) == (503, DEPENDENCY_UNAVAILABLE)
    database = problem_for(DatabaseDownError(), "GET", "/b", (DatabaseDownError,))
    assert (database.status, database.headers) == (503, {"Retry-After": "2"})
    logged = [
        (e["level"], e["message"], e.get("peer"), e.get("error")) for e in log_stream.entries()
    ]
    assert logged == [
        ("warning", "dependency unavailable", "users", None),
        ("warning", "database unavailable", None, "DatabaseDownError"),
    ]


def test_problem_for_anything_else_is_an_opaque_500(log_stream: Any) -> None:
    opaque = problem_for(RuntimeError("secret s3cr3t"), "DELETE", "/c")
    assert (opaque.status, opaque.type) == (500, INTERNAL)
    assert "s3cr3t" not in str(opaque.as_dict())
    log_stream.unhandled("DELETE", "/c", "RuntimeError", "s3cr3t")


def test_a_database_error_not_named_is_unhandled(log_stream: Any) -> None:
    assert problem_for(DatabaseDownError(), "GET", "/b").status == 500


def test_too_large_reads_the_rest_of_the_body() -> None:
    class Stream:
        def __init__(self) -> None:
            self.left = 10_000

        def read(self, size: int) -> bytes:
            chunk = b"x" * min(size, self.left)
            self.left -= len(chunk)
            return chunk

    stream = Stream()
    problem = too_large_read(stream)
    assert (problem.status, problem.detail) == (413, "The request body is too large")
    assert stream.left == 0


@pytest.mark.parametrize(
    ("rule", "route"),
    [
        ("/api/orders/<int:order_id>", "/api/orders/{order_id}"),
        ("/api/orders/<order_id>/refund", "/api/orders/{order_id}/refund"),
        ("/files/<path:name>/<uuid:id>", "/files/{name}/{id}"),
        ("/plain", "/plain"),
    ],
)
def test_openapi_route(rule: str, route: str) -> None:
    assert openapi_route(rule) == route
