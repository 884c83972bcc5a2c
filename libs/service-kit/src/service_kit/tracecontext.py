"""W3C trace context, carried by hand until OpenTelemetry takes over.

Every request gets a trace id: the one in an incoming ``traceparent`` header
(so a client's, or Traefik's, trace continues) or a new one. The service client
sends it on in a ``traceparent`` of its own, logs carry it, and audit events
record it, so one client request is one trace id in every service it touches.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

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


def current_trace_id() -> str | None:
    return trace_id_var.get()


def outgoing_traceparent() -> str | None:
    """A ``traceparent`` continuing the current trace, with a new parent id."""
    trace_id = trace_id_var.get()
    if trace_id is None:
        return None
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"
