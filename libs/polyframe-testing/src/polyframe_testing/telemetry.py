"""Telemetry in tests: a metric's samples in this process's registry, and the spans this
process finishes (an in-memory exporter added once to a tracer provider)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.samples import Sample

from service_kit import metrics

#: What a deployment that records spans names; set before the tracer provider is made (once
#: per process, by the first app or telemetry set up), so the tests can read the spans.
SAMPLER = ("OTEL_TRACES_SAMPLER", "parentbased_always_on")


def record_spans() -> None:
    """Spans recorded in this process, as in a deployment that names a sampler (unless the
    environment names another)."""
    os.environ.setdefault(*SAMPLER)


def metric_samples(name: str, **labels: str) -> Iterator[Sample]:
    """The samples ``name`` in this process's registry that carry ``labels``."""
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                yield sample


def metric_value(name: str, **labels: str) -> float:
    """The sum of the samples ``name`` in this process's registry that carry ``labels``."""
    return sum(sample.value for sample in metric_samples(name, **labels))


def metric_series(name: str, **labels: str) -> list[dict[str, str]]:
    """Label sets of the samples ``name`` that carry ``labels``."""
    return [sample.labels for sample in metric_samples(name, **labels)]


def exporter_of(
    provider: object, exporter: InMemorySpanExporter | None = None
) -> InMemorySpanExporter:
    """The test exporter on ``provider``: added once (``exporter``, or a new one), then reused.

    A tracer provider can be set once per process, so every suite of a run shares it.
    """
    assert isinstance(provider, TracerProvider), f"no SDK tracer provider set up: {provider}"
    found = getattr(provider, "polyframe_test_exporter", None)
    if found is None:
        found = exporter or InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(found))
        provider.polyframe_test_exporter = found  # type: ignore[attr-defined]
    assert isinstance(found, InMemorySpanExporter)
    return found


def finished_spans() -> InMemorySpanExporter:
    """An exporter of the spans this process finishes from now on (emptied first), on the
    global tracer provider that the app under test set up."""
    exporter = exporter_of(trace.get_tracer_provider())
    exporter.clear()
    return exporter
