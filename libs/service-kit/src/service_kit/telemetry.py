"""Telemetry of one service process: what the adapters record, and tracing set-up.

``setup(...)`` is called by each service's app factory, which every server runs
in each worker after the fork (gunicorn without ``--preload``; uvicorn's
workers are spawned), so the OpenTelemetry exporter thread and the runtime
sampler are created in the process that uses them, never copied across a fork.
It returns a :class:`Telemetry` the framework adapter records requests into.

Tracing follows the standard ``OTEL_*`` variables: ``OTEL_SERVICE_NAME``
(default: the service's name), ``OTEL_TRACES_SAMPLER``/``_ARG`` (default:
parent-based, always on), and ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (OTLP over HTTP). Without an endpoint (or an
explicit ``OTEL_TRACES_SAMPLER``) there is no tracing at all: no span, no
framework instrumentation, since nothing would collect them; the adapters still
carry the incoming trace id (or make one) so logs, audit events and the next
service keep it, at a fraction of the cost. Metrics do not depend on it.

``enabled=False`` (``<PREFIX>_INSTRUMENTATION=false``) turns all of it off —
metrics, traces, probes — so a benchmark can measure what observability costs.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import platform
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from service_kit import dbstats, metrics

if TYPE_CHECKING:
    from service_kit.settings import ServiceSettings

log = logging.getLogger("service_kit.telemetry")

#: URLs no span is made for (comma-separated regexes, as the instrumentations take them).
UNTRACED_URLS = "healthz,readyz,metrics"
#: Seconds between two samples of memory, CPU and file descriptors.
SAMPLE_INTERVAL_SECONDS = 5.0


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


@dataclass
class Telemetry:
    """What one framework adapter records into, bound to its service and framework."""

    service: str
    framework: str
    enabled: bool = True
    repeated_query_threshold: int = dbstats.DEFAULT_REPEATED_QUERY_THRESHOLD
    _labels: tuple[str, str] = field(init=False)
    _ready: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._labels = (self.service, self.framework)

    @property
    def tracing(self) -> bool:
        """Are spans made in this process (an exporter, or a sampler, was configured)?"""
        return self.enabled and _tracer_provider is not None

    @property
    def labels(self) -> tuple[str, str]:
        """``(service_name, framework)``: the first two labels of every metric."""
        return self._labels

    # -- HTTP server ---------------------------------------------------------------------------

    def start_request(self, method: str) -> RequestState | None:
        """A request arrived (None when instrumentation is off)."""
        if not self.enabled:
            return None
        method = metrics.method_label(method)
        metrics.HTTP_SERVER_ACTIVE.labels(*self._labels, method).inc()
        db, end_db = dbstats.begin()
        return RequestState(method, time.perf_counter(), trace.get_current_span(), db, end_db)

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
        age = server_age()
        if age is not None:
            metrics.COLD_START.labels(*self._labels).set(age)


def _exemplar(span: trace.Span) -> dict[str, str] | None:
    """The request's sampled trace, for the duration histogram (single-process mode only)."""
    context = span.get_span_context()
    if not (context.is_valid and context.trace_flags.sampled):
        return None
    return {"trace_id": format(context.trace_id, "032x")}


# -- process-wide set-up --------------------------------------------------------------------------

_lock = threading.Lock()
_tracer_provider: TracerProvider | None = None
_sampler: threading.Thread | None = None
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
        if _exporter_configured() or os.environ.get("OTEL_TRACES_SAMPLER"):
            _start_tracing(service)
        _start_sampler(telemetry)
    metrics.BUILD_INFO.labels(
        service,
        framework,
        _version(service),
        _version(framework),
        platform.python_version(),
        _server(),
    ).set(1)
    return telemetry


def for_service(settings: ServiceSettings, framework: str) -> Telemetry:
    """:func:`setup` from a service's settings (``<PREFIX>_INSTRUMENTATION``, …)."""
    return setup(
        settings.service_name,
        framework,
        enabled=settings.instrumentation,
        repeated_query_threshold=settings.db_repeated_query_threshold,
    )


def tracer_provider() -> TracerProvider | None:
    """This process's provider, or None when tracing is off."""
    return _tracer_provider


