"""Fixtures shared by the service-kit tests."""

from __future__ import annotations

import io
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from polyframe_testing.logs import loggers_restored
from polyframe_testing.telemetry import exporter_of, metric_series, metric_value, record_spans
from service_kit import runtime, telemetry, tracing
from service_kit.health import CheckFailedError
from service_kit.logs import ACCESS_LOGGERS, QUIET_LOGGERS, SERVER_LOGGERS, configure_logging
from service_kit.metrics import KNOWN_METHODS, OTHER
from service_kit.telemetry import Telemetry

DURATION = "http_server_request_duration_seconds"
_TOUCHED = ("", *SERVER_LOGGERS, *ACCESS_LOGGERS, *QUIET_LOGGERS)


def pytest_configure(config: pytest.Config) -> None:
    record_spans()


class LogBuffer(io.StringIO):
    """What ``configure_logging`` wrote, read back."""

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines()]

    def access(self) -> list[dict[str, Any]]:
        """The access-log lines (one per request, written by the kit's request cycle)."""
        return [entry for entry in self.entries() if entry["logger"] == "service_kit.access"]

    def unhandled(self, method: str, path: str, error: str, secret: str) -> dict[str, Any]:
        """The one error line of an unhandled exception: what and where, with the ``secret``
        of its message, which only the log may hold."""
        (logged,) = [e for e in self.entries() if e["logger"] == "service_kit.errors"]
        assert logged["level"] == "error"
        assert logged["message"] == "unhandled exception"
        assert (logged["method"], logged["path"]) == (method, path)
        assert logged["error"]["type"] == error
        assert secret in logged["error"]["stack"]
        return logged


@pytest.fixture(scope="module")
def django_configured() -> Iterator[None]:
    """Django's settings as this process has them (admin-django's suite configures Django for
    the whole run in its ``pytest_configure``); a minimal set, removed after the module, if
    none: Django is left as unconfigured as it was."""
    from django.conf import settings
    from django.utils.functional import empty

    if settings.configured:
        yield
        return
    settings.configure(ALLOWED_HOSTS=["testserver"])
    try:
        yield
    finally:
        settings._wrapped = empty  # unconfigured again, for whoever configures Django next


@pytest.fixture
def stream() -> Iterator[LogBuffer]:
    """A buffer for ``configure_logging``; every logger it touches is put back afterwards."""
    with loggers_restored(_TOUCHED):
        yield LogBuffer()


@pytest.fixture
def log_stream(stream: LogBuffer) -> LogBuffer:
    """JSON logs of the app under test (service "demo"), into the restoring buffer."""
    configure_logging("demo", stream=stream)
    return stream


# -- telemetry: spans in memory, metric samples ----------------------------------------------


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """The kit's tracer provider, set up as every service process sets it up, exporting here.

    OpenTelemetry's global provider can be set once per process, and the service suites
    in the same run set it up through :func:`service_kit.telemetry.setup` too: so the
    exporter is added to that one provider, once (whichever suite's fixture comes first).
    """
    telemetry.setup("service-kit-tests", "tests")
    providers = {id(p): p for p in (tracing.tracer_provider(), trace.get_tracer_provider())}
    exporter: InMemorySpanExporter | None = None
    for provider in providers.values():
        exporter = exporter_of(provider, exporter)
    assert exporter is not None
    return exporter


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    """The finished spans of this test (and only this test's)."""
    span_exporter.clear()
    return span_exporter


class Samples:
    """Reads the metric catalogue's registry (this process, single-process mode)."""

    #: The sum of the samples called ``name`` that carry ``labels`` (0 if none exists).
    value = staticmethod(metric_value)
    #: Label sets of the samples called ``name`` that carry ``labels``.
    series = staticmethod(metric_series)

    def requests(self, service: str) -> set[tuple[str, str, str]]:
        """``(method, route, status)`` of every request ``service`` counted."""
        return {
            (s["http_request_method"], s["http_route"], s["http_response_status_code"])
            for s in self.series(f"{DURATION}_count", service_name=service)
        }

    def assert_none_counted(self, service: str) -> None:
        """No request of ``service`` counted, none in flight."""
        assert self.series(f"{DURATION}_count", service_name=service) == []
        assert self.series("http_server_active_requests", service_name=service) == []

    def assert_one_request(
        self, telemetry: Telemetry, route: str, status: int, *, sent: int, answered: int
    ) -> None:
        """``telemetry`` saw one POST to ``route``: counted once, no longer in flight, and
        its body sizes (``sent`` by the client, ``answered`` by the app)."""
        labels = {
            "service_name": telemetry.service,
            "framework": telemetry.framework,
            "http_request_method": "POST",
            "http_route": route,
        }
        assert self.series(f"{DURATION}_count", service_name=telemetry.service) == [
            {**labels, "http_response_status_code": str(status)}
        ]
        assert self.value(f"{DURATION}_count", **labels) == 1
        assert self.value("http_server_active_requests", **labels) == 0
        assert self.value("http_server_request_body_size_bytes_sum", **labels) == sent
        assert self.value("http_server_response_body_size_bytes_sum", **labels) == answered


@pytest.fixture
def samples() -> Samples:
    return Samples()


@pytest.fixture
def make_telemetry(span_exporter: InMemorySpanExporter) -> Callable[..., Telemetry]:
    """``make_telemetry("flask")``: telemetry of a service name no other test uses, so its
    series start empty (the registry is process-wide).

    Tracing is set up first, as a service's process does before it instruments anything
    (:func:`~service_kit.telemetry.setup` opts in to the stable HTTP semantic conventions,
    which OpenTelemetry's instrumentations read once, when the first of them starts).
    """

    def make(framework: str = "tests", **kwargs: Any) -> Telemetry:
        return Telemetry(f"svc-{uuid.uuid4().hex[:12]}", framework, **kwargs)

    return make


