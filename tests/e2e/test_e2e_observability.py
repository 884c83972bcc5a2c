"""Observability on the real platform: Prometheus scraping it, traces collected from it.

One local platform of this module, started with ``--workers 2`` (every server
runs two workers, so metrics go through prometheus_client's multiprocess mode),
``--drills`` (the routes that cause each framework's failure on purpose), a
Prometheus scraping every second (Debian's ``prometheus``), and every service
and Traefik exporting traces to an OTLP/HTTP receiver run by this module (it
stands in for a tracing backend; it decodes what they really send: protobuf,
gzip, chunked).

Then, through Traefik: every request is counted once whichever worker served
it; each framework-specific signal, caused for real, moves its metric and makes
its alert's expression true; every dashboard query parses and returns data;
every metric the rules and dashboards use is produced; and one order creation
is one trace across Traefik, Flask, FastAPI, the outbox dispatcher and Django.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from polyframe_testing.tools import unavailable

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "observability" / "prometheus" / "rules"
DASHBOARDS = REPO / "observability" / "grafana" / "dashboards"
#: Grafana's variables, as the live test fills them in (1 s scrapes).
GRAFANA_VARIABLES = {
    "$__rate_interval": "30s",
    "${__rate_interval}": "30s",
    "$__interval": "5s",
    "${__interval}": "5s",
    "$__range": "5m",
    "${__range}": "5m",
    "${namespace}": "local",
    "$namespace": "local",
}
#: Bounds of the waits below (Prometheus scrapes every second; the first scrape of a
#: new target lands after ~6 s), not performance assertions.
DATA_TIMEOUT = 45.0
TRACE_TIMEOUT = 45.0
JWKS = "/api/users/.well-known/jwks.json"
ORDER = {"currency": "EUR", "items": [{"sku": "BOOK-42", "quantity": 1, "unit_price_cents": 2_990}]}


# -- an OTLP/HTTP receiver --------------------------------------------------------------------


@dataclass(frozen=True)
class SpanRecord:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    kind: int
    attributes: dict[str, Any]
    events: tuple[str, ...]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


class OtlpReceiver:
    """Collects the spans POSTed to ``/v1/traces`` (protobuf; gzip and chunked allowed)."""

    def __init__(self) -> None:
        self.spans: list[SpanRecord] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self._body()
                if self.headers.get("Content-Encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def _body(self) -> bytes:
                length = self.headers.get("Content-Length")
                if length is not None:
                    return self.rfile.read(int(length))
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    return b""
                chunks = []
                while True:  # Go's exporter streams without a length: read the chunks
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            self.requests += 1
            for resource_spans in request.resource_spans:
                service = _attributes(resource_spans.resource.attributes).get("service.name", "")
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            SpanRecord(
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_id=span.parent_span_id.hex(),
                                name=span.name,
                                service=str(service),
                                kind=span.kind,
                                attributes=_attributes(span.attributes),
                                events=tuple(event.name for event in span.events),
                            )
                        )

    def trace(self, trace_id: str) -> list[SpanRecord]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_receiver_reads_chunked_and_gzipped_bodies() -> None:
    """The stand-in backend itself: a body as Traefik's Go exporter sends it."""
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value="traefik"))
    )
    span = resource.scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = bytes(range(16)), bytes(range(8)), "EntryPoint"
    payload = gzip.compress(request.SerializeToString())
    with OtlpReceiver() as receiver:

        def chunks() -> Iterator[bytes]:
            yield payload[:10]
            yield payload[10:]

        response = httpx.post(
            f"{receiver.url}/v1/traces",
            content=chunks(),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/x-protobuf"},
        )
        assert response.status_code == 200
        assert "content-length" not in response.request.headers  # it really was chunked
        (received,) = receiver.trace(bytes(range(16)).hex())
        assert (received.name, received.service) == ("EntryPoint", "traefik")


# -- the platform under observation -----------------------------------------------------------


