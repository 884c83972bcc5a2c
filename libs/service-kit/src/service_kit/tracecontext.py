"""W3C trace context: the current trace and span, with or without OpenTelemetry.

With instrumentation on, OpenTelemetry's server span holds the trace (continued
from an incoming ``traceparent``, Traefik's or a client's) and its propagator
sends it on; the request cycle takes its trace id into the context variable
(:class:`~service_kit.cycle.RequestCycle`), so a line logged after the span
ended names it too. With instrumentation off, the adapters still keep the incoming
trace id (or make one) in a context variable and the service client sends it
on in a ``traceparent`` of its own. Either way logs carry it and audit events
record it, so one client request is one trace id in every service it touches.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import inject
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags

TRACEPARENT_HEADER = "traceparent"
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

trace_id_var: ContextVar[str | None] = ContextVar("polyframe_trace_id", default=None)


def new_trace_id() -> str:
    return secrets.token_hex(16)


def trace_id_from(traceparent: str | None) -> str | None:
    """The trace id of a valid ``traceparent``; ``None`` for a missing or invalid one."""
    if not traceparent:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip().lower())
    if match is None:
        return None
    version, trace_id, parent_id, _flags = match.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id


def accept_trace_id(traceparent: str | None) -> str:
    return trace_id_from(traceparent) or new_trace_id()


def _span_context() -> SpanContext | None:
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def span_ids(span: Span | None = None) -> tuple[str, str] | None:
    """``(trace id, span id)`` of ``span`` (default: the current one), if it is valid."""
    context = (span or trace.get_current_span()).get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def current_trace_id() -> str | None:
    context = _span_context()
    if context is not None:
        return format(context.trace_id, "032x")
    return trace_id_var.get()


def current_span_id() -> str | None:
    """The current OpenTelemetry span's id (None without instrumentation)."""
    context = _span_context()
    return format(context.span_id, "016x") if context is not None else None


def sampled_span_id() -> str | None:
    """The current span's id if its trace is recorded (so something can join it later)."""
    context = _span_context()
    if context is None or not context.trace_flags.sampled:
        return None
    return format(context.span_id, "016x")


def _remote_parent(trace_id: str, span_id: str) -> Context:
    parent = SpanContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


def start_span_in(
    trace_id: str,
    span_id: str,
    name: str,
    *,
    kind: SpanKind,
    attributes: Mapping[str, str | int],
) -> Span:
    """Start (not activate) a span as a child of span ``span_id`` of trace ``trace_id``.

    How work done later, elsewhere, joins the trace of the request that caused it: an
    audit event's delivery by the outbox dispatcher, and its recording by admin-django.
    The caller ends it. Without tracing, a non-recording span with an invalid context.
    """
    return trace.get_tracer("service_kit").start_span(
        name, context=_remote_parent(trace_id, span_id), kind=kind, attributes=attributes
    )


def propagate(headers: dict[str, str]) -> None:
    """Add the current trace to outgoing ``headers`` (OpenTelemetry's, or the one carried)."""
    if _span_context() is not None:
        inject(headers)
        return
    trace_id = trace_id_var.get()
    if trace_id is not None:
        headers[TRACEPARENT_HEADER] = f"00-{trace_id}-{secrets.token_hex(8)}-01"
