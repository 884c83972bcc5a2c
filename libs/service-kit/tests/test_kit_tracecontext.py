"""W3C trace context: parsing ``traceparent``, and one trace id across adapters, logs and calls."""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask
from flask.testing import FlaskClient
from opentelemetry import trace as otel_trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from service_kit import fastapi as kit_fastapi
from service_kit import flask as kit_flask
from service_kit.client import ClientConfig, ServiceClient
from service_kit.tracecontext import (
    TRACEPARENT_HEADER,
    accept_trace_id,
    current_span_id,
    current_trace_id,
    new_trace_id,
    propagate,
    sampled_span_id,
    start_span_in,
    trace_id_from,
    trace_id_var,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
#: What an outgoing ``traceparent`` must look like: version 00, sampled.
OUTGOING = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01")
HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def trace() -> Iterator[str]:
    """The current trace id, as an adapter sets it for a request; put back afterwards."""
    token = trace_id_var.set(TRACE_ID)
    try:
        yield TRACE_ID
    finally:
        trace_id_var.reset(token)


class Downstream:
    """A MockTransport handler standing in for a peer service; keeps each request's headers."""

    def __init__(self) -> None:
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        return httpx.Response(200, json={"ok": True})

    @property
    def traceparents(self) -> list[str | None]:
        return [headers.get(TRACEPARENT_HEADER) for headers in self.headers]


def client_config() -> ClientConfig:
    return ClientConfig(peer="orders", base_url="http://orders.test", caller="users-fastapi")


# --- trace_id_from --------------------------------------------------------------------


def test_valid_traceparent() -> None:
    assert trace_id_from(TRACEPARENT) == TRACE_ID


@pytest.mark.parametrize("flags", ["00", "01", "ff"])
def test_any_flags_accepted(flags: str) -> None:
    assert trace_id_from(f"00-{TRACE_ID}-{PARENT_ID}-{flags}") == TRACE_ID


def test_future_version_of_the_same_shape_accepted() -> None:
    assert trace_id_from(f"01-{TRACE_ID}-{PARENT_ID}-01") == TRACE_ID


@pytest.mark.parametrize("value", [None, ""])
def test_missing(value: str | None) -> None:
    assert trace_id_from(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        f"00-{TRACE_ID}-{PARENT_ID}",  # no flags
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",  # trace id one digit short
        f"00-{TRACE_ID}0-{PARENT_ID}-01",  # trace id one digit long
        f"00-{TRACE_ID}-{PARENT_ID[:-1]}-01",  # parent id one digit short
        f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01",  # not hex
        f"00_{TRACE_ID}_{PARENT_ID}_01",  # wrong separator
        f"0-{TRACE_ID}-{PARENT_ID}-01",  # one-digit version
        f"00-{TRACE_ID}-{PARENT_ID}-1",  # one-digit flags
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE_ID}-{PARENT_ID}-01\n00-{'1' * 32}-{PARENT_ID}-01",  # two headers
        f"00-{TRACE_ID} -{PARENT_ID}-01",  # whitespace inside
    ],
)
def test_invalid_shapes(value: str) -> None:
    assert trace_id_from(value) is None


def test_version_ff_is_invalid() -> None:
    assert trace_id_from(f"ff-{TRACE_ID}-{PARENT_ID}-01") is None


def test_all_zero_trace_id_is_invalid() -> None:
    assert trace_id_from(f"00-{'0' * 32}-{PARENT_ID}-01") is None


def test_all_zero_parent_id_is_invalid() -> None:
    assert trace_id_from(f"00-{TRACE_ID}-{'0' * 16}-01") is None


def test_uppercase_accepted_and_lowered() -> None:
    # Lower case matters: admin-django accepts only ``[0-9a-f]{32}`` as an event's trace id.
    assert trace_id_from(TRACEPARENT.upper()) == TRACE_ID
    assert trace_id_from(f"00-{TRACE_ID.upper()}-{PARENT_ID}-01") == TRACE_ID


