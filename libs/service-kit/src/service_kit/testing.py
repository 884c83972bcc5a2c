"""Helpers the test suites of all services share (imported by tests only).

* PostgreSQL: a fresh, uniquely named database per test run, created on the
  server named by ``POLYFRAME_TEST_POSTGRES`` (default: the CI machine's
  ``postgresql://postgres@127.0.0.1:5432/test``) and dropped afterwards.
* Tools: where a test needs something the machine may lack (PostgreSQL, a
  binary), it is skipped locally, but with ``POLYFRAME_STRICT_TOOLS=1`` (set by
  ``.ci/run`` in CI) the absence fails the test instead.
* Telemetry: a metric's value in this process's registry, and the spans this process
  finished (an in-memory exporter on the tracer provider the app set up).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service_kit import metrics

ADMIN_URL = os.environ.get("POLYFRAME_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def strict_tools() -> bool:
    return os.environ.get("POLYFRAME_STRICT_TOOLS") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip locally; fail where the tool is required (CI)."""
    if strict_tools():
        pytest.fail(f"{reason} (required: POLYFRAME_STRICT_TOOLS=1)", pytrace=False)
    pytest.skip(reason)


@contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """Create an empty database; yield its URL (``postgresql://…``, no driver); drop it."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dev dependency
        unavailable("psycopg is not installed")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL is not reachable at {ADMIN_URL}: {str(exc).strip()[:120]}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def metric_value(name: str, **labels: str) -> float:
    """The sum of the samples ``name`` in this process's registry that carry ``labels``."""
    return sum(
        sample.value
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def finished_spans() -> InMemorySpanExporter:
    """An exporter of the spans this process finishes from now on (emptied first).

    Added once to the global tracer provider, which the app under test set up (a
    provider can be set once per process); every later call clears and reuses it.
    """
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), f"no SDK tracer provider set up: {provider}"
    exporter = getattr(provider, "polyframe_test_exporter", None)
    if exporter is None:
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        provider.polyframe_test_exporter = exporter  # type: ignore[attr-defined]
    assert isinstance(exporter, InMemorySpanExporter)
    exporter.clear()
    return exporter
