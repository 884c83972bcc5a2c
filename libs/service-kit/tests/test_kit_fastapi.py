"""The FastAPI adapter: problem+json for every error, request ids, body limit, health."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from polyframe_testing.peers import asgi_client
from service_kit import metrics
from service_kit.client import ServiceUnavailableError
from service_kit.context import current_request_id
from service_kit.fastapi import (
    UNMATCHED_ROUTE,
    add_health_routes,
    install,
)
from service_kit.health import CheckFailedError
from service_kit.problems import (
    CONFLICT,
    DEPENDENCY_UNAVAILABLE,
    INPUT_LIMIT,
    INTERNAL,
    MALFORMED_BODY,
    PROBLEM_CONTENT_TYPE,
    VALIDATION,
    conflict,
    invalid_field,
    openapi_problem_responses,
)
from service_kit.telemetry import Telemetry
from service_kit.tracecontext import propagate, trace_id_from

OLDEST = "polyframe_oldest_request_start_timestamp_seconds"

MAX_BODY = 64
SECRET_TEXT = "db password is hunter2"

Check = Callable[[], Awaitable[str | None]]


class Item(BaseModel):
    name: str = Field(min_length=1)
    quantity: int = Field(gt=0)


def build_app(checks: Mapping[str, Check] | None = None) -> FastAPI:
    app = FastAPI()
    install(app, max_body_bytes=MAX_BODY)

    def readiness(request: Request) -> Mapping[str, Check]:
        return checks or {}

    add_health_routes(app, "demo", readiness)

    @app.post("/items", status_code=201)
    async def create_item(item: Item) -> dict[str, Any]:
        return {"name": item.name, "quantity": item.quantity}

    @app.get("/items/{item_id}")
    async def get_item(item_id: int, limit: int = Query(default=10, le=100)) -> dict[str, int]:
        if item_id == 0:
            raise HTTPException(404, "No such item")
        if item_id == 1:
            raise HTTPException(418, detail={"structured": "detail"})
        return {"id": item_id, "limit": limit}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET_TEXT)

    @app.get("/boom-sync")
    def boom_sync() -> None:
        raise ValueError(SECRET_TEXT)

    @app.get("/conflict")
    async def conflicting() -> None:
        raise conflict("Email already taken")

    @app.get("/invalid")
    async def invalid() -> None:
        raise invalid_field("start", "must be before end", location="query")

    @app.get("/unavailable")
    async def unavailable() -> None:
        raise ServiceUnavailableError("orders", "ConnectError to 10.0.0.7")

    @app.get("/request-id")
    async def request_id() -> dict[str, str | None]:
        return {"request_id": current_request_id()}

    @app.get("/stream-breaks")
    async def stream_breaks() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"partial"
            raise RuntimeError(SECRET_TEXT)

        return StreamingResponse(body(), media_type="text/plain")

    @app.api_route("/raw", methods=["PUT", "DELETE"])  # DELETE: a body the kit does not scan
    async def raw(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as http:
        yield http


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert response.headers["x-request-id"]
    return body


# --- success path ---------------------------------------------------------------------


async def test_success_is_plain_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "a", "quantity": 2})
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"name": "a", "quantity": 2}
    assert response.headers["x-request-id"]


# --- validation -----------------------------------------------------------------------


async def test_validation_error_names_the_field(
    client: httpx.AsyncClient, quantity_error: dict[str, str]
) -> None:
    response = await client.post("/items", json={"name": "a", "quantity": 0})
    body = assert_problem(response, 422)
    assert body["type"] == VALIDATION
    assert body["title"] == "Validation failed"
    assert body["instance"] == "/items"
    assert "quantity" in body["detail"]
    (error,) = body["errors"]
    assert {key: error[key] for key in quantity_error} == quantity_error
    assert error["detail"]


async def test_several_invalid_fields(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "", "quantity": "many"})
    body = assert_problem(response, 422)
    assert sorted(error["field"] for error in body["errors"]) == ["name", "quantity"]
    assert body["detail"] == "Invalid value for: name, quantity"


async def test_missing_body(client: httpx.AsyncClient) -> None:
    response = await client.post("/items")
    body = assert_problem(response, 422)
    assert body["type"] == VALIDATION
    assert body["errors"][0]["location"] == "body"


async def test_query_and_path_errors_located(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/items/5", params={"limit": 1000}), 422)
    assert body["errors"] == [
        {
            "field": "limit",
            "location": "query",
            "detail": body["errors"][0]["detail"],
            "code": "less_than_equal",
        }
    ]
    body = assert_problem(await client.get("/items/abc"), 422)
    assert body["errors"][0]["field"] == "item_id"
    assert body["errors"][0]["location"] == "path"
    assert "pointer" not in body["errors"][0]


@pytest.mark.parametrize("content", [b"m\xff", b'{"name": "\xe9"}'], ids=["bytes", "latin-1"])
async def test_a_body_that_is_not_utf8_is_malformed_json(
    client: httpx.AsyncClient, content: bytes
) -> None:
    """FastAPI's own answer is a 400 "error parsing the body"; like the other services, 422."""
    response = await client.post(
        "/items", content=content, headers={"Content-Type": "application/json"}
    )
    body = assert_problem(response, 422)
    assert body["type"] == MALFORMED_BODY
    assert body["instance"] == "/items"


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/items", content=b'{"name": "a",', headers={"Content-Type": "application/json"}
    )
    body = assert_problem(response, 422)
    assert body["type"] == MALFORMED_BODY
    assert body["title"] == "Malformed request body"
    assert body["detail"] == "The request body is not valid JSON"
    (error,) = body["errors"]
    assert error["field"] == ""
    assert error["location"] == "body"
    assert error["code"] == "json_invalid"


