"""Fixtures shared by the service-kit tests."""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service_kit import metrics, telemetry
from service_kit.logs import ACCESS_LOGGERS, QUIET_LOGGERS, SERVER_LOGGERS
from service_kit.telemetry import Telemetry
from service_kit.testing import metric_value

_TOUCHED = ("", *SERVER_LOGGERS, *ACCESS_LOGGERS, *QUIET_LOGGERS)
#: Spans are recorded in these tests as in a deployment that names a sampler (or exports):
#: the tracer provider is made once per process, by whichever test sets telemetry up first.
SAMPLER = ("OTEL_TRACES_SAMPLER", "parentbased_always_on")


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault(*SAMPLER)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A buffer for ``configure_logging``; every logger it touches is put back afterwards."""
    saved = {}
    for name in _TOUCHED:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
    buffer = io.StringIO()
    try:
        yield buffer
    finally:
        for name, (handlers, level, propagate, disabled) in saved.items():
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            for handler in handlers:
                logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled


@pytest.fixture
def logging_snapshot() -> Iterator[None]:
    """Put back every existing logger, for tests that run ``logging.config.dictConfig``.

    ``dictConfig`` reaches beyond the loggers it names: it replaces the root handlers,
    re-enables every other existing logger and resets children of the configured ones.
    """
    manager = logging.Logger.manager
    loggers = [logging.getLogger()] + [
        logger for logger in manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    saved = [
        (logger, list(logger.handlers), logger.level, logger.propagate, logger.disabled)
        for logger in loggers
    ]
    try:
        yield
    finally:
        for logger, handlers, level, propagate, disabled in saved:
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            for handler in handlers:
                logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled


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
        assert isinstance(provider, TracerProvider), provider
        found = getattr(provider, "polyframe_test_exporter", None)
        if found is None:
            found = exporter or InMemorySpanExporter()
            provider.add_span_processor(SimpleSpanProcessor(found))
            provider.polyframe_test_exporter = found  # type: ignore[attr-defined]
        exporter = found
    assert exporter is not None
    return exporter


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    """The finished spans of this test (and only this test's)."""
    span_exporter.clear()
    return span_exporter


class Samples:
    """Reads the metric catalogue's registry (this process, single-process mode)."""

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` that carry ``labels`` (0 if none exists)."""
        return metric_value(name, **labels)

    def series(self, name: str, **labels: str) -> list[dict[str, str]]:
        """Label sets of the samples called ``name`` that carry ``labels``."""
        return [
            sample.labels
            for family in metrics.REGISTRY.collect()
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        ]


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