def _start_tracing(service: str) -> None:
    global _tracer_provider
    if _tracer_provider is not None:
        return
    # The stable HTTP semantic conventions (http.route, http.response.status_code, …).
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    attributes: dict[str, Any] = {SERVICE_VERSION: _version(service)}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = service
    provider = TracerProvider(resource=Resource.create(attributes))
    if _exporter_configured():
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer_provider = provider
    # The last spans of a worker that exits are sent, not lost.
    atexit.register(provider.shutdown)


def _exporter_configured() -> bool:
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def flush(timeout_millis: int = 5_000) -> None:
    """Send the spans still buffered (before a worker exits, or in tests)."""
    if _tracer_provider is not None:
        _tracer_provider.force_flush(timeout_millis)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def _server() -> str:
    for name in ("gunicorn", "uvicorn"):
        if name in sys.modules:
            return f"{name} {_version(name)}"
    return "other"


# -- runtime: memory, CPU, file descriptors, garbage collection ----------------------------------


def _start_sampler(telemetry: Telemetry) -> None:
    global _sampler
    if _sampler is not None and _sampler.is_alive():
        return
    labels = (telemetry.service, telemetry.framework)
    _watch_gc()
    _sampler = threading.Thread(
        target=_sample_forever, args=(labels,), name="polyframe-runtime-sampler", daemon=True
    )
    _sampler.start()


def _sample_forever(labels: tuple[str, str]) -> None:
    last_cpu = _cpu_seconds()
    metrics.PROCESS_CPU.labels(*labels).inc(last_cpu)
    while True:
        sample_process(labels)
        publish_gc(labels)
        time.sleep(SAMPLE_INTERVAL_SECONDS)
        now = _cpu_seconds()
        metrics.PROCESS_CPU.labels(*labels).inc(max(0.0, now - last_cpu))
        last_cpu = now


def sample_process(labels: tuple[str, str]) -> None:
    """Memory and file descriptors of this process, now."""
    rss = resident_memory_bytes()
    if rss is not None:
        metrics.PROCESS_RSS.labels(*labels).set(rss)
    with contextlib.suppress(OSError):
        metrics.PROCESS_OPEN_FDS.labels(*labels).set(
            sum(1 for _ in Path("/proc/self/fd").iterdir())
        )


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def resident_memory_bytes() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


#: Collections seen by the GC callback and not yet published: (generation, pause seconds).
#: The callback runs wherever a collection happens to start, possibly inside a metric's
#: lock (prometheus_client's multiprocess mode has one lock for the whole process): so it
#: only appends here (a deque's append takes no lock) and the sampler thread publishes.
_gc_events: deque[tuple[int, float]] = deque(maxlen=100_000)
_gc_started: dict[int, float] = {}


def _on_gc(phase: str, info: dict[str, int]) -> None:
    generation = info.get("generation", 0)
    if phase == "start":
        _gc_started[generation] = time.perf_counter()
        return
    started = _gc_started.pop(generation, None)
    _gc_events.append((generation, time.perf_counter() - started if started else 0.0))


def _watch_gc() -> None:
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def publish_gc(labels: tuple[str, str]) -> None:
    """Move the collections seen since the last call into the metrics (sampler thread).

    Only those: recording allocates, and may start collections that append more; a loop
    until the deque is empty could run forever (with low GC thresholds it does).
    """
    for _ in range(len(_gc_events)):
        generation, pause = _gc_events.popleft()
        metrics.GC_COLLECTIONS.labels(*labels, str(generation)).inc()
        metrics.GC_PAUSE.labels(*labels, str(generation)).observe(pause)


# -- how long has this server been running? -------------------------------------------------------


def server_age() -> float | None:
    """Seconds since the server's main process started: the leader of this process group.

    A gunicorn worker's group leader is the gunicorn master; uvicorn's workers are in
    the group of uvicorn's supervisor; a lone uvicorn, or a container's PID 1, leads
    its own. ``make up`` starts every server in a group of its own.
    """
    age = process_age(os.getpgid(0))
    return age if age is not None else process_age(os.getpid())


def process_age(pid: int) -> float | None:
    """Seconds since ``pid`` started (Linux ``/proc``, 10 ms resolution), or None."""
    try:
        started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return max(0.0, uptime - started / os.sysconf("SC_CLK_TCK"))