class OddTraffic:
    """Requests a label must not grow with: distinct raw paths (each with a token of its
    own), odd methods and odd statuses; then the check that the series stayed bounded."""

    #: Methods a client may send: the standard ones, lower case, and inventions.
    METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "PURGE", "BREW", "get")
    STATUSES = (200, 201, 204, 302, 404, 418, 429, 500, 503, 599, 600, 999)
    #: Paths of an app with the routes ``/things/{thing_id}`` and ``/status/{code}``.
    PATHS = (
        "/things/{number}?q={token}",
        "/things/{token}",
        "/status/{status}?t={token}",
        "/nowhere/{token}",
        "/{token}/things/1",
    )

    def __init__(self, seed: int, statuses: Sequence[int] = STATUSES) -> None:
        self.rng = random.Random(seed)
        self.statuses = statuses
        self.tokens: list[str] = []

    def requests(self, paths: Sequence[str] = PATHS, count: int = 300) -> Iterator[tuple[str, str]]:
        """``(method, path)``: a path of ``paths`` with its ``{token}``, ``{number}`` and
        ``{status}`` filled in."""
        for _ in range(count):
            token = f"{self.rng.getrandbits(48):012x}"
            self.tokens.append(token)
            number, status = self.rng.randrange(10**9), self.rng.choice(self.statuses)
            path = self.rng.choice(paths).format(token=token, number=number, status=status)
            yield self.rng.choice(self.METHODS), path

    def assert_bounded(
        self, series: list[dict[str, str]], routes: set[str], scrape: str, *, most: int
    ) -> None:
        """Every series of the duration histogram has a route template, a known (or
        ``_OTHER``) method and status; a handful of them; no token in the scrape."""
        odd_statuses = any(not 100 <= status <= 599 for status in self.statuses)
        for labels in series:
            assert labels["http_route"] in routes
            assert labels["http_request_method"] in {*KNOWN_METHODS, OTHER}
            code = labels["http_response_status_code"]
            assert (odd_statuses and code == OTHER) or 100 <= int(code) <= 599
        assert {labels["http_request_method"] for labels in series} >= {OTHER, "GET"}
        assert len(series) <= most  # from hundreds of distinct paths
        assert not any(token in scrape for token in self.tokens)


@pytest.fixture
def odd_traffic() -> type[OddTraffic]:
    return OddTraffic


class Readiness:
    """A readiness check the test turns on and off (``check_async`` for an ASGI app)."""

    def __init__(self) -> None:
        self.ready = False

    def check(self) -> str:
        if not self.ready:
            raise CheckFailedError("not yet")
        return "ok"

    async def check_async(self) -> str:
        return self.check()


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


#: The problem fields of the answer to a body that is not JSON at all, in every adapter.
MALFORMED_BODY_ANSWER = {
    "type": "urn:polyframe:problem:malformed-body",
    "title": "Malformed request body",
    "detail": "The request body is not valid JSON",
    "errors": [
        {
            "field": "",
            "location": "body",
            "pointer": "#",
            "detail": "The body is not valid JSON",
            "code": "json_invalid",
        }
    ],
}


@pytest.fixture
def malformed_body_answer() -> dict[str, Any]:
    return MALFORMED_BODY_ANSWER


@pytest.fixture
def quantity_error() -> dict[str, str]:
    """The field error (but its wording) of a body whose ``quantity`` must be over 0."""
    return {
        "field": "quantity",
        "location": "body",
        "pointer": "#/quantity",
        "code": "greater_than",
    }


@pytest.fixture
def server_age(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """``server_age(4.5)``: the server is 4.5 s old when first asked, a minute later on."""

    def patch(first: float) -> None:
        ages = iter([first, 60.0])
        monkeypatch.setattr(runtime, "server_age", lambda: next(ages))

    return patch


class FailingChecks:
    """Readiness checks of which two fail, one with a secret in its error; then the check
    that ``/readyz`` names them, and only them, without the secret."""

    @staticmethod
    def db() -> str | None:
        return None

    @staticmethod
    def migrations() -> str | None:
        raise CheckFailedError("database at revision none, code expects abc")

    @staticmethod
    def cache() -> str | None:
        raise ConnectionError("redis://:hunter2@cache:6379 refused")

    def checks(self) -> dict[str, Callable[[], str | None]]:
        return {"db": self.db, "migrations": self.migrations, "cache": self.cache}

    def async_checks(self) -> dict[str, Callable[[], Awaitable[str | None]]]:
        def wrap(check: Callable[[], str | None]) -> Callable[[], Awaitable[str | None]]:
            async def run() -> str | None:
                return check()

            return run

        return {name: wrap(check) for name, check in self.checks().items()}

    @staticmethod
    def assert_reported(status: int, cache_control: str, body: dict[str, Any], text: str) -> None:
        assert status == 503
        assert cache_control == "no-store"
        assert body["status"] == "fail"
        assert body["service"] == "demo"
        assert body["checks"]["db"]["status"] == "ok"
        assert body["checks"]["migrations"] == {
            "status": "fail",
            "detail": "database at revision none, code expects abc",
            "duration_ms": body["checks"]["migrations"]["duration_ms"],
        }
        assert body["checks"]["cache"]["status"] == "fail"
        assert body["checks"]["cache"]["detail"] == "ConnectionError"
        assert "hunter2" not in text


@pytest.fixture
def failing_checks() -> FailingChecks:
    return FailingChecks()
