"""Fixtures shared by the service-kit tests."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from polyframe_testing.logs import loggers_restored
from polyframe_testing.telemetry import exporter_of, metric_series, metric_value, record_spans
from service_kit import telemetry
from service_kit.logs import ACCESS_LOGGERS, QUIET_LOGGERS, SERVER_LOGGERS
from service_kit.telemetry import Telemetry

_TOUCHED = ("", *SERVER_LOGGERS, *ACCESS_LOGGERS, *QUIET_LOGGERS)


def pytest_configure(config: pytest.Config) -> None:
    record_spans()


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A buffer for ``configure_logging``; every logger it touches is put back afterwards."""
    with loggers_restored(_TOUCHED):
        yield io.StringIO()


# -- telemetry: spans in memory, metric samples ----------------------------------------------


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """The kit's tracer provider, set up as every service process sets it up, exporting here.

    OpenTelemetry's global provider can be set once per process, and the service suites
    in the same run set it up through :func:`service_kit.telemetry.setup` too: so the
    exporter is added to that one provider, once (whichever suite's fixture comes first).
    """
    telemetry.setup("service-kit-tests", "tests")
    providers = {id(p): p for p in (telemetry.tracer_provider(), trace.get_tracer_provider())}
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
