"""Telemetry of one service process: the requests the adapters record, and its set-up.

``setup(...)`` runs in each worker after the fork and starts tracing
(:mod:`service_kit.tracing`) and runtime sampling (:mod:`service_kit.runtime`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from service_kit import dbstats, limits, metrics, runtime, tracing

# Re-exported for the kit's client and outbox, which take them from here.
from service_kit.tracing import tracer_provider

if TYPE_CHECKING:
    from service_kit.settings import ServiceSettings

log = logging.getLogger("service_kit.telemetry")


@dataclass(slots=True)
class RequestState:
    """One request in flight, from :meth:`Telemetry.start_request` to ``finish_request``."""

    method: str
    started: float
    span: trace.Span
    db: dbstats.QueryStats
    end_db: Callable[[], None]
    #: The route template, once the framework has matched one (the loop monitor reads it).
    route: str | None = None
    #: The database part was finished early, while the server span still recorded.
    db_done: bool = False
    #: Unix time it started (for the oldest request in flight).
    started_unix: float = 0.0


@dataclass
class Telemetry:
    """What one framework adapter records into, bound to its service and framework."""

    service: str
    framework: str
    enabled: bool = True
    repeated_query_threshold: int = dbstats.DEFAULT_REPEATED_QUERY_THRESHOLD
    _labels: tuple[str, str] = field(init=False)
    _ready: bool = field(default=False, init=False)
    _in_flight: InFlight | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._labels = (self.service, self.framework)
        if self.enabled:
            self._in_flight = InFlight(metrics.OLDEST_REQUEST_START.labels(*self._labels))
            for limit in limits.LIMITS:  # every limit's series exists from the start, at 0
                metrics.INPUT_REJECTED.labels(*self._labels, limit)

    @property
    def tracing(self) -> bool:
        """Are spans made in this process (an exporter, or a sampler, was configured)?"""
        return self.enabled and tracer_provider() is not None

    @property
    def labels(self) -> tuple[str, str]:
        """``(service_name, framework)``: the first two labels of every metric."""
        return self._labels

    # -- HTTP server ---------------------------------------------------------------------------

    def start_request(self, method: str, started: float | None = None) -> RequestState | None:
        """A request arrived at ``started`` (``time.perf_counter()``; default: now).

        None when instrumentation is off.
        """
        if not self.enabled:
            return None
        method = metrics.method_label(method)
        metrics.HTTP_SERVER_ACTIVE.labels(*self._labels, method).inc()
        db, end_db = dbstats.begin()
        now = time.perf_counter()
        if started is None:
            started = now
        state = RequestState(method, started, trace.get_current_span(), db, end_db)
        state.started_unix = time.time() - (now - started)
        if self._in_flight is not None:
            self._in_flight.add(state)
        return state

    def finish_request(
        self,
        state: RequestState | None,
        *,
        route: str | None,
        status: int,
        request_bytes: int | None,
        response_bytes: int | None,
    ) -> None:
        if state is None:
            return
        seconds = time.perf_counter() - state.started
        if self._in_flight is not None:
            self._in_flight.remove(state)
        method, route = state.method, metrics.route_label(route)
        metrics.HTTP_SERVER_ACTIVE.labels(*self._labels, method).dec()
        metrics.HTTP_SERVER_DURATION.labels(
            *self._labels, method, route, metrics.status_label(status)
        ).observe(seconds, exemplar=_exemplar(state.span))
        if request_bytes is not None:
            metrics.HTTP_SERVER_REQUEST_SIZE.labels(*self._labels, method, route).observe(
                request_bytes
            )
        if response_bytes is not None:
            metrics.HTTP_SERVER_RESPONSE_SIZE.labels(*self._labels, method, route).observe(
                response_bytes
            )
        self.finish_database(state, route)

    def input_rejected(self, limit: str) -> None:
        """A request refused for going past ``limit`` (one of :data:`limits.LIMITS`)."""
        if self.enabled:
            metrics.INPUT_REJECTED.labels(*self._labels, limit).inc()

    def finish_database(self, state: RequestState, route: str) -> None:
        """Queries and time of the request, and N+1 detection (flagged on ``state.span``).

        ``finish_request`` does it unless an adapter did it earlier, while the span was
        still recording (Django's, whose span ends in a middleware inside the kit's).
        """
        if state.db_done:
            return
        state.db_done = True
        state.end_db()
        stats = state.db
        metrics.DB_QUERIES_PER_REQUEST.labels(*self._labels, route).observe(stats.queries)
        metrics.DB_TIME_PER_REQUEST.labels(*self._labels, route).observe(stats.seconds)
        repeated = stats.most_repeated()
        if repeated is None or repeated[1] <= self.repeated_query_threshold:
            return
        sql, count = repeated
        metrics.DB_REPEATED_QUERIES.labels(*self._labels, route).inc()
        attributes: dict[str, str | int] = {
            "db.repeated_query.count": count,
            "db.repeated_query.shape": sql[:500],
            "db.query.count": stats.queries,
        }
        state.span.add_event("db.repeated_query", attributes)
        state.span.set_attribute("db.repeated_query.count", count)
        log.warning(
            "repeated query (N+1?)",
            extra={"route": route, "count": count, "queries": stats.queries, "sql": sql[:300]},
        )

    def mark_ready(self) -> None:
        """Record the cold start once: the server's start to this worker's first ready."""
        if self._ready or not self.enabled:
            return
        self._ready = True
        age = runtime.server_age()
        if age is not None:
            metrics.COLD_START.labels(*self._labels).set(age)


class InFlight:
    """The requests in flight in this process, for the start time of the oldest one
    (``polyframe_oldest_request_start_timestamp_seconds``; +Inf when there is none).

    A hung request never finishes, so no duration ever records it; its age does. Any
    framework: the adapters start and finish every request through :class:`Telemetry`.
    """

    def __init__(self, gauge: Any) -> None:
        self._gauge = gauge
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}
        self._oldest = math.inf
        gauge.set(math.inf)  # the series exists from the start: "none in flight"

    def add(self, state: RequestState) -> None:
        with self._lock:
            self._started[id(state)] = state.started_unix
            if state.started_unix < self._oldest:
                self._set(state.started_unix)

    def remove(self, state: RequestState) -> None:
        with self._lock:
            started = self._started.pop(id(state), None)
            if started is not None and started <= self._oldest:
                self._set(min(self._started.values(), default=math.inf))

    def _set(self, oldest: float) -> None:
        self._oldest = oldest
        self._gauge.set(oldest)


def _exemplar(span: trace.Span) -> dict[str, str] | None:
    """The request's sampled trace, for the duration histogram (single-process mode only)."""
    context = span.get_span_context()
    if not (context.is_valid and context.trace_flags.sampled):
        return None
    return {"trace_id": format(context.trace_id, "032x")}


# -- process-wide set-up --------------------------------------------------------------------------

_lock = threading.Lock()
_current: Telemetry | None = None


def current() -> Telemetry | None:
    """The telemetry this process set up last (for the server's own hooks)."""
    return _current


def setup(
    service: str,
    framework: str,
    *,
    enabled: bool = True,
    repeated_query_threshold: int = dbstats.DEFAULT_REPEATED_QUERY_THRESHOLD,
) -> Telemetry:
    """Telemetry for ``service`` on ``framework`` in this process (safe to call again)."""
    global _current
    telemetry = Telemetry(service, framework, enabled, repeated_query_threshold)
    _current = telemetry
    if not enabled:
        return telemetry
    with _lock:
        if tracing.wanted():
            tracing.start(service)
        runtime.start_sampler(telemetry.labels)
    runtime.publish_build_info(service, framework)
    return telemetry


def for_service(settings: ServiceSettings, framework: str) -> Telemetry:
    """:func:`setup` from a service's settings (``<PREFIX>_INSTRUMENTATION``, …)."""
    return setup(
        settings.service_name,
        framework,
        enabled=settings.instrumentation,
        repeated_query_threshold=settings.db_repeated_query_threshold,
    )