async def test_invalid_field_from_handler(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/invalid"), 422)
    assert body["type"] == VALIDATION
    assert body["errors"] == [
        {"field": "start", "location": "query", "detail": "must be before end"}
    ]


# --- HTTP errors ----------------------------------------------------------------------


async def test_http_exception_becomes_problem(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/items/0"), 404)
    assert body == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "No such item",
        "instance": "/items/0",
    }


async def test_http_exception_with_structured_detail(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/items/1"), 418)
    assert body["detail"] == "I'm a Teapot"
    assert "structured" not in json.dumps(body)


async def test_unknown_route(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/no/such/route"), 404)
    assert body["instance"] == "/no/such/route"
    assert body["title"] == "Not Found"


async def test_wrong_method_keeps_allow_header(client: httpx.AsyncClient) -> None:
    response = await client.delete("/items")
    assert_problem(response, 405)
    assert "POST" in response.headers["allow"]


async def test_problem_error_status(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/conflict"), 409)
    assert body["type"] == CONFLICT
    assert body["detail"] == "Email already taken"
    assert body["instance"] == "/conflict"


async def test_service_unavailable(client: httpx.AsyncClient, log_stream: Any) -> None:
    response = await client.get("/unavailable")
    body = assert_problem(response, 503)
    assert body["type"] == DEPENDENCY_UNAVAILABLE
    assert response.headers["retry-after"] == "2"
    assert "orders" in body["detail"]
    assert "10.0.0.7" not in response.text
    (warning,) = [e for e in log_stream.entries() if e["logger"] == "service_kit.errors"]
    assert warning["level"] == "warning"
    assert warning["peer"] == "orders"
    assert warning["request_id"] == response.headers["x-request-id"]


# --- unhandled exceptions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "error"), [("/boom", "RuntimeError"), ("/boom-sync", "ValueError")]
)
async def test_unhandled_exception_is_opaque_500(
    client: httpx.AsyncClient, log_stream: Any, path: str, error: str
) -> None:
    response = await client.get(path, headers={"X-Request-ID": "trace-me-1"})
    body = assert_problem(response, 500)
    assert body["type"] == INTERNAL
    assert body["instance"] == path
    assert SECRET_TEXT not in response.text
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    assert error not in response.text
    assert response.headers["x-request-id"] == "trace-me-1"

    logged = log_stream.unhandled("GET", path, error, SECRET_TEXT)  # the details: log only
    assert logged["request_id"] == "trace-me-1"
    (access,) = log_stream.access()
    assert access["status"] == 500
    assert access["request_id"] == "trace-me-1"


async def test_failure_after_response_started_is_logged_and_reraised(
    client: httpx.AsyncClient, log_stream: Any
) -> None:
    # Once the status line is out, no problem can be sent: the error is logged and the
    # server (here the test transport) sees it and drops the connection.
    with pytest.raises(RuntimeError, match="hunter2"):
        await client.get("/stream-breaks", headers={"X-Request-ID": "rid-stream"})
    entries = log_stream.entries()
    (logged,) = [e for e in entries if e["logger"] == "service_kit.errors"]
    assert logged["message"] == "error after the response started"
    assert logged["request_id"] == "rid-stream"
    assert logged["error"]["type"] == "RuntimeError"
    (access,) = log_stream.access()
    assert access["status"] == 200


# --- body size limit ------------------------------------------------------------------


async def test_body_at_limit_accepted(client: httpx.AsyncClient) -> None:
    prefix, suffix = b'{"name":"', b'","quantity":1}'
    content = prefix + b"x" * (MAX_BODY - len(prefix) - len(suffix)) + suffix
    assert len(content) == MAX_BODY
    response = await client.post(
        "/items", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201


async def test_declared_body_too_large(client: httpx.AsyncClient, log_stream: Any) -> None:
    content = json.dumps({"name": "x" * 200, "quantity": 1}).encode()
    response = await client.post(
        "/items", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.request.headers["content-length"] == str(len(content))
    body = assert_problem(response, 413)
    assert body["detail"] == f"The request body exceeds {MAX_BODY} bytes"
    assert body["instance"] == "/items"
    assert int(response.headers["content-length"]) == len(response.content)
    (access,) = [e for e in log_stream.entries() if e["logger"] == "service_kit.access"]
    assert access["status"] == 413


async def chunks(total: int, size: int = 16) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/items"), ("PUT", "/raw"), ("DELETE", "/raw")]
)
async def test_streamed_body_too_large(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(
        method, path, content=chunks(MAX_BODY * 4), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    body = assert_problem(response, 413)
    assert body["detail"] == f"The request body exceeds {MAX_BODY} bytes"
    assert body["type"] == INPUT_LIMIT  # the same type as every other limit's, wherever met


async def test_streamed_body_within_limit(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/raw", content=chunks(MAX_BODY), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json() == {"received": MAX_BODY}


async def raw_call(
    app: Any,
    path: str,
    *,
    method: str = "GET",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    messages: list[dict[str, Any]] | None = None,
) -> tuple[int, bytes]:
    """``app`` called as a server calls it, with bytes no HTTP client would send (a raw query,
    a body broken off): the response's status and body. ``messages``: what ``receive``
    hands on, in order (default: no body)."""
    incoming = list(messages or [{"type": "http.request", "body": b"", "more_body": False}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers if headers is not None else [(b"host", b"demo.test")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


async def test_a_client_gone_before_its_body_ended_is_a_400_not_a_500(log_stream: Any) -> None:
    """Part of the body, then the disconnect (what uvicorn hands on when the client, or
    the ingress on its behalf, closed mid-body): counted and answered as a 400."""
    status, body = await raw_call(
        build_app(),
        "/items",
        method="POST",
        headers=[(b"content-type", b"application/json"), (b"content-length", b"40")],
        messages=[
            {"type": "http.request", "body": b'{"name": ', "more_body": True},
            {"type": "http.disconnect"},
        ],
    )
    assert status == 400
    assert json.loads(body)["title"] == "Incomplete request body"
    assert not [e for e in log_stream.entries() if e["level"] == "error"]


@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        ("text/plain", "text/plain"),
        ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
        ("text/json; charset=utf-8", "text/json"),
        (None, "none"),
    ],
)
async def test_a_body_that_is_not_json_is_415(
    client: httpx.AsyncClient, content_type: str | None, named: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/items", content=b'{"name": "x"}', headers=headers)
    body = assert_problem(response, 415)
    assert body["detail"] == f"Send the body as application/json, not {named}"


@pytest.mark.parametrize("content_type", ["application/json", "application/merge-patch+json"])
async def test_json_media_types_are_accepted(client: httpx.AsyncClient, content_type: str) -> None:
    response = await client.put(
        "/raw", content=b"{}", headers={"Content-Type": f"{content_type}; charset=utf-8"}
    )
    assert response.status_code == 200


async def test_responses_carry_the_security_headers(client: httpx.AsyncClient) -> None:
    problem = await client.get("/nowhere")
    assert problem.headers["x-content-type-options"] == "nosniff"
    assert problem.headers["x-frame-options"] == "DENY"
    assert problem.headers["referrer-policy"] == "no-referrer"
    assert problem.headers["cache-control"] == "no-store"
    assert problem.headers["content-security-policy"].startswith("default-src 'none'")


# --- request ids ----------------------------------------------------------------------


@pytest.mark.parametrize("incoming", ["abc-123", "a.b:c_d", "0" * 128])
async def test_well_formed_request_id_echoed(client: httpx.AsyncClient, incoming: str) -> None:
    response = await client.get("/request-id", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] == incoming
    assert response.json() == {"request_id": incoming}
    assert current_request_id() is None  # the context is reset after the request


@pytest.mark.parametrize(
    "incoming", ["evil\ninjected", "evil\n", "x" * 200, "a b", "<script>", "é"]
)
async def test_malformed_request_id_replaced(client: httpx.AsyncClient, incoming: str) -> None:
    response = await client.get(
        "/request-id", headers=[(b"X-Request-ID", incoming.encode("utf-8"))]
    )
    replaced = response.headers["x-request-id"]
    assert replaced != incoming
    assert len(replaced) == 32
    assert response.json() == {"request_id": replaced}


async def test_request_id_generated_when_absent(client: httpx.AsyncClient) -> None:
    first = (await client.get("/request-id")).headers["x-request-id"]
    second = (await client.get("/request-id")).headers["x-request-id"]
    assert first != second
    assert len(first) == 32


async def test_request_id_on_problem_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route", headers={"X-Request-ID": "rid-404"})
    assert response.headers["x-request-id"] == "rid-404"
    assert response.headers.get_list("x-request-id") == ["rid-404"]


# --- access log -----------------------------------------------------------------------


async def test_access_log_uses_route_template(client: httpx.AsyncClient, log_stream: Any) -> None:
    await client.get("/items/42", headers={"X-Request-ID": "rid-1"})
    await client.get("/no/such/route")
    await client.get("/healthz")
    await client.get("/readyz")
    access = [e for e in log_stream.entries() if e["logger"] == "service_kit.access"]
    assert [(e["method"], e["route"], e["status"]) for e in access] == [
        ("GET", "/items/{item_id}", 200),
        ("GET", UNMATCHED_ROUTE, 404),
    ]
    assert access[0]["request_id"] == "rid-1"
    assert access[0]["duration_ms"] >= 0


# --- health ---------------------------------------------------------------------------


async def test_healthz() -> None:
    async def failing() -> str | None:
        raise CheckFailedError("down")

    app = build_app({"db": failing})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://demo.test"
    ) as http:
        response = await http.get("/healthz")
    # Liveness never runs the readiness checks.
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "demo", "checks": {}}


async def test_readyz_ok() -> None:
    async def db() -> str | None:
        return "sqlite"

    app = build_app({"db": db})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://demo.test"
    ) as http:
        response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["db"]["detail"] == "sqlite"


async def test_readyz_names_the_failing_check(failing_checks: Any) -> None:
    app = build_app(failing_checks.async_checks())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://demo.test"
    ) as http:
        response = await http.get("/readyz")
    failing_checks.assert_reported(
        response.status_code, response.headers["cache-control"], response.json(), response.text
    )


# --- OpenAPI helper -------------------------------------------------------------------


def test_openapi_problem_responses() -> None:
    responses = openapi_problem_responses(404, 422)
    assert set(responses) == {404, 422}
    schema = responses[422]["content"][PROBLEM_CONTENT_TYPE]["schema"]
    assert schema["required"] == ["type", "title", "status", "detail", "instance"]
    assert "errors" in schema["properties"]


def test_openapi_document_builds_with_problem_responses() -> None:
    app = FastAPI()
    install(app)

    @app.get("/x", responses=openapi_problem_responses(404))
    async def handler() -> dict[str, str]:
        return {}

    document = app.openapi()
    assert PROBLEM_CONTENT_TYPE in document["paths"]["/x"]["get"]["responses"]["404"]["content"]


# --- telemetry ------------------------------------------------------------------------------

DURATION = "http_server_request_duration_seconds"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


async def _not_ready() -> str:
    raise CheckFailedError("not yet")


def build_instrumented_app(telemetry: Telemetry, readiness: Any = None) -> FastAPI:
    app = FastAPI()
    install(app, max_body_bytes=1024, telemetry=telemetry)
    check = readiness.check_async if readiness is not None else _not_ready
    add_health_routes(app, "demo", lambda request: {"db": check}, telemetry)
    in_flight = {"service_name": telemetry.service, "framework": telemetry.framework}

    @app.post("/things/{thing_id}", status_code=201)
    async def create_thing(thing_id: int, item: Item) -> dict[str, Any]:
        active = metrics.REGISTRY.get_sample_value(
            "http_server_active_requests", {**in_flight, "http_request_method": "POST"}
        )
        return {"id": thing_id, "name": item.name, "active": active}

    @app.get("/things/{thing_id}")
    async def get_thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    @app.api_route("/status/{code}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def status(code: int) -> Response:
        return Response(status_code=code)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET_TEXT)

    @app.get("/oldest")
    async def oldest() -> dict[str, float | None]:
        return {"oldest": metrics.REGISTRY.get_sample_value(OLDEST, in_flight)}

    @app.get("/outgoing")
    async def outgoing() -> dict[str, str]:
        headers: dict[str, str] = {}
        propagate(headers)  # what the kit's client adds to a call to a peer
        return headers

    return app


def serving(app: FastAPI) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return asgi_client(app, base_url="http://demo.test")


async def test_telemetry_records_a_request(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    telemetry = make_telemetry("fastapi")
    body = json.dumps({"name": "tea", "quantity": 2}).encode()
    async with serving(build_instrumented_app(telemetry)) as http:
        response = await http.post(
            "/things/7", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 201
    assert response.json()["active"] == 1  # in flight while the handler ran
    samples.assert_one_request(
        telemetry, "/things/{thing_id}", 201, sent=len(body), answered=len(response.content)
    )


async def test_telemetry_records_errors_under_their_route(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    telemetry = make_telemetry("fastapi")
    async with serving(build_instrumented_app(telemetry)) as http:
        assert (await http.get("/boom")).status_code == 500
        assert (await http.get("/things/not-a-number")).status_code == 422
        assert (await http.get("/no/such/route")).status_code == 404
        too_large = await http.post(
            "/things/1", content=b"x" * 2048, headers={"Content-Type": "application/json"}
        )
        assert too_large.status_code == 413
    found = samples.requests(telemetry.service)
    assert found == {
        ("GET", "/boom", "500"),
        ("GET", "/things/{thing_id}", "422"),
        ("GET", UNMATCHED_ROUTE, "404"),
        ("POST", UNMATCHED_ROUTE, "413"),  # refused before routing
    }


async def test_operational_paths_are_not_counted(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    telemetry = make_telemetry("fastapi")
    async with serving(build_instrumented_app(telemetry)) as http:
        for path in ("/healthz", "/readyz", "/metrics"):
            await http.get(path)
    samples.assert_none_counted(telemetry.service)


async def test_disabled_telemetry_records_nothing_and_metrics_still_answers(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    telemetry = make_telemetry("fastapi", enabled=False)
    async with serving(build_instrumented_app(telemetry)) as http:
        assert (await http.get("/things/3")).status_code == 200
        scrape = await http.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert f'service_name="{telemetry.service}"' not in scrape.text
    samples.assert_none_counted(telemetry.service)


async def test_metrics_route_serves_both_formats(
    make_telemetry: Callable[..., Telemetry],
) -> None:
    telemetry = make_telemetry("fastapi")
    async with serving(build_instrumented_app(telemetry)) as http:
        await http.get("/things/3")
        classic = await http.get("/metrics")
        openmetrics = await http.get("/metrics", headers={"Accept": OPENMETRICS})
    assert classic.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    for response in (classic, openmetrics):
        assert f'service_name="{telemetry.service}"' in response.text


@pytest.mark.parametrize(("flags", "exemplar"), [("01", True), ("00", False)])
async def test_exemplar_points_to_the_request_s_trace(
    make_telemetry: Callable[..., Telemetry], spans: Any, flags: str, exemplar: bool
) -> None:
    telemetry = make_telemetry("fastapi")
    spans.clear()
    async with serving(build_instrumented_app(telemetry)) as http:
        await http.get(
            "/things/3", headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-{flags}"}
        )
        scrape = await http.get("/metrics", headers={"Accept": OPENMETRICS})
    lines = [
        line
        for line in scrape.text.splitlines()
        if line.startswith(f"{DURATION}_bucket") and f'service_name="{telemetry.service}"' in line
    ]
    marked = [line for line in lines if " # {" in line]
    if exemplar:
        (line,) = marked
        assert f'# {{trace_id="{TRACE_ID}"}}' in line
        (server,) = [s for s in spans.get_finished_spans() if s.attributes.get("http.route")]
        assert format(server.context.trace_id, "032x") == TRACE_ID
    else:
        assert lines
        assert marked == []


async def test_cold_start_recorded_on_the_first_passing_readyz(
    make_telemetry: Callable[..., Telemetry],
    samples: Any,
    readiness: Any,
    server_age: Callable[[float], None],
) -> None:
    telemetry = make_telemetry("fastapi")
    server_age(4.5)
    async with serving(build_instrumented_app(telemetry, readiness)) as http:
        assert (await http.get("/readyz")).status_code == 503
        assert samples.series("polyframe_cold_start_seconds", service_name=telemetry.service) == []
        readiness.ready = True
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
    assert samples.value("polyframe_cold_start_seconds", service_name=telemetry.service) == 4.5


async def test_label_cardinality_stays_bounded(
    make_telemetry: Callable[..., Telemetry], samples: Any, odd_traffic: Any
) -> None:
    """Hundreds of distinct raw paths, odd methods and statuses make a handful of series."""
    telemetry = make_telemetry("fastapi")
    traffic = odd_traffic(20260301)
    async with serving(build_instrumented_app(telemetry)) as http:
        for method, path in traffic.requests():
            await http.request(method, path)
        body = (await http.get("/metrics")).text
    series = samples.series(f"{DURATION}_count", service_name=telemetry.service)
    routes = {"/things/{thing_id}", "/status/{code}", UNMATCHED_ROUTE}
    traffic.assert_bounded(series, routes, body, most=60)
    assert {labels["http_response_status_code"] for labels in series} >= {"_OTHER", "599", "418"}
    for name in ("http_server_request_body_size_bytes_count", "http_server_active_requests"):
        assert len(samples.series(name, service_name=telemetry.service)) <= len(routes) * 10


async def test_a_request_without_traceparent_is_one_trace_in_log_span_and_call(
    make_telemetry: Callable[..., Telemetry], spans: Any, log_stream: Any
) -> None:
    async with serving(build_instrumented_app(make_telemetry("fastapi"))) as http:
        spans.clear()
        answer = await http.get("/outgoing")
    (server,) = [s for s in spans.get_finished_spans() if s.name == "GET /outgoing"]
    trace_id = format(server.context.trace_id, "032x")
    (access,) = log_stream.access()
    assert (access["trace_id"], access["span_id"]) == (
        trace_id,
        format(server.context.span_id, "016x"),
    )
    assert trace_id_from(answer.json()["traceparent"]) == trace_id


async def test_a_request_in_flight_is_the_oldest_until_it_ends(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    telemetry = make_telemetry("fastapi")
    service = {"service_name": telemetry.service, "framework": "fastapi"}
    async with serving(build_instrumented_app(telemetry)) as http:
        before = time.time()
        during = (await http.get("/oldest")).json()["oldest"]
        after = time.time()
    assert before <= during <= after
    assert samples.value(OLDEST, **service) == math.inf


async def test_a_problem_for_a_query_that_is_not_utf8_is_not_a_500() -> None:
    """Found by polyframe-fuzz: the problem's ``instance`` came from ``request.url``, which
    decodes the query string as UTF-8 (raw bytes >= 0x80 reach the app through uvicorn), so
    any problem answered to such a request became a 500."""
    status, body = await raw_call(build_app(), "/no/such/route", query=b"\x07\x94")
    assert status == 404
    assert json.loads(body)["instance"] == "/no/such/route"


async def test_a_query_that_is_not_utf8_reaches_the_router_percent_encoded() -> None:
    """Found by polyframe-fuzz: Starlette's trailing-slash redirect builds ``request.url``,
    which decoded such a query as UTF-8 and raised (a 500)."""
    app = FastAPI()
    install(app, max_body_bytes=MAX_BODY)

    @app.get("/things")
    def things(request: Request) -> dict[str, str]:
        return {"query": request.url.query}

    query = b"a=\xfe\xbe&b=%41"
    assert (await raw_call(app, "/things/", query=query))[0] == 307
    status, body = await raw_call(app, "/things", query=query)
    assert status == 200
    assert json.loads(body) == {"query": "a=%FE%BE&b=%41"}


async def test_a_query_that_is_not_utf8_is_no_500_with_tracing_on(
    make_telemetry: Callable[..., Telemetry], spans: Any
) -> None:
    """Found by polyframe-fuzz: OpenTelemetry's middleware, outside the kit's, decoded the
    query as UTF-8 too (a 500 in every deployment, where tracing is on). The query is made
    UTF-8 before it, and the request still makes one server span."""
    telemetry = make_telemetry("fastapi")
    spans.clear()
    status, _ = await raw_call(build_instrumented_app(telemetry), "/things/3", query=b"a=\xfe\xbe")
    assert status == 200
    (server,) = [s for s in spans.get_finished_spans() if s.attributes.get("http.route")]
    assert server.attributes["http.route"] == "/things/{thing_id}"
