"""polyframe-overview: RED through the ingress and from the services, calls between them, the
audit outbox, and the signals of a failure in progress (circuits, retries, worker exits, hung
requests, descriptors)."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as models

from polyframe_dashboards import dependencies
from polyframe_dashboards.kit import (
    NS,
    Item,
    Query,
    dashboard,
    heat,
    q,
    raw,
    rec,
    row,
    single,
    ts,
    up_down,
)

POLYFRAME_JOBS = ".*(users-fastapi|legacy-flask|admin-django|outbox|traefik).*"


def _quantiles(metric: str, by: str, legend: str) -> list[Query]:
    """p50, p95, p99 of a ``…:quantile_rate5m`` recording rule."""
    found = []
    for value, label in (("0.5", "50"), ("0.95", "95"), ("0.99", "99")):
        selector = rec(metric, 'quantile="' + value + '"')
        found.append(q(f"max by ({by}) ({selector})", f"{legend} p{label}"))
    return found


def build() -> models.Dashboard:
    items: list[Item] = [
        row("Through the ingress (Traefik's view: what clients get)"),
        ts(
            "Requests per second through the ingress",
            "Requests Traefik forwarded to each service (all status codes), 5-minute rate.",
            [
                q(
                    "sum by (service_name) "
                    f"({rec('service_name:traefik_service_requests:rate5m')})",
                    "{{service_name}}",
                )
            ],
            unit="reqps",
        ),
        ts(
            "5xx ratio through the ingress",
            "Share of responses with a 5xx status as clients saw them, including the 502/504 "
            "Traefik answers itself when a service is down or too slow.",
            [
                q(
                    "max by (service_name) "
                    f"({rec('service_name:traefik_service_requests_errors:ratio_rate5m')})",
                    "{{service_name}}",
                )
            ],
            unit="percentunit",
            threshold=0.05,
        ),
        ts(
            "Latency through the ingress (p50 / p95 / p99)",
            "Time from Traefik receiving a request to the end of the response (Traefik's coarse "
            "buckets: 0.1, 0.3, 1.2, 5 s; the services' own histograms are finer).",
            _quantiles(
                "service_name:traefik_service_request_duration_seconds:quantile_rate5m",
                "service_name",
                "{{service_name}}",
            ),
            unit="s",
        ),
        row("Per service (the services' own metrics)"),
        ts(
            "Requests per second",
            "Requests each service served (probes and /metrics excluded), 5-minute rate.",
            [
                q(
                    f"sum by (service_name) ({rec('service_name:http_server_requests:rate5m')})",
                    "{{service_name}}",
                )
            ],
            unit="reqps",
        ),
        ts(
            "5xx ratio",
            "Share of requests answered with a 5xx over 5 minutes. The error budget and its "
            "burn rates: the SLO dashboard.",
            [
                q(
                    "max by (service_name) "
                    f"({rec('service_name:http_server_requests_errors:ratio_rate5m')})",
                    "{{service_name}}",
                )
            ],
            unit="percentunit",
            threshold=0.05,
        ),
        ts(
            "Latency (p50 / p95 / p99)",
            "What the client waits for once the server has the request: on gunicorn from its "
            "enqueue time, so the wait for a free thread is in it.",
            _quantiles(
                "service_name:http_server_request_duration_seconds:quantile_rate5m",
                "service_name",
                "{{service_name}}",
            ),
            unit="s",
        ),
        ts(
            "Requests in flight",
            "Requests being served right now, per process (the scrape is not counted).",
            [
                q(
                    f"sum by (service_name, instance) ({raw('http_server_active_requests')})",
                    "{{service_name}} {{instance}}",
                )
            ],
        ),
        ts(
            "Oldest request in flight",
            "Age of the longest-running request of each process (0 when none runs). One that "
            "keeps growing is a hung request: on gunicorn gthread, gunicorn's timeout does not "
            "end it (the worker's main loop still heartbeats), so only this shows it.",
            [
                q(
                    "clamp_min(time() - min by (service_name, instance) "
                    f"({raw('polyframe_oldest_request_start_timestamp_seconds')}), 0)",
                    "{{service_name}} {{instance}}",
                )
            ],
            unit="s",
            threshold=30,
        ),
        single(
            "Scrape targets up",
            "1 = Prometheus scraped the target at its last attempt. A gunicorn service is "
            "scraped on its master's own port, which serves no request: a full thread pool "
            "does not make it 0.",
            [q(f'up{{{NS}, job=~"{POLYFRAME_JOBS}"}}', "{{job}} {{instance}}")],
            height=8,
            steps=[(None, "red"), (1, "green")],
            mappings=up_down(),
        ),
        row("Routes"),
        ts(
            "Requests per second by route",
            "Route templates, never raw paths; __unmatched__ is every request no route matched.",
            [
                q(
                    "sum by (service_name, http_route) "
                    f"({rec('service_name_http_route:http_server_requests:rate5m')})",
                    "{{service_name}} {{http_route}}",
                )
            ],
            unit="reqps",
        ),
        ts(
            "p95 latency by route",
            "95th percentile of the request duration of each route over 5 minutes.",
            [
                q(
                    "max by (service_name, http_route) ("
                    + rec(
                        "service_name_http_route:http_server_request_duration_seconds:"
                        "quantile_rate5m",
                        'quantile="0.95"',
                    )
                    + ")",
                    "{{service_name}} {{http_route}}",
                )
            ],
            unit="s",
        ),
        ts(
            "5xx ratio by route",
            "Which routes fail, when a service's 5xx ratio rises.",
            [
                q(
                    "max by (service_name, http_route) "
                    f"({rec('service_name_http_route:http_server_requests_errors:ratio_rate5m')})",
                    "{{service_name}} {{http_route}}",
                )
            ],
            unit="percentunit",
        ),
        heat(
            "Request duration distribution",
            "Request durations by bucket. Exemplars (links to traces) exist only where a "
            "service runs in single-process mode: users-fastapi with one uvicorn worker. The "
            "gunicorn services (Flask, Django) always run prometheus_client's multiprocess "
            "mode, here and in Kubernetes, which has none.",
            "sum by (le) (rate("
            f"{raw('http_server_request_duration_seconds_bucket')}[$__rate_interval]))",
            width=24,
        ),
    ]
    items += dependencies.rows()
    return dashboard(
        "polyframe-overview",
        "Polyframe / Overview",
        "RED of the three services through the ingress and from the services themselves, "
        "calls between them, the audit outbox, and the signals of a failure in progress.",
        ["overview"],
        items,
    )
