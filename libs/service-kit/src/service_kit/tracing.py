"""Tracing of one service process: OpenTelemetry's provider from the ``OTEL_*`` variables.

Made only when an OTLP endpoint or a sampler is configured (nothing would collect
spans otherwise); see docs/architecture.md, "service_kit: the request cycle and telemetry".
"""

from __future__ import annotations

import atexit
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from service_kit.runtime import version

#: URLs no span is made for (comma-separated regexes, as the instrumentations take them).
UNTRACED_URLS = "healthz,readyz,metrics"

_tracer_provider: TracerProvider | None = None


def wanted() -> bool:
    """Does the environment ask for spans (an exporter, or an explicit sampler)?"""
    return exporter_configured() or bool(os.environ.get("OTEL_TRACES_SAMPLER"))


def start(service: str) -> None:
    """This process's tracer provider, made once (the caller holds the set-up lock)."""
    global _tracer_provider
    if _tracer_provider is not None:
        return
    # The stable HTTP semantic conventions (http.route, http.response.status_code, …).
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    attributes: dict[str, Any] = {SERVICE_VERSION: version(service)}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = service
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter_configured():
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer_provider = provider
    # The last spans of a worker that exits are sent, not lost.
    atexit.register(provider.shutdown)


def exporter_configured() -> bool:
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def tracer_provider() -> TracerProvider | None:
    """This process's provider, or None when tracing is off."""
    return _tracer_provider


def flush(timeout_millis: int = 5_000) -> None:
    """Send the spans still buffered (before a worker exits, or in tests)."""
    if _tracer_provider is not None:
        _tracer_provider.force_flush(timeout_millis)
