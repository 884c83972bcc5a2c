"""The one metric catalogue of Polyframe: every metric any service exposes, defined once.

Adapters, the client, the gunicorn worker and the runtime sampler only record into it;
names and labels: docs/architecture.md; ``/metrics`` is :mod:`service_kit.exposition`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

#: prometheus_client's own ``*_created`` series only double every counter here. (Its
#: ``PROMETHEUS_DISABLE_CREATED_SERIES`` is read when it is imported: too late to set here.)
disable_created_metrics()  # type: ignore[no-untyped-call]

#: The route label of a request that matched no route.
UNMATCHED_ROUTE = "__unmatched__"
#: A label value outside its bounded set (OpenTelemetry's convention).
OTHER = "_OTHER"
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
#: Paths no RED metric counts: probes and scrapes would drown the real traffic.
OPERATIONAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

#: Request latency of these services: a few ms (reads), ~10 ms (an order, two services),
#: ~100 ms (password hashing), seconds (a dependency timing out after 2 s x 2 attempts).
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Bodies: small JSON documents up to the 1 MiB limit of every service.
SIZE_BUCKETS = (0, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
#: Event-loop lag and blocking: healthy is well under 1 ms, a blocked loop is 100 ms and up.
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Waiting for a worker thread: 0 when one is free; the request timeout when none ever is.
QUEUE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: ORM queries a request makes: a handful is normal; dozens is an N+1.
QUERY_COUNT_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144)
#: Time in the database per request.
DB_TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: A garbage collection pause: generation 0 takes microseconds, a full one milliseconds.
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

SERVICE = ("service_name", "framework")

#: The registry every metric below belongs to (never prometheus_client's global one,
#: whose own process collector would clash with the multiprocess-safe one here).
REGISTRY = CollectorRegistry(auto_describe=True)

# -- HTTP server (OpenTelemetry http.server.*) ------------------------------------------------

HTTP_SERVER_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "Duration of HTTP server requests (OpenTelemetry http.server.request.duration).",
    [*SERVICE, "http_request_method", "http_route", "http_response_status_code"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
HTTP_SERVER_ACTIVE = Gauge(
    "http_server_active_requests",
    "HTTP server requests in flight (OpenTelemetry http.server.active_requests).",
    [*SERVICE, "http_request_method"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
OLDEST_REQUEST_START = Gauge(
    "polyframe_oldest_request_start_timestamp_seconds",
    "Unix time the oldest request in flight started (+Inf when none): time() minus it is the "
    "age of the oldest request, which grows while a request hangs. The oldest of all workers.",
    list(SERVICE),
    multiprocess_mode="livemin",
    registry=REGISTRY,
)
HTTP_SERVER_REQUEST_SIZE = Histogram(
    "http_server_request_body_size_bytes",
    "Size of HTTP server request bodies (OpenTelemetry http.server.request.body.size).",
    [*SERVICE, "http_request_method", "http_route"],
    buckets=SIZE_BUCKETS,
    registry=REGISTRY,
)
HTTP_SERVER_RESPONSE_SIZE = Histogram(
    "http_server_response_body_size_bytes",
    "Size of HTTP server response bodies (OpenTelemetry http.server.response.body.size).",
    [*SERVICE, "http_request_method", "http_route"],
    buckets=SIZE_BUCKETS,
    registry=REGISTRY,
)

# -- HTTP client: calls through the service-kit client (OpenTelemetry http.client.*) ----------

HTTP_CLIENT_DURATION = Histogram(
    "http_client_request_duration_seconds",
    "Duration of one attempt of an outbound call to a peer service "
    "(OpenTelemetry http.client.request.duration).",
    [*SERVICE, "peer_service", "http_request_method", "http_response_status_code", "error_type"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
HTTP_CLIENT_RETRIES = Counter(
    "http_client_retries",
    "Outbound calls retried after a failed attempt, by the reason of the failure.",
    [*SERVICE, "peer_service", "reason"],
    registry=REGISTRY,
)

HTTP_CLIENT_CIRCUIT_STATE = Gauge(
    "http_client_circuit_state",
    "Circuit breaker towards a peer service: 0 closed, 1 half-open (trying), 2 open (failing "
    "fast); the worst worker's in multiprocess mode.",
    [*SERVICE, "peer_service"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
HTTP_CLIENT_CIRCUIT_REJECTIONS = Counter(
    "http_client_circuit_rejections",
    "Outbound calls failed at once, without calling, because the peer's circuit was open.",
    [*SERVICE, "peer_service"],
    registry=REGISTRY,
)

# -- Process and runtime ------------------------------------------------------------------------

#: ``process_role``: ``worker`` (serves requests; a lone uvicorn too) or ``master`` (gunicorn's
#: arbiter, uvicorn's supervisor with ``--workers``: read from /proc at each scrape).
PROCESS_RSS = Gauge(
    "process_resident_memory_bytes",
    "Resident memory of each server process, master included (one series per process, "
    "label pid, in multiprocess mode).",
    [*SERVICE, "process_role"],
    multiprocess_mode="liveall",
    registry=REGISTRY,
)
PROCESS_CPU = Counter(
    "process_cpu_seconds",
    "CPU time (user and system) spent by the server processes, master included.",
    [*SERVICE, "process_role"],
    registry=REGISTRY,
)
PROCESS_OPEN_FDS = Gauge(
    "process_open_fds",
    "Open file descriptors of each server process, master included.",
    [*SERVICE, "process_role"],
    multiprocess_mode="liveall",
    registry=REGISTRY,
)
PROCESS_MAX_FDS = Gauge(
    "process_max_fds",
    "The open file descriptor limit (soft RLIMIT_NOFILE) of each server process.",
    [*SERVICE, "process_role"],
    multiprocess_mode="liveall",
    registry=REGISTRY,
)
GC_COLLECTIONS = Counter(
    "python_gc_collections",
    "Garbage collections, by generation.",
    [*SERVICE, "generation"],
    registry=REGISTRY,
)
GC_PAUSE = Histogram(
    "python_gc_pause_seconds",
    "Pauses of the garbage collector, by generation.",
    [*SERVICE, "generation"],
    buckets=GC_BUCKETS,
    registry=REGISTRY,
)
COLD_START = Gauge(
    "polyframe_cold_start_seconds",
    "From the start of the server's main process to ready (app loaded, readiness checks "
    "passing), as the server found it itself right after starting (the first worker's, in "
    "multiprocess mode).",
    list(SERVICE),
    multiprocess_mode="min",
    registry=REGISTRY,
)
BUILD_INFO = Gauge(
    "polyframe_build_info",
    "Always 1; the labels say what runs: service version, framework and Python versions.",
    [*SERVICE, "version", "framework_version", "python_version", "server"],
    multiprocess_mode="max",
    registry=REGISTRY,
)

# -- FastAPI / asyncio: the event loop -----------------------------------------------------------

EVENT_LOOP_LAG = Histogram(
    "polyframe_event_loop_lag_seconds",
    "How late the event loop ran a periodic probe: time the loop could not serve anything.",
    list(SERVICE),
    buckets=LAG_BUCKETS,
    registry=REGISTRY,
)
EVENT_LOOP_BLOCKS = Counter(
    "polyframe_event_loop_blocks",
    "Times a request handler held the event loop longer than the blocking threshold.",
    [*SERVICE, "http_route"],
    registry=REGISTRY,
)
EVENT_LOOP_BLOCKED = Counter(
    "polyframe_event_loop_blocked_seconds",
    "Time the event loop spent blocked by a request handler (blocks over the threshold).",
    [*SERVICE, "http_route"],
    registry=REGISTRY,
)

# -- Flask and Django on gunicorn gthread: the worker thread pool --------------------------------

WORKER_THREADS = Gauge(
    "polyframe_worker_threads",
    "Request-handling threads available (gunicorn workers x threads).",
    list(SERVICE),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
WORKER_THREADS_BUSY = Gauge(
    "polyframe_worker_threads_busy",
    "Request-handling threads busy with a request right now.",
    list(SERVICE),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
REQUEST_QUEUE_DURATION = Histogram(
    "polyframe_request_queue_duration_seconds",
    "Time a request waited, after it arrived, for a free worker thread.",
    list(SERVICE),
    buckets=QUEUE_BUCKETS,
    registry=REGISTRY,
)
WORKER_THREADS_BUSY_SECONDS = Counter(
    "polyframe_worker_threads_busy_seconds",
    "Seconds request-handling threads spent busy (added every second while a request runs): "
    "its rate over the threads available is the busy ratio, and survives a missed scrape.",
    list(SERVICE),
    registry=REGISTRY,
)
#: Why the gunicorn master saw a worker go (see service_kit.workerexits.exit_reason).
WORKER_EXIT_REASONS = ("timeout", "crash", "restart")
WORKER_EXITS = Counter(
    "polyframe_worker_exits",
    "gunicorn workers gone, counted by the master: timeout (aborted by the master: its main "
    "loop stopped), crash (killed by a signal, e.g. out of memory, or failed), restart "
    "(left cleanly: reload, scale-down, max_requests, stop).",
    [*SERVICE, "reason"],
    registry=REGISTRY,
)

# -- The database, per request (Django's ORM, and SQLAlchemy in the other two) -------------------

DB_QUERIES_PER_REQUEST = Histogram(
    "polyframe_db_queries_per_request",
    "Database queries one request made.",
    [*SERVICE, "http_route"],
    buckets=QUERY_COUNT_BUCKETS,
    registry=REGISTRY,
)
DB_TIME_PER_REQUEST = Histogram(
    "polyframe_db_time_per_request_seconds",
    "Time one request spent waiting on the database.",
    [*SERVICE, "http_route"],
    buckets=DB_TIME_BUCKETS,
    registry=REGISTRY,
)
DB_REPEATED_QUERIES = Counter(
    "polyframe_db_repeated_queries",
    "Requests that ran one SQL shape more often than the N+1 threshold.",
    [*SERVICE, "http_route"],
    registry=REGISTRY,
)


# -- The database connection pool: a full pool told apart from a database that is down ---------

#: Getting a connection: ~0 from the pool, ms to open one, the pool's timeout (5 s) when full.
POOL_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

DB_POOL_CONNECTIONS = Gauge(
    "polyframe_db_pool_connections",
    "Database connections of the server processes: in_use (checked out by a request) or idle "
    "(open, waiting in the pool; Django: held by a thread between requests).",
    [*SERVICE, "state"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
DB_POOL_MAX_CONNECTIONS = Gauge(
    "polyframe_db_pool_max_connections",
    "Connections the pools may hold at most: pool size plus max overflow, summed over the "
    "processes (SQLAlchemy only; Django opens one per thread).",
    list(SERVICE),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
DB_POOL_WAIT = Histogram(
    "polyframe_db_pool_wait_seconds",
    "Time to get a connection from the pool: waiting for a free one, or opening a new one "
    "(SQLAlchemy only; a Django thread opens its own).",
    list(SERVICE),
    buckets=POOL_WAIT_BUCKETS,
    registry=REGISTRY,
)
DB_POOL_TIMEOUTS = Counter(
    "polyframe_db_pool_timeouts",
    "Requests for a connection that gave up: every connection of the pool stayed in use "
    "for the whole pool timeout (SQLAlchemy only).",
    list(SERVICE),
    registry=REGISTRY,
)
DB_CONNECT_ERRORS = Counter(
    "polyframe_db_connect_errors",
    "Attempts to open a database connection that failed (refused, unreachable, timed out, "
    "authentication): the database, not the pool.",
    list(SERVICE),
    registry=REGISTRY,
)

# -- The audit outbox: its dispatcher (a process of its own per producer) ----------------------

OUTBOX_PENDING = Gauge(
    "polyframe_outbox_pending",
    "Audit events written by the producer and not yet delivered to admin-django.",
    list(SERVICE),
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
OUTBOX_OLDEST_PENDING_AGE = Gauge(
    "polyframe_outbox_oldest_pending_age_seconds",
    "Age of the oldest undelivered audit event (0 when none waits).",
    list(SERVICE),
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
#: The oldest pending event's creation time rather than only its age: a loop that stops
#: refreshing leaves the timestamp behind, so ``time() - it`` keeps growing (an age freezes).
OUTBOX_OLDEST_PENDING_TIMESTAMP = Gauge(
    "polyframe_outbox_oldest_pending_timestamp_seconds",
    "Creation time (unix) of the oldest undelivered audit event, +Inf when none waits; "
    "refreshed every round whether or not delivery succeeds (age: time() - it).",
    list(SERVICE),
    multiprocess_mode="livemin",
    registry=REGISTRY,
)
OUTBOX_LAST_SUCCESS = Gauge(
    "polyframe_outbox_last_success_timestamp_seconds",
    "Unix time the dispatcher last completed a round without an error (0 before its first): "
    "its heartbeat.",
    list(SERVICE),
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
OUTBOX_LOOP_ERRORS = Counter(
    "polyframe_outbox_loop_errors",
    "Dispatcher rounds that raised (database errors, bugs); a delivery admin-django refuses "
    "is not one (polyframe_outbox_failed_total).",
    list(SERVICE),
    registry=REGISTRY,
)
OUTBOX_DELIVERED = Counter(
    "polyframe_outbox_delivered",
    "Audit events delivered to admin-django (a redelivery counts again).",
    list(SERVICE),
    registry=REGISTRY,
)
OUTBOX_FAILED = Counter(
    "polyframe_outbox_failed",
    "Audit events whose delivery attempt failed (retried later with backoff).",
    list(SERVICE),
    registry=REGISTRY,
)

# -- Rate limits shared in Redis (users-fastapi) ------------------------------------------------

RATE_LIMIT_FALLBACKS = Counter(
    "polyframe_rate_limit_fallbacks",
    "Rate-limit counter operations done in the process because the shared storage (Redis) "
    "was unreachable: meanwhile each process enforces its own limits.",
    list(SERVICE),
    registry=REGISTRY,
)

# -- Hostile input (service_kit.limits) ---------------------------------------------------------

INPUT_REJECTED = Counter(
    "polyframe_input_rejected",
    "Requests refused before parsing for going past a structural limit (service_kit.limits): "
    "body size, JSON depth, members, elements, strings, numbers, query, headers, form fields.",
    [*SERVICE, "limit"],
    registry=REGISTRY,
)


# -- label hygiene ------------------------------------------------------------------------------


def method_label(method: str) -> str:
    upper = method.upper()
    return upper if upper in KNOWN_METHODS else OTHER


def status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else OTHER


def route_label(route: str | None) -> str:
    return route or UNMATCHED_ROUTE
