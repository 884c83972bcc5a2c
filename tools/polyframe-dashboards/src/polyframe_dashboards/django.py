"""polyframe-django: ORM queries and database time per request, N+1 detections, and the
connection pool of all three services (a full pool told apart from a database that is down)."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as models

from polyframe_dashboards.kit import (
    Item,
    dashboard,
    events,
    or_zero,
    q,
    quantile,
    ranking,
    raw,
    rec,
    row,
    ts,
)

DJANGO = 'framework="django"'
BY = "service_name, instance"
LEGEND = "{{service_name}} {{instance}}"
IN_USE = 'state="in_use"'
IDLE = 'state="idle"'
POOL = raw("polyframe_db_pool_max_connections")


def _repeated_in_range() -> str:
    repeated = raw("polyframe_db_repeated_queries_total")
    return (
        f"sum by (service_name, http_route) (({repeated} unless {repeated} offset $__range) "
        f"or increase({repeated}[$__range])) or sum by (service_name, http_route) "
        f"({rec('service_name_http_route:polyframe_db_repeated_queries:increase5m')}) * 0"
    )


def build() -> models.Dashboard:
    items: list[Item] = [
        row("Queries per request (Django ORM)"),
        ts(
            "Queries per request by route (mean)",
            "Average number of SQL statements one request of each route ran, over 5 minutes.",
            [
                q(
                    "max by (service_name, http_route) ("
                    + rec(
                        "service_name_http_route:polyframe_db_queries_per_request:mean_rate5m",
                        DJANGO,
                    )
                    + ")",
                    "{{http_route}}",
                )
            ],
            width=12,
        ),
        ts(
            "Queries per request by route (p95)",
            "95th percentile of statements per request: a route whose count grows with the "
            "data (one per item) is an N+1.",
            [
                q(
                    "max by (service_name, http_route) ("
                    + rec(
                        "service_name_http_route:polyframe_db_queries_per_request:quantile_rate5m",
                        DJANGO,
                        'quantile="0.95"',
                    )
                    + ")",
                    "{{http_route}}",
                )
            ],
            width=12,
        ),
        row("Time in the database per request"),
        ts(
            "DB time per request by route (mean)",
            "Average time one request of each route spent waiting on the database.",
            [
                q(
                    "max by (service_name, http_route) ("
                    + rec(
                        "service_name_http_route:polyframe_db_time_per_request_seconds:mean_rate5m",
                        DJANGO,
                    )
                    + ")",
                    "{{http_route}}",
                )
            ],
            unit="s",
            width=12,
        ),
        ts(
            "DB time per request by route (p95)",
            "95th percentile of the time in the database per request.",
            [
                q(
                    "max by (service_name, http_route) ("
                    + rec(
                        "service_name_http_route:polyframe_db_time_per_request_seconds:"
                        "quantile_rate5m",
                        DJANGO,
                        'quantile="0.95"',
                    )
                    + ")",
                    "{{http_route}}",
                )
            ],
            unit="s",
            width=12,
        ),
        row("N+1 detections"),
        ts(
            "N+1 detections by route (last 5 min)",
            "Requests that ran one SQL shape more often than the threshold (default 10). "
            "PolyframeRepeatedQueries fires on any.",
            [
                q(
                    "sum by (service_name, http_route) ("
                    + rec(
                        "service_name_http_route:polyframe_db_repeated_queries:increase5m", DJANGO
                    )
                    + ")",
                    "{{http_route}}",
                )
            ],
            width=12,
            bars=True,
        ),
        ranking(
            "N+1 detections by route in the selected time range (all services)",
            "Every detection in the range, by service and route: the queries to fix first "
            "(Django: select_related / prefetch_related).",
            [q(_repeated_in_range(), "{{service_name}} {{http_route}}", instant=True)],
            width=12,
        ),
        row("The connection pool (all three services): full pool, or database down?"),
        ts(
            "Connections in use vs the pool's maximum",
            "Connections checked out, idle, and the most the pool may open (size + overflow), "
            "per process. In use at the maximum: requests wait for a connection.",
            [
                q(
                    f"sum by ({BY}) ({raw('polyframe_db_pool_connections', IN_USE)})",
                    f"{LEGEND} in use",
                ),
                q(
                    f"sum by ({BY}) ({raw('polyframe_db_pool_connections', IDLE)})",
                    f"{LEGEND} idle",
                ),
                q(
                    f"sum by ({BY}) ({raw('polyframe_db_pool_max_connections')})",
                    f"{LEGEND} maximum",
                ),
            ],
        ),
        ts(
            "Wait for a connection (p95)",
            "Time a request waited to get a connection from the pool: near 0 unless it is full.",
            [
                q(
                    quantile("0.95", "polyframe_db_pool_wait_seconds_bucket", "service_name"),
                    "{{service_name}}",
                )
            ],
            unit="s",
        ),
        ts(
            "Pool timeouts and connect errors (last 5 min)",
            "Timeouts: no connection came free in time (the pool is full, the database may be "
            "fine). Connect errors: the database refused or did not answer (it is down or "
            "unreachable, whatever the pool holds).",
            [
                q(
                    or_zero(
                        f"sum by (service_name) ({events('polyframe_db_pool_timeouts_total')})",
                        "service_name",
                        POOL,
                    ),
                    "{{service_name}} pool timeouts",
                ),
                q(
                    or_zero(
                        f"sum by (service_name) ({events('polyframe_db_connect_errors_total')})",
                        "service_name",
                        POOL,
                    ),
                    "{{service_name}} connect errors",
                ),
            ],
            bars=True,
        ),
        row("All three services"),
        ts(
            "Queries per request by service (mean)",
            "The same measure for the SQLAlchemy services, for comparison.",
            [
                q(
                    "sum by (service_name) (rate("
                    f"{raw('polyframe_db_queries_per_request_sum')}[$__rate_interval])) "
                    "/ sum by (service_name) (rate("
                    f"{raw('polyframe_db_queries_per_request_count')}[$__rate_interval]))",
                    "{{service_name}}",
                )
            ],
            width=12,
        ),
        ts(
            "Share of request time spent in the database",
            "DB time over request time: near 1, the database is the bottleneck; near 0, the "
            "framework and the code are.",
            [
                q(
                    "sum by (service_name) (rate("
                    f"{raw('polyframe_db_time_per_request_seconds_sum')}[$__rate_interval])) "
                    "/ sum by (service_name) (rate("
                    f"{raw('http_server_request_duration_seconds_sum')}[$__rate_interval]))",
                    "{{service_name}}",
                )
            ],
            unit="percentunit",
            width=12,
        ),
    ]
    return dashboard(
        "polyframe-django",
        "Polyframe / Django: the database per request",
        "ORM queries and database time per request by route, N+1 detections, and the "
        "connection pool of every service.",
        ["django", "database"],
        items,
    )
