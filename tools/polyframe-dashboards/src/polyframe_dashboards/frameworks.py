"""polyframe-frameworks: the three frameworks compared like with like, over time.

One time-series panel per signal, one series per framework (the rows of ``kit.FRAMEWORKS``),
the same unit and y-axis for all three. Every figure is whole-process: the gunicorn master is a
process of its service too (``process_role="master"``), so memory per worker is everything the
service's processes hold divided by its workers, and CPU per request is all of their CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from grafana_foundation_sdk.models import dashboard as models

from polyframe_dashboards.kit import (
    FRAMEWORKS,
    Item,
    Query,
    dashboard,
    q,
    quantile,
    raw,
    rec,
    row,
    ts,
)

BY = "service_name, framework"
LEGEND = "{{framework}} ({{service_name}})"
#: The dispatchers report framework="dispatcher" under their producer's service_name.
SERVERS = 'framework!="dispatcher"'
#: The gunicorn master is the one process that is not a worker (uvicorn: every process is).
WORKERS = 'process_role!="master"'
REQUESTS = raw("http_server_request_duration_seconds_count", SERVERS)


def _per_second(metric: str, *matchers: str) -> str:
    return f"sum by ({BY}) (rate({raw(metric, SERVERS, *matchers)}[$__rate_interval]))"


@dataclass(frozen=True)
class Signal:
    """One comparison panel: its queries have one series per framework."""

    title: str
    unit: str
    description: str
    queries: tuple[Query, ...]
    maximum: float | None = None
    threshold: float | None = None
    points: bool = False


#: The comparison, signal by signal; each becomes one panel with the three frameworks in it.
SIGNALS: tuple[tuple[str, tuple[Signal, ...]], ...] = (
    (
        "Traffic and latency",
        (
            Signal(
                "Requests per second",
                "reqps",
                "Requests each framework served (probes and /metrics excluded).",
                (q(_per_second("http_server_request_duration_seconds_count"), LEGEND),),
            ),
            Signal(
                "Latency p50 / p99",
                "s",
                "What the client waits for, from the moment the server has the request: on "
                "gunicorn from its enqueue time (waiting for a free thread included), on uvicorn "
                "from the moment the loop reads it.",
                tuple(
                    q(
                        quantile(value, "http_server_request_duration_seconds_bucket", BY, SERVERS),
                        f"{LEGEND} p{label}",
                    )
                    for value, label in (("0.5", "50"), ("0.99", "99"))
                ),
            ),
            Signal(
                "5xx ratio",
                "percentunit",
                "Share of requests answered 5xx over 5 minutes, counting the first 5xx of a "
                "route too (the recorded, births-aware ratio: summed over instances).",
                (
                    q(
                        f"max by ({BY}) "
                        f"({rec('service_name:http_server_requests_errors:ratio_rate5m')})",
                        LEGEND,
                    ),
                ),
                threshold=0.05,
            ),
        ),
    ),
    (
        "Cost: CPU, memory, cold start (whole processes, gunicorn master included)",
        (
            Signal(
                "CPU per request",
                "s",
                "CPU seconds of all the service's processes (gunicorn master and workers, or "
                "the uvicorn process) per request served: probes, scrapes and background work "
                "are part of what a request costs.",
                (
                    q(
                        f"{_per_second('process_cpu_seconds_total')} "
                        f"/ {_per_second('http_server_request_duration_seconds_count')}",
                        LEGEND,
                    ),
                ),
            ),
            Signal(
                "Memory per worker",
                "bytes",
                "Resident memory of all the service's processes (the gunicorn master included) "
                "divided by its workers: what one more worker really costs.",
                (
                    q(
                        f"sum by ({BY}) ({raw('process_resident_memory_bytes', SERVERS)}) "
                        f"/ count by ({BY}) "
                        f"({raw('process_resident_memory_bytes', SERVERS, WORKERS)})",
                        LEGEND,
                    ),
                ),
            ),
            Signal(
                "Cold start",
                "s",
                "From the process's start to its first moment ready, measured by the process "
                "itself (not when a probe happened to ask). One point per running process; a "
                "new value is a restart.",
                (
                    q(
                        f"max by ({BY}) ({raw('polyframe_cold_start_seconds', SERVERS)})",
                        LEGEND,
                    ),
                ),
                points=True,
            ),
        ),
    ),
    (
        "Saturation: how close to full, and the wait before a request runs",
        (
            Signal(
                "Thread busy ratio",
                "percentunit",
                "gunicorn gthread (Flask, Django): busy-thread seconds per second over the "
                "threads there are, from a counter, so a missed scrape loses nothing. At 1 "
                "every thread is busy and requests queue. FastAPI has no thread pool: see the "
                "loop lag.",
                (
                    q(
                        f"{_per_second('polyframe_worker_threads_busy_seconds_total')} "
                        f"/ sum by ({BY}) ({raw('polyframe_worker_threads', SERVERS)})",
                        LEGEND,
                    ),
                ),
                maximum=1,
                threshold=0.8,
            ),
            Signal(
                "Wait before running: loop lag p99 / queue p95",
                "s",
                "The framework's own wait, on one axis: FastAPI's event-loop lag p99 (how late "
                "the loop runs anything), gunicorn's queue time p95 (how long a request waited "
                "for a free thread).",
                (
                    q(
                        quantile("0.99", "polyframe_event_loop_lag_seconds_bucket", BY, SERVERS),
                        f"{LEGEND} loop lag p99",
                    ),
                    q(
                        quantile(
                            "0.95", "polyframe_request_queue_duration_seconds_bucket", BY, SERVERS
                        ),
                        f"{LEGEND} queue p95",
                    ),
                ),
                threshold=0.1,
            ),
            Signal(
                "Requests in flight",
                "short",
                "Requests being served now (the scrape is not one of them).",
                (q(f"sum by ({BY}) ({raw('http_server_active_requests', SERVERS)})", LEGEND),),
            ),
        ),
    ),
)


def comparison_panels() -> list[Item]:
    items: list[Item] = []
    for title, signals in SIGNALS:
        items.append(row(title))
        items.extend(
            ts(
                signal.title,
                signal.description,
                signal.queries,
                unit=signal.unit,
                maximum=signal.maximum,
                threshold=signal.threshold,
                points=signal.points,
            )
            for signal in signals
        )
    return items


def build() -> models.Dashboard:
    names = ", ".join(f"{f.label} ({f.service})" for f in FRAMEWORKS)
    return dashboard(
        "polyframe-frameworks",
        "Polyframe / Framework comparison",
        f"{names}: one panel per signal, the three frameworks as three series on one axis. "
        "Figures are of whole processes, the gunicorn master included.",
        ["frameworks"],
        comparison_panels(),
    )