@dataclass
class Observed:
    platform: Any
    prometheus: str
    receiver: OtlpReceiver
    client: httpx.Client
    token: str = ""
    user_id: str = ""
    rules: dict[str, str] = field(default_factory=dict)

    def service_url(self, name: str) -> str:
        return str(self.platform.ready["services"][name])

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200, f"{expr!r}: {body.get('error')}"
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(
        self,
        expr: str,
        accept: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = DATA_TIMEOUT,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        result = self.query(expr)
        while not accept(result):
            if time.monotonic() > deadline:
                pytest.fail(f"no acceptable result for {expr!r} after {timeout:g}s: {result}")
            time.sleep(0.5)
            result = self.query(expr)
        return result


def _alert_rules() -> dict[str, str]:
    alerts: dict[str, str] = {}
    for path in sorted(RULES.glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    alerts[rule["alert"]] = rule["expr"]
    return alerts


@pytest.fixture(scope="module")
def observed(platform_with: Callable[..., Any]) -> Iterator[Observed]:
    if not Path("/usr/bin/prometheus").exists() and not _on_path("prometheus"):
        unavailable("prometheus is missing: apt-get install prometheus")
    with OtlpReceiver() as receiver:
        platform = platform_with(
            "--workers",
            "2",
            "--drills",
            "--scrape-interval",
            "1s",
            "--otlp-endpoint",
            receiver.url,
        )
        assert platform.ready["prometheus"], "polyframe-dev started no Prometheus"
        with httpx.Client(base_url=platform.base_url, timeout=30) as client:
            observed = Observed(platform, platform.ready["prometheus"], receiver, client)
            observed.rules = _alert_rules()
            _some_traffic(observed)
            yield observed


def _on_path(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None


def _some_traffic(observed: Observed) -> None:
    """A little of everything an ordinary day has: the dashboards' data."""
    client = observed.client
    email, password = f"obs-{uuid.uuid4().hex}@example.com", "a long passphrase"
    registered = client.post(
        "/api/users/register", json={"email": email, "password": password, "full_name": "Obs"}
    )
    assert registered.status_code == 201, registered.text
    observed.user_id = registered.json()["id"]
    observed.token = client.post(
        "/api/users/login", json={"email": email, "password": password}
    ).json()["access_token"]
    bearer = {"Authorization": f"Bearer {observed.token}"}
    for _ in range(5):
        assert client.get("/api/users/me", headers=bearer).status_code == 200
        assert client.post("/api/orders", json=ORDER, headers=bearer).status_code == 201
        assert client.get("/api/orders", headers=bearer).status_code == 200
        assert client.get("/api/users/no/such/route").status_code == 404
        assert client.get("/admin/login/").status_code == 200


# -- counting across workers --------------------------------------------------------------------


def _scrape_count(url: str, route: str, method: str, status: str) -> float:
    """``http_server_request_duration_seconds_count`` of one route, from one scrape."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("http_server_request_duration_seconds_count{"):
            continue
        if (
            f'http_route="{route}"' in line
            and f'http_request_method="{method}"' in line
            and f'http_response_status_code="{status}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize(
    ("service", "method", "path", "route"),
    [
        (
            "users-fastapi",
            "GET",
            "/api/users/.well-known/jwks.json",
            "/api/users/.well-known/jwks.json",
        ),
        ("legacy-flask", "GET", "/api/orders/openapi.json", "/api/orders/openapi.json"),
        ("admin-django", "GET", "/admin/login/", "/admin/login/"),
    ],
)
def test_every_request_is_counted_once_whichever_worker_served_it(
    observed: Observed, service: str, method: str, path: str, route: str
) -> None:
    url = observed.service_url(service)
    before = _scrape_count(url, route, method, "200")
    requests = 40
    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent: both workers serve some
        statuses = list(
            pool.map(lambda _: observed.client.request(method, path).status_code, range(requests))
        )
    assert statuses == [200] * requests
    # Several scrapes, each answered by whichever worker: every one sees all requests.
    seen = {_scrape_count(url, route, method, "200") - before for _ in range(6)}
    assert seen == {requests}


# -- the framework-specific signals, caused for real ----------------------------------------------


def _series(result: list[dict[str, Any]], **labels: str) -> list[dict[str, Any]]:
    return [r for r in result if all(r["metric"].get(k) == v for k, v in labels.items())]


def test_a_handler_blocking_the_event_loop_is_named_and_alerts(observed: Observed) -> None:
    route = "/api/users/_drills/block-loop"
    trace_id = uuid.uuid4().hex
    response = observed.client.post(
        f"{route}?ms=400", headers={"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
    )
    assert response.status_code == 200, response.text
    observed.wait_for(
        f'polyframe_event_loop_blocks_total{{http_route="{route}"}}', lambda r: bool(r)
    )
    observed.wait_for(
        observed.rules["PolyframeEventLoopBlocked"], lambda r: bool(_series(r, http_route=route))
    )
    lag = observed.query("max(polyframe_event_loop_lag_seconds_bucket)")
    assert lag, "no event-loop lag histogram"
    # The block is on the request's trace, too.
    deadline = time.monotonic() + TRACE_TIMEOUT
    while time.monotonic() < deadline:
        flagged = [
            span
            for span in observed.receiver.trace(trace_id)
            if span.service == "users-fastapi" and "event_loop.blocked" in span.events
        ]
        if flagged:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"no users-fastapi span of trace {trace_id} carries event_loop.blocked")


def test_a_burst_that_fills_the_thread_pool_alerts_before_and_queues(observed: Observed) -> None:
    """More slow requests than threads: the pool fills, and the rest wait for a thread.

    Prometheus scrapes gunicorn's master (its own metrics port), so it still sees the
    numbers while every worker thread is busy.
    """
    url = observed.service_url("legacy-flask")
    capacity = observed.wait_for('sum(polyframe_worker_threads{service_name="legacy-flask"})', bool)
    threads = int(float(capacity[0]["value"][1]))
    assert threads == 2 * 8, capacity  # --workers 2, 8 threads each
    hold = [f"{url}/api/orders/_drills/hold-thread?ms=6000"] * (threads + 6)
    with ThreadPoolExecutor(max_workers=len(hold)) as pool:
        pending = [pool.submit(httpx.post, target, timeout=60) for target in hold]
        observed.wait_for(
            observed.rules["PolyframeThreadPoolNearExhaustion"],
            lambda r: bool(_series(r, service_name="legacy-flask")),
        )
        # (Nearly) every thread busy at once, seen by a scrape while it lasted. Not
        # always all 16: each worker accepts connections as fast as it can, so one may
        # queue requests beyond its 8 threads while the other still has a free one.
        observed.wait_for(
            'max(max_over_time(polyframe_worker_threads_busy{service_name="legacy-flask"}[1m]))',
            lambda r: bool(r) and float(r[0]["value"][1]) >= 0.8 * threads,
        )
        statuses = [future.result().status_code for future in pending]
    assert statuses == [200] * len(hold)
    # The six requests over capacity waited seconds for a thread.
    observed.wait_for(
        observed.rules["PolyframeRequestQueueing"],
        lambda r: bool(_series(r, service_name="legacy-flask")),
    )
    assert observed.query(
        'sum(polyframe_request_queue_duration_seconds_bucket{service_name="legacy-flask",le="1.0"})'
        ' < sum(polyframe_request_queue_duration_seconds_count{service_name="legacy-flask"})'
    ), "no request waited a second or more for a thread"


def test_an_n_plus_one_view_is_counted_flagged_and_alerts(observed: Observed) -> None:
    route = "/api/audit/_drills/n-plus-one"
    trace_id = uuid.uuid4().hex
    response = observed.client.get(
        f"{route}?n=30", headers={"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"queries": 30}
    observed.wait_for(f'polyframe_db_repeated_queries_total{{http_route="{route}"}}', bool)
    observed.wait_for(
        observed.rules["PolyframeRepeatedQueries"], lambda r: bool(_series(r, http_route=route))
    )
    queries = observed.wait_for(
        f'max(polyframe_db_queries_per_request_sum{{http_route="{route}"}})', bool
    )
    assert float(queries[0]["value"][1]) >= 30
    assert "repeated query" in observed.platform.local.log()
    deadline = time.monotonic() + TRACE_TIMEOUT
    while time.monotonic() < deadline:
        if any(
            "db.repeated_query" in span.events and span.service == "admin-django"
            for span in observed.receiver.trace(trace_id)
        ):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the N+1 is not flagged on trace {trace_id}")


# -- dashboards and rules against the live Prometheus ----------------------------------------------


def _dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr with Grafana's variables filled in) of every panel."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        panels = list(dashboard.get("panels", []))
        while panels:
            panel = panels.pop(0)
            panels.extend(panel.get("panels", []))  # rows hold panels of their own
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if not expr:
                    continue
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                found.append((path.name, panel.get("title", "?"), expr))
    return found


def test_every_dashboard_query_parses_and_returns_data(observed: Observed) -> None:
    queries = _dashboard_queries()
    assert len(queries) >= 20, f"only {len(queries)} dashboard queries"
    _some_traffic(observed)  # fresh data inside every rate window
    empty = []
    deadline = time.monotonic() + DATA_TIMEOUT
    for dashboard, title, expr in queries:
        assert "$" not in expr, f"{dashboard} / {title}: unknown variable in {expr!r}"
        result = observed.query(expr)  # a parse error is an HTTP 400 here
        while not result and time.monotonic() < deadline:
            time.sleep(1)
            result = observed.query(expr)
        if not result:
            empty.append(f"{dashboard} / {title}: {expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def test_every_metric_the_rules_and_dashboards_use_is_produced(observed: Observed) -> None:
    produced = set(
        httpx.get(f"{observed.prometheus}/api/v1/label/__name__/values", timeout=10).json()["data"]
    )
    used: set[str] = set()
    texts = [expr for _, _, expr in _dashboard_queries()]
    for path in RULES.glob("*.yaml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            texts.extend(rule["expr"] for rule in group["rules"])
    # A metric selector: a name followed by ``{`` or standing alone before ``[``, ``)``, …
    for text in texts:
        text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers are not names
        text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
        text = re.sub(r'"[^"]*"', '""', text)
        for match in _NAME.finditer(text):
            name = match.group()
            following = text[match.end() :].lstrip()[:1]
            if following == "(" or name in PROMQL_WORDS or ":" in name:
                continue  # functions, keywords, recording rules (checked by promtool)
            if re.fullmatch(r"\d+[smhdwy]", name) or name.isdigit():
                continue
            used.add(name)
    missing = sorted(used - produced)
    assert not missing, f"used but not produced by the running platform: {missing}"


PROMQL_WORDS = frozenset(
    {
        "and", "or", "unless", "bool", "offset", "inf", "nan", "le", "by", "without", "on",
        "ignoring", "group_left", "group_right", "e", "s", "m", "h", "d", "w", "y", "ms",
    }
)  # fmt: skip


# -- one order, one trace, three frameworks ---------------------------------------------------


def test_one_order_creation_is_one_trace_across_every_hop(
    observed: Observed, service_headers: Any
) -> None:
    bearer = {"Authorization": f"Bearer {observed.token}"}
    reader = service_headers("legacy-flask", of=observed.platform)
    created = observed.client.post("/api/orders", json=ORDER, headers=bearer)
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    # The audit event names the trace (Traefik started it: the client sent no traceparent).
    deadline = time.monotonic() + TRACE_TIMEOUT
    events: list[dict[str, Any]] = []
    while not events and time.monotonic() < deadline:
        listed = observed.client.get(
            "/api/audit/events",
            params={"subject_type": "order", "subject_id": order_id},
            headers=reader,
        )
        assert listed.status_code == 200, listed.text
        events = listed.json()["items"]
        time.sleep(0.3)
    assert events, "the order's audit event never arrived"
    trace_id = events[0]["trace_id"]

    def complete(spans: list[SpanRecord]) -> bool:
        names = {span.name for span in spans}
        return {"audit.deliver order.created", "audit.record order.created"} <= names and {
            "traefik",
            "legacy-flask",
            "users-fastapi",
            "admin-django",
        } <= {span.service for span in spans}

    spans = observed.receiver.trace(trace_id)
    while not complete(spans) and time.monotonic() < deadline:
        time.sleep(0.5)
        spans = observed.receiver.trace(trace_id)
    assert complete(spans), sorted((s.service, s.name) for s in spans)

    by_id = {span.span_id: span for span in spans}
    roots = [span for span in spans if span.parent_id not in by_id]
    assert len(roots) == 1, f"more than one root: {roots}"  # one tree, nothing dangling
    assert roots[0].service == "traefik"

    def ancestors(span: SpanRecord) -> list[SpanRecord]:
        chain = []
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            chain.append(span)
        return chain

    def server(service: str, route: str) -> SpanRecord:
        (found,) = [
            s
            for s in spans
            if s.service == service and s.kind == 2 and s.attributes.get("http.route") == route
        ]
        return found

    flask = server("legacy-flask", "/api/orders")
    fastapi = server("users-fastapi", "/api/users/{user_id}")
    assert ancestors(flask)[0].service == "traefik"
    # FastAPI's server span is under Flask's client call, under Flask's server span.
    assert ancestors(fastapi)[0].service == "legacy-flask"
    assert ancestors(fastapi)[0].kind == 3  # CLIENT (httpx)
    assert flask in ancestors(fastapi)
    (deliver,) = [s for s in spans if s.name == "audit.deliver order.created"]
    (record,) = [s for s in spans if s.name == "audit.record order.created"]
    assert flask in ancestors(deliver)  # the dispatcher joined the request's trace
    assert record.service == "admin-django"
    assert record.parent_id == deliver.span_id
    assert any(s.service == "legacy-flask" and s.name.startswith("INSERT") for s in spans)