@pytest.mark.parametrize("padding", [" ", "\t", "  \t "])
def test_surrounding_whitespace_ignored(padding: str) -> None:
    assert trace_id_from(f"{padding}{TRACEPARENT}{padding}") == TRACE_ID


# --- new ids, accept_trace_id, propagate ----------------------------------


def test_new_trace_ids_are_random_lowercase_hex() -> None:
    ids = {new_trace_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(HEX32.fullmatch(trace_id) for trace_id in ids)
    # A new id is itself acceptable in a traceparent (not the invalid all-zero id).
    assert all(trace_id_from(f"00-{trace_id}-{PARENT_ID}-01") == trace_id for trace_id in ids)


def test_accept_keeps_a_valid_incoming_trace_id() -> None:
    assert accept_trace_id(TRACEPARENT) == TRACE_ID


@pytest.mark.parametrize(
    "value", [None, "", "garbage", f"ff-{TRACE_ID}-{PARENT_ID}-01", f"00-{'0' * 32}-{PARENT_ID}-01"]
)
def test_accept_makes_a_new_trace_id_otherwise(value: str | None) -> None:
    first, second = accept_trace_id(value), accept_trace_id(value)
    assert HEX32.fullmatch(first)
    assert HEX32.fullmatch(second)
    assert first != second
    assert TRACE_ID not in (first, second)


def outgoing_traceparent() -> str | None:
    headers: dict[str, str] = {}
    propagate(headers)
    return headers.get("traceparent")


def test_no_outgoing_traceparent_outside_a_trace() -> None:
    assert current_trace_id() is None
    assert current_span_id() is None
    assert outgoing_traceparent() is None


def test_outgoing_traceparent_continues_the_trace(trace: str) -> None:
    assert current_trace_id() == trace
    headers = [outgoing_traceparent() for _ in range(20)]
    parents = set()
    for header in headers:
        assert header is not None
        match = OUTGOING.fullmatch(header)
        assert match is not None, header
        assert match.group(1) == trace
        assert match.group(2) != PARENT_ID
        parents.add(match.group(2))
        # What we send, the next service accepts as the same trace.
        assert trace_id_from(header) == trace
    assert len(parents) == len(headers)  # a new parent id for every call


def test_trace_id_is_per_context() -> None:
    def in_other_context() -> str | None:
        trace_id_var.set("1" * 32)
        return current_trace_id()

    assert contextvars.copy_context().run(in_other_context) == "1" * 32
    assert current_trace_id() is None


# --- JSON logs --------------------------------------------------------------------------


def test_log_lines_carry_the_trace_id(log_stream: Any, trace: str) -> None:
    logging.getLogger("demo").info("inside a trace")
    (entry,) = log_stream.entries()
    assert entry["trace_id"] == trace


def test_no_trace_id_field_outside_a_trace(log_stream: Any) -> None:
    logging.getLogger("demo").info("outside a trace")
    (entry,) = log_stream.entries()
    assert "trace_id" not in entry


# --- the service client -----------------------------------------------------------------


def test_client_sends_the_trace_on(trace: str) -> None:
    downstream = Downstream()
    client = ServiceClient(client_config(), transport=httpx.MockTransport(downstream))
    try:
        client.request("GET", "/api/orders")
        client.request("POST", "/api/orders", json={})
    finally:
        client.close()
    first, second = downstream.traceparents
    assert first is not None
    assert second is not None
    assert trace_id_from(first) == trace_id_from(second) == trace
    assert OUTGOING.fullmatch(first)
    assert first != second  # each call is its own span


def test_client_sends_no_traceparent_outside_a_trace() -> None:
    downstream = Downstream()
    client = ServiceClient(client_config(), transport=httpx.MockTransport(downstream))
    try:
        client.request("GET", "/api/orders")
    finally:
        client.close()
    assert downstream.traceparents == [None]


# --- the FastAPI adapter -----------------------------------------------------------------


def fastapi_app(peer: ServiceClient) -> FastAPI:
    app = FastAPI()
    kit_fastapi.install(app)

    @app.get("/api/trace")
    def trace_here() -> dict[str, str | None]:  # a blocking call: in the thread pool
        logging.getLogger("demo.view").info("in the view")
        peer.request("GET", "/api/orders")
        return {"trace_id": current_trace_id()}

    @app.get("/api/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return app


@pytest.fixture
async def fastapi_client() -> AsyncIterator[tuple[httpx.AsyncClient, Downstream]]:
    downstream = Downstream()
    peer = ServiceClient(client_config(), transport=httpx.MockTransport(downstream))
    transport = httpx.ASGITransport(app=fastapi_app(peer))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as http:
            yield http, downstream
    finally:
        peer.close()


async def test_fastapi_continues_an_incoming_trace(
    fastapi_client: tuple[httpx.AsyncClient, Downstream], log_stream: Any
) -> None:
    http, downstream = fastapi_client
    response = await http.get("/api/trace", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    assert response.json() == {"trace_id": TRACE_ID}
    (sent,) = downstream.traceparents
    assert sent is not None
    assert trace_id_from(sent) == TRACE_ID
    assert PARENT_ID not in sent
    view_line = next(e for e in log_stream.entries() if e["logger"] == "demo.view")
    assert view_line["trace_id"] == TRACE_ID
    (access,) = log_stream.access()
    assert access["trace_id"] == TRACE_ID
    assert current_trace_id() is None  # reset after the request


@pytest.mark.parametrize("header", [None, "garbage", f"00-{'0' * 32}-{PARENT_ID}-01"])
async def test_fastapi_starts_a_trace_otherwise(
    fastapi_client: tuple[httpx.AsyncClient, Downstream],
    log_stream: Any,
    header: str | None,
) -> None:
    http, downstream = fastapi_client
    headers = {"traceparent": header} if header is not None else {}
    first = (await http.get("/api/trace", headers=headers)).json()["trace_id"]
    second = (await http.get("/api/trace", headers=headers)).json()["trace_id"]
    assert HEX32.fullmatch(first)
    assert HEX32.fullmatch(second)
    assert first != second  # one trace per request
    assert [trace_id_from(sent) for sent in downstream.traceparents] == [first, second]
    assert [line["trace_id"] for line in log_stream.access()] == [first, second]
    assert current_trace_id() is None


async def test_fastapi_error_lines_carry_the_trace_id(
    fastapi_client: tuple[httpx.AsyncClient, Downstream], log_stream: Any
) -> None:
    http, _ = fastapi_client
    response = await http.get("/api/boom", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 500
    entries = log_stream.entries()
    error = next(e for e in entries if e["logger"] == "service_kit.errors")
    assert error["trace_id"] == TRACE_ID
    (access,) = log_stream.access()
    assert access["trace_id"] == TRACE_ID
    assert access["status"] == 500
    assert current_trace_id() is None


# --- the Flask adapter --------------------------------------------------------------------


@pytest.fixture
def flask_client() -> Iterator[tuple[FlaskClient, Downstream]]:
    downstream = Downstream()
    peer = ServiceClient(client_config(), transport=httpx.MockTransport(downstream))
    app = Flask(__name__)
    kit_flask.install(app)

    @app.get("/api/trace")
    def trace_here() -> dict[str, str | None]:
        peer.request("GET", "/api/orders")
        return {"trace_id": current_trace_id()}

    try:
        yield app.test_client(), downstream
    finally:
        peer.close()


def test_flask_continues_an_incoming_trace(
    flask_client: tuple[FlaskClient, Downstream], log_stream: Any
) -> None:
    client, downstream = flask_client
    response = client.get("/api/trace", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    assert response.get_json() == {"trace_id": TRACE_ID}
    (sent,) = downstream.traceparents
    assert sent is not None
    assert trace_id_from(sent) == TRACE_ID
    (access,) = log_stream.access()
    assert access["trace_id"] == TRACE_ID
    assert current_trace_id() is None  # reset in teardown


@pytest.mark.parametrize("header", [None, "garbage", f"ff-{TRACE_ID}-{PARENT_ID}-01"])
def test_flask_starts_a_trace_otherwise(
    flask_client: tuple[FlaskClient, Downstream], log_stream: Any, header: str | None
) -> None:
    client, downstream = flask_client
    headers = {"traceparent": header} if header is not None else {}
    first = client.get("/api/trace", headers=headers).get_json()["trace_id"]
    second = client.get("/api/trace", headers=headers).get_json()["trace_id"]
    assert HEX32.fullmatch(first)
    assert HEX32.fullmatch(second)
    assert first != second
    assert TRACE_ID not in (first, second)
    assert [trace_id_from(sent) for sent in downstream.traceparents] == [first, second]
    assert [line["trace_id"] for line in log_stream.access()] == [first, second]
    assert current_trace_id() is None


def test_flask_problem_answers_keep_the_trace(
    flask_client: tuple[FlaskClient, Downstream], log_stream: Any
) -> None:
    client, _ = flask_client
    response = client.get("/api/nowhere", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 404
    (access,) = log_stream.access()
    assert access["trace_id"] == TRACE_ID
    assert current_trace_id() is None


# --- with OpenTelemetry: its span wins ------------------------------------------------------


def test_the_opentelemetry_span_wins_over_the_carried_trace_id(
    trace: str, span_exporter: Any
) -> None:
    with otel_trace.get_tracer("tests").start_as_current_span("request") as span:
        context = span.get_span_context()
        assert current_trace_id() == format(context.trace_id, "032x") != trace
        assert current_span_id() == format(context.span_id, "016x")
        assert sampled_span_id() == current_span_id()
    assert current_trace_id() == trace  # the carried one again
    assert current_span_id() is None


def test_sampled_span_id_only_for_a_recorded_trace() -> None:
    unsampled = SpanContext(int(TRACE_ID, 16), int(PARENT_ID, 16), True, TraceFlags(0))
    with otel_trace.use_span(NonRecordingSpan(unsampled)):
        assert current_span_id() == PARENT_ID
        assert sampled_span_id() is None  # nothing will record it: nothing can join it
    assert sampled_span_id() is None


@pytest.mark.usefixtures("span_exporter")
def test_propagate_sends_the_current_span_as_parent() -> None:
    with otel_trace.get_tracer("tests").start_as_current_span("request") as span:
        headers: dict[str, str] = {}
        propagate(headers)
    context = span.get_span_context()
    version, trace_id, parent_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, parent_id) == (
        "00",
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
    )
    assert int(flags, 16) & 0x01


@pytest.mark.usefixtures("span_exporter")
def test_log_lines_carry_the_span_id(log_stream: Any) -> None:
    with otel_trace.get_tracer("tests").start_as_current_span("request") as span:
        logging.getLogger("demo").info("inside a span")
    (entry,) = log_stream.entries()
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["span_id"] == format(span.get_span_context().span_id, "016x")


def test_no_span_id_without_an_opentelemetry_span(log_stream: Any, trace: str) -> None:
    logging.getLogger("demo").info("carried trace only")
    (entry,) = log_stream.entries()
    assert entry["trace_id"] == trace
    assert "span_id" not in entry


@pytest.mark.usefixtures("span_exporter")
def test_start_span_in_makes_a_child_of_the_named_span(spans: Any) -> None:
    spans.clear()
    span = start_span_in(
        TRACE_ID, PARENT_ID, "later work", kind=SpanKind.CONSUMER, attributes={"n": 1}
    )
    span.end()
    (finished,) = spans.get_finished_spans()
    assert format(finished.context.trace_id, "032x") == TRACE_ID
    assert finished.parent is not None
    assert format(finished.parent.span_id, "016x") == PARENT_ID
    assert finished.parent.is_remote
    assert finished.kind is SpanKind.CONSUMER
    assert finished.attributes["n"] == 1
