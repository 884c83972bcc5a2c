"""polyframe-flask: the gunicorn gthread pool of legacy-flask and admin-django."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as models

from polyframe_dashboards.kit import (
    NS,
    Item,
    dashboard,
    events,
    heat,
    or_zero,
    q,
    raw,
    rec,
    row,
    single,
    ts,
    up_down,
)

GUNICORN = 'framework=~"flask|django"'
LE_100MS = 'le="0.1"'


def build() -> models.Dashboard:
    threads = raw("polyframe_worker_threads", GUNICORN)
    busy = raw("polyframe_worker_threads_busy", GUNICORN)
    items: list[Item] = [
        row("The worker thread pool (gunicorn gthread: legacy-flask and admin-django)"),
        ts(
            "Worker threads: busy vs available",
            "Threads serving a request now against workers x threads (the scrape takes none: "
            "the master answers it).",
            [
                q(f"sum by (service_name) ({threads})", "{{service_name}} available"),
                q(f"sum by (service_name) ({busy})", "{{service_name}} busy"),
            ],
        ),
        ts(
            "Saturation (busy / available)",
            "At 1 every thread is busy and new requests queue. From the busy-thread-seconds "
            "counter (a missed scrape loses nothing), and the gauge's peak of the last minute "
            "(what PolyframeThreadPoolNearExhaustion reads; dashed line: its threshold).",
            [
                q(
                    "sum by (service_name) (rate("
                    f"{raw('polyframe_worker_threads_busy_seconds_total', GUNICORN)}"
                    f"[$__rate_interval])) / sum by (service_name) ({threads})",
                    "{{service_name}} busy ratio",
                ),
                q(
                    f"sum by (service_name) (max_over_time({busy}[1m])) / sum by "
                    f"(service_name) (max_over_time({threads}[1m]))",
                    "{{service_name}} peak of the last minute",
                ),
            ],
            unit="percentunit",
            threshold=0.8,
            maximum=1,
        ),
        single(
            "Scrapes answered",
            "1 = the last scrape worked. gunicorn's master serves /metrics on its own port and "
            "serves no request, so a full pool stays visible; a 0 means the master itself is "
            "gone or unreachable.",
            [
                q(
                    f'up{{{NS}, job=~".*(legacy-flask|admin-django).*"}}',
                    "{{job}} {{instance}}",
                )
            ],
            height=8,
            steps=[(None, "red"), (1, "green")],
            mappings=up_down(),
        ),
        row("Waiting for a thread"),
        ts(
            "Queue time (p50 / p95 / p99)",
            "Time a request waited, after gunicorn accepted it, for a free worker thread. "
            "PolyframeRequestQueueing fires when the p95 stays above 100 ms.",
            [
                q(
                    "max by (service_name) ("
                    + rec(
                        "service_name:polyframe_request_queue_duration_seconds:quantile_rate5m",
                        f'quantile="{value}"',
                    )
                    + ")",
                    f"{{{{service_name}}}} p{label}",
                )
                for value, label in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))
            ],
            unit="s",
            threshold=0.1,
        ),
        ts(
            "Requests that waited over 100 ms",
            "Requests per second that found every thread busy for 100 ms or more.",
            [
                q(
                    "sum by (service_name) (rate("
                    f"{raw('polyframe_request_queue_duration_seconds_count', GUNICORN)}"
                    "[$__rate_interval])) - sum by (service_name) (rate("
                    f"{raw('polyframe_request_queue_duration_seconds_bucket', GUNICORN, LE_100MS)}"
                    "[$__rate_interval]))",
                    "{{service_name}}",
                )
            ],
            unit="reqps",
        ),
        heat(
            "Queue time distribution",
            "Time waiting for a thread, by bucket.",
            "sum by (le) (rate("
            f"{raw('polyframe_request_queue_duration_seconds_bucket', GUNICORN)}"
            "[$__rate_interval]))",
            width=8,
        ),
        row("Hung requests and worker exits"),
        ts(
            "Oldest request in flight",
            "Age of the longest-running request of each service's processes (0 when none "
            "runs). gunicorn's timeout does not end a long gthread request (the worker's main "
            "loop keeps heartbeating), so a hung thread only shows here, holding its slot.",
            [
                q(
                    "clamp_min(time() - min by (service_name, instance) ("
                    f"{raw('polyframe_oldest_request_start_timestamp_seconds', GUNICORN)}), 0)",
                    "{{service_name}} {{instance}}",
                )
            ],
            unit="s",
            threshold=30,
        ),
        ts(
            "Worker exits by reason (last 5 min)",
            "Workers the master saw exit: timeout (its main loop stopped heartbeating), crash, "
            "restart (max_requests or a reload). A timeout or a crash ends the requests its "
            "threads held; a restart lets them finish first.",
            [
                q(
                    or_zero(
                        "sum by (service_name, reason) "
                        f"({events('polyframe_worker_exits_total', '5m', GUNICORN)})",
                        "service_name",
                        threads,
                    ),
                    "{{service_name}} {{reason}}",
                )
            ],
            bars=True,
        ),
        ts(
            "Requests per second",
            "Requests served, 5-minute rate.",
            [
                q(
                    "sum by (service_name) "
                    f"({rec('service_name:http_server_requests:rate5m', GUNICORN)})",
                    "{{service_name}}",
                )
            ],
            unit="reqps",
        ),
        row("What the pool's users feel"),
        ts(
            "Latency (p50 / p95 / p99)",
            "Request duration from gunicorn's enqueue time: the wait for a thread is in it.",
            [
                q(
                    "max by (service_name) ("
                    + rec(
                        "service_name:http_server_request_duration_seconds:quantile_rate5m",
                        GUNICORN,
                        f'quantile="{value}"',
                    )
                    + ")",
                    f"{{{{service_name}}}} p{label}",
                )
                for value, label in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))
            ],
            unit="s",
            width=24,
        ),
    ]
    return dashboard(
        "polyframe-flask",
        "Polyframe / Flask & Django on gunicorn: the thread pool",
        "Thread-pool exhaustion at scale: busy threads against capacity, saturation, the time "
        "requests wait for a thread, hung requests and worker exits, for both gunicorn gthread "
        "services.",
        ["flask", "django", "gunicorn"],
        items,
    )
