"""The service client: retries, idempotency, headers, and failures on real sockets."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from service_kit.client import ClientConfig, ServiceClient, ServiceUnavailableError
from service_kit.context import request_id_var
from service_kit.problems import DEPENDENCY_UNAVAILABLE
from service_kit.telemetry import Telemetry


def config(base_url: str = "http://orders.test", **overrides: object) -> ClientConfig:
    values: dict[str, object] = {
        "peer": "orders",
        "base_url": base_url,
        "caller": "users-fastapi",
        "secret": "s3cr3t-9f2c",
        "timeout_seconds": 2.0,
        "max_attempts": 3,
        "backoff_base_seconds": 0.001,
        "backoff_max_seconds": 0.002,
    }
    values.update(overrides)
    return ClientConfig(**values)  # type: ignore[arg-type]


class Recorder:
    """A MockTransport handler answering from a script; records every request."""

    def __init__(self, *answers: int | type[httpx.TransportError]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, int):
            return httpx.Response(answer, json={"status": answer})
        raise answer("scripted failure", request=request)

    @property
    def calls(self) -> int:
        return len(self.requests)


MakeClient = Callable[..., tuple[ServiceClient, Recorder]]


@pytest.fixture
def sync_client() -> Iterator[MakeClient]:
    clients: list[ServiceClient] = []

    def make(
        *answers: int | type[httpx.TransportError], **overrides: Any
    ) -> tuple[ServiceClient, Recorder]:
        recorder = Recorder(*answers)
        client = ServiceClient(config(**overrides), transport=httpx.MockTransport(recorder))
        clients.append(client)
        return client, recorder

    yield make
    for client in clients:
        client.close()


def decode_basic(header: str) -> str:
    scheme, _, token = header.partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(token).decode()


# --- deterministic transport ---------------------------------------------------------


def test_success_on_first_attempt(sync_client: MakeClient) -> None:
    client, recorder = sync_client(200)
    response = client.request("GET", "/api/orders/1")
    assert response.status_code == 200
    assert response.json() == {"status": 200}
    assert recorder.calls == 1
    assert str(recorder.requests[0].url) == "http://orders.test/api/orders/1"


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
def test_idempotent_methods_retried_on_503(sync_client: MakeClient, method: str) -> None:
    client, recorder = sync_client(503, 503, 200)
    response = client.request(method, "/x")
    assert response.status_code == 200
    assert recorder.calls == 3
    assert all(request.method == method for request in recorder.requests)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_get_gives_up_after_max_attempts(sync_client: MakeClient, status: int) -> None:
    client, recorder = sync_client(status)
    with pytest.raises(ServiceUnavailableError) as caught:
        client.request("GET", "/x")
    assert recorder.calls == 3
    assert caught.value.peer == "orders"
    assert caught.value.reason == f"HTTP {status}"
    assert str(caught.value) == f"orders unavailable: HTTP {status}"


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
def test_max_attempts_respected(sync_client: MakeClient, max_attempts: int) -> None:
    client, recorder = sync_client(503, max_attempts=max_attempts)
    with pytest.raises(ServiceUnavailableError):
        client.request("GET", "/x")
    assert recorder.calls == max_attempts


@pytest.mark.parametrize(
    "error", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError]
)
def test_get_retried_on_transport_error(
    sync_client: MakeClient, error: type[httpx.TransportError]
) -> None:
    client, recorder = sync_client(error, 200)
    assert client.request("GET", "/x").status_code == 200
    assert recorder.calls == 2


def test_connection_error_on_every_attempt(sync_client: MakeClient) -> None:
    client, recorder = sync_client(httpx.ConnectError)
    with pytest.raises(ServiceUnavailableError) as caught:
        client.request("GET", "/x")
    assert recorder.calls == 3
    assert caught.value.reason == "ConnectError"


def test_post_without_idempotency_key_sent_once_on_503(sync_client: MakeClient) -> None:
    client, recorder = sync_client(503, 200)
    with pytest.raises(ServiceUnavailableError):
        client.request("POST", "/api/orders", json={"sku": "a"})
    assert recorder.calls == 1


def test_post_without_idempotency_key_sent_once_on_connection_error(
    sync_client: MakeClient,
) -> None:
    client, recorder = sync_client(httpx.ConnectError, 201)
    with pytest.raises(ServiceUnavailableError) as caught:
        client.request("POST", "/api/orders", json={"sku": "a"})
    assert recorder.calls == 1
    assert caught.value.reason == "ConnectError"


@pytest.mark.parametrize("method", ["PATCH", "post"])
def test_other_methods_not_retried(sync_client: MakeClient, method: str) -> None:
    client, recorder = sync_client(httpx.ReadTimeout, 200)
    with pytest.raises(ServiceUnavailableError):
        client.request(method, "/x")
    assert recorder.calls == 1


@pytest.mark.parametrize("key_header", ["Idempotency-Key", "idempotency-key"])
def test_post_with_idempotency_key_retried(sync_client: MakeClient, key_header: str) -> None:
    client, recorder = sync_client(503, httpx.ConnectError, 201)
    response = client.request("POST", "/api/orders", json={"sku": "a"}, headers={key_header: "k-1"})
    assert response.status_code == 201
    assert recorder.calls == 3
    assert all(request.headers["idempotency-key"] == "k-1" for request in recorder.requests)
    assert all(request.content == b'{"sku":"a"}' for request in recorder.requests)


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422, 429, 500])
def test_client_errors_and_500_returned_without_retry(sync_client: MakeClient, status: int) -> None:
    client, recorder = sync_client(status, 200)
    response = client.request("GET", "/x")
    assert response.status_code == status
    assert recorder.calls == 1


def test_authorization_carries_caller_and_secret(sync_client: MakeClient) -> None:
    client, recorder = sync_client(200)
    client.request("GET", "/x")
    request = recorder.requests[0]
    assert decode_basic(request.headers["Authorization"]) == "users-fastapi:s3cr3t-9f2c"
    assert request.headers["User-Agent"] == "polyframe-users-fastapi"


def test_no_authorization_without_secret(sync_client: MakeClient) -> None:
    client, recorder = sync_client(200, secret=None)
    client.request("GET", "/x")
    assert "Authorization" not in recorder.requests[0].headers


def test_request_id_propagated_from_context(sync_client: MakeClient) -> None:
    client, recorder = sync_client(503, 200)
    token = request_id_var.set("req-abc-123")
    try:
        client.request("GET", "/x")
    finally:
        request_id_var.reset(token)
    client.request("GET", "/y")
    first, retry, outside = recorder.requests
    assert first.headers["X-Request-ID"] == "req-abc-123"
    assert retry.headers["X-Request-ID"] == "req-abc-123"
    assert "X-Request-ID" not in outside.headers


def test_acting_for_added(sync_client: MakeClient) -> None:
    client, recorder = sync_client(200)
    client.request("DELETE", "/api/users/7", acting_for="alice@example.org")
    client.request("GET", "/api/users/7")
    assert recorder.requests[0].headers["X-Acting-For"] == "alice@example.org"
    assert "X-Acting-For" not in recorder.requests[1].headers


def test_caller_headers_and_kwargs_passed(sync_client: MakeClient) -> None:
    client, recorder = sync_client(200)
    client.request("GET", "/search", headers={"Accept": "text/csv"}, params={"q": "a b"})
    request = recorder.requests[0]
    assert request.headers["Accept"] == "text/csv"
    assert request.url.params["q"] == "a b"


def test_timeout_always_set(sync_client: MakeClient) -> None:
    client, recorder = sync_client(200, timeout_seconds=2.5)
    client.request("GET", "/x")
    timeout = recorder.requests[0].extensions["timeout"]
    assert timeout == {"connect": 1.0, "read": 2.5, "write": 2.5, "pool": 2.5}


def test_short_timeout_bounds_connect_too(sync_client: MakeClient) -> None:
    client, recorder = sync_client(200, timeout_seconds=0.3)
    client.request("GET", "/x")
    assert recorder.requests[0].extensions["timeout"]["connect"] == 0.3


def test_unavailable_as_problem() -> None:
    problem = ServiceUnavailableError("orders", "HTTP 503").as_problem().problem
    assert problem.status == 503
    assert problem.type == DEPENDENCY_UNAVAILABLE
    assert "orders" in (problem.detail or "")
    assert "HTTP 503" not in (problem.detail or "")
    assert problem.headers["Retry-After"].isdigit()


# --- real sockets on 127.0.0.1 ------------------------------------------------------


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 but not listening: connecting is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


class _SlowHandler(BaseHTTPRequestHandler):
    release: threading.Event
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        # Answer only once the test is over (or after a generous cap).
        self.release.wait(10)
        try:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        except OSError:
            pass  # the client gave up long ago

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def slow_server() -> Iterator[tuple[str, list[str]]]:
    release = threading.Event()
    hits: list[str] = []
    handler = type("Handler", (_SlowHandler,), {"release": release, "hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_real_refused_connection_is_unavailable(refusing_port: int) -> None:
    client = ServiceClient(config(f"http://127.0.0.1:{refusing_port}"))
    try:
        with pytest.raises(ServiceUnavailableError) as caught:
            client.request("GET", "/healthz")
    finally:
        client.close()
    assert caught.value.reason == "ConnectError"


def test_real_slow_server_times_out(slow_server: tuple[str, list[str]]) -> None:
    base_url, hits = slow_server
    client = ServiceClient(config(base_url, timeout_seconds=0.2, max_attempts=2))
    try:
        with pytest.raises(ServiceUnavailableError) as caught:
            client.request("GET", "/slow")
    finally:
        client.close()
    assert caught.value.reason == "ReadTimeout"
    assert hits[0] == "/slow"


# --- telemetry: each attempt measured, retries counted, the trace carried ----------------------

CLIENT_DURATION = "http_client_request_duration_seconds_count"


def attempts(samples: Any, telemetry: Telemetry) -> dict[tuple[str, str, str], float]:
    """``{(method, status, error): attempts}`` towards the ``orders`` peer."""
    return {
        (s["http_request_method"], s["http_response_status_code"], s["error_type"]): samples.value(
            CLIENT_DURATION, **s
        )
        for s in samples.series(CLIENT_DURATION, service_name=telemetry.service)
        if s["peer_service"] == "orders"
    }


def retries(samples: Any, telemetry: Telemetry) -> dict[str, float]:
    return {
        s["reason"]: samples.value("http_client_retries_total", **s)
        for s in samples.series("http_client_retries_total", service_name=telemetry.service)
    }


def instrumented_client(
    telemetry: Telemetry, *answers: int | type[httpx.TransportError], **overrides: Any
) -> tuple[ServiceClient, Recorder]:
    recorder = Recorder(*answers)
    client = ServiceClient(
        config(**overrides), transport=httpx.MockTransport(recorder), telemetry=telemetry
    )
    return client, recorder


def test_each_attempt_measured_with_its_status(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    telemetry = make_telemetry("flask")
    client, _ = instrumented_client(telemetry, 503, 502, 200)
    try:
        assert client.request("GET", "/api/orders/1").status_code == 200
    finally:
        client.close()
    assert attempts(samples, telemetry) == {
        ("GET", "503", ""): 1,
        ("GET", "502", ""): 1,
        ("GET", "200", ""): 1,
    }
    assert retries(samples, telemetry) == {"HTTP 503": 1, "HTTP 502": 1}


def test_transport_errors_labelled_by_their_class(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    telemetry = make_telemetry("flask")
    client, _ = instrumented_client(telemetry, httpx.ConnectError, httpx.ReadTimeout, 404)
    try:
        assert client.request("DELETE", "/api/orders/1").status_code == 404
    finally:
        client.close()
    assert attempts(samples, telemetry) == {
        ("DELETE", "", "ConnectError"): 1,
        ("DELETE", "", "ReadTimeout"): 1,
        ("DELETE", "404", ""): 1,
    }
    assert retries(samples, telemetry) == {"ConnectError": 1, "ReadTimeout": 1}


def test_a_call_sent_once_is_measured_once(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    telemetry = make_telemetry("flask")
    client, _ = instrumented_client(telemetry, 503)
    try:
        with pytest.raises(ServiceUnavailableError):
            client.request("POST", "/api/orders", json={})
    finally:
        client.close()
    assert attempts(samples, telemetry) == {("POST", "503", ""): 1}
    assert retries(samples, telemetry) == {}


def test_retried_failures_of_both_kinds_measured_then_the_success(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    telemetry = make_telemetry("flask")
    client, _ = instrumented_client(telemetry, httpx.ConnectError, 504, 201)
    try:
        response = client.request("PUT", "/api/orders/1", json={})
    finally:
        client.close()
    assert response.status_code == 201
    assert attempts(samples, telemetry) == {
        ("PUT", "", "ConnectError"): 1,
        ("PUT", "504", ""): 1,
        ("PUT", "201", ""): 1,
    }
    assert retries(samples, telemetry) == {"ConnectError": 1, "HTTP 504": 1}


def test_a_new_client_charts_a_closed_circuit_and_no_rejection(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    """Before any call: a series to chart and alert on (0), not "no data" until the first trip."""
    telemetry = make_telemetry("flask")
    client, _ = instrumented_client(telemetry, 200)
    client.close()
    for name in ("http_client_circuit_state", "http_client_circuit_rejections_total"):
        (labels,) = samples.series(name, service_name=telemetry.service)
        assert samples.value(name, **labels) == 0, name


def test_disabled_telemetry_measures_nothing(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    telemetry = make_telemetry("flask", enabled=False)
    client, _ = instrumented_client(telemetry, 503, 200)
    try:
        client.request("GET", "/x")
    finally:
        client.close()
    for name in (CLIENT_DURATION, "http_client_retries_total", "http_client_circuit_state"):
        assert samples.series(name, service_name=telemetry.service) == []


def test_each_attempt_is_a_client_span_of_the_caller_s_trace(
    make_telemetry: Callable[..., Telemetry], spans: Any
) -> None:
    telemetry = make_telemetry("flask")
    client, recorder = instrumented_client(telemetry, 503, 200)
    spans.clear()
    try:
        with trace.get_tracer("tests").start_as_current_span("server") as server:
            client.request("GET", "/api/orders/1")
    finally:
        client.close()
    context = server.get_span_context()
    calls = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(calls) == 2
    assert [s.attributes["http.response.status_code"] for s in calls] == [503, 200]
    for span, request in zip(calls, recorder.requests, strict=True):
        assert span.context.trace_id == context.trace_id
        assert span.parent is not None
        assert span.parent.span_id == context.span_id
        # The peer continues the trace under this attempt's span.
        _version, trace_id, parent_id, flags = request.headers["traceparent"].split("-")
        assert trace_id == format(context.trace_id, "032x")
        assert parent_id == format(span.context.span_id, "016x")
        assert int(flags, 16) & 0x01  # sampled
