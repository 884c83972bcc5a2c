"""Polyframe's Grafana dashboards, as code: writes ``dashboards/*.json``.

Run ``python observability/grafana/build_dashboards.py`` after changing a panel here, and commit
both; ``tests/observability`` fails when the JSON files differ from what this script writes.
Editing a dashboard in Grafana's UI is fine for trying things out; bring the change back here.

Every dashboard is templated by ``datasource`` (a Prometheus data source) and ``namespace``
(``label_values(polyframe_build_info, namespace)``), and every query is filtered by
``namespace=~"$namespace"``. Queries use only ``$namespace``, ``$__rate_interval``,
``$__interval`` and ``$__range``; heavy expressions come from the recording rules in
``observability/prometheus/rules`` (5-minute windows). A panel whose signal may simply not have
happened (no 5xx, no blocked loop, no N+1) still shows a zero: the rules and queries fall back
to ``<same labels> * 0``, so "no data" always means "not scraped".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

DS = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
FRAMEWORKS = (("fastapi", "FastAPI (users-fastapi)"), ("flask", "Flask (legacy-flask)"),
              ("django", "Django (admin-django)"))  # fmt: skip
POLYFRAME_JOBS = ".*(users-fastapi|legacy-flask|admin-django|outbox|traefik).*"

Panel = dict[str, Any]


# -- building blocks -------------------------------------------------------------------------


def target(
    expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series"
) -> Panel:
    return {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "format": fmt,
        "instant": instant,
        "legendFormat": legend,
        "range": not instant,
    }


def _thresholds(steps: list[tuple[float | None, str]]) -> Panel:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


def timeseries(
    title: str,
    description: str,
    targets: list[Panel],
    *,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    threshold: float | None = None,
    bars: bool = False,
    maximum: float | None = None,
) -> Panel:
    custom: Panel = {
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 60 if bars else 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "axisSoftMin": 0,
        "thresholdsStyle": {"mode": "line" if threshold is not None else "off"},
    }
    defaults: Panel = {
        "unit": unit,
        "custom": custom,
        "thresholds": _thresholds(
            [(None, "green")] + ([(threshold, "red")] if threshold is not None else [])
        ),
    }
    if maximum is not None:
        defaults["max"] = maximum
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
        "_size": (width, height),
    }


def stat(
    title: str,
    description: str,
    targets: list[Panel],
    *,
    unit: str = "short",
    width: int = 8,
    height: int = 5,
    steps: list[tuple[float | None, str]] | None = None,
    mappings: list[Panel] | None = None,
) -> Panel:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": _thresholds(steps or [(None, "blue")]),
                "mappings": mappings or [],
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
        "targets": targets,
        "_size": (width, height),
    }


def bargauge(
    title: str,
    description: str,
    targets: list[Panel],
    *,
    unit: str = "short",
    width: int = 8,
    height: int = 6,
    steps: list[tuple[float | None, str]] | None = None,
) -> Panel:
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "thresholds": _thresholds(steps or [(None, "blue")]),
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
        },
        "targets": targets,
        "_size": (width, height),
    }


def heatmap(title: str, description: str, expr: str, *, width: int = 12, height: int = 8) -> Panel:
    heat = target(expr, "{{le}}", fmt="heatmap")
    heat["exemplar"] = True
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "tooltip": {"mode": "single", "yHistogram": True},
            "yAxis": {"unit": "s"},
            "rowsFrame": {"layout": "auto"},
        },
        "targets": [heat],
        "_size": (width, height),
    }


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def layout(panels: list[Panel]) -> list[Panel]:
    """Give every panel an id and a gridPos, filling rows of 24 columns left to right."""
    x = y = line_height = 0
    for number, panel in enumerate(panels, start=1):
        width, height = panel.pop("_size")
        if x + width > 24 or panel["type"] == "row":
            x, y = 0, y + line_height
            line_height = 0
        panel["id"] = number
        panel["gridPos"] = {"h": height, "w": width, "x": x, "y": y}
        x += width
        line_height = max(line_height, height)
        if panel["type"] == "row":
            x, y, line_height = 0, y + height, 0
        for ref, item in zip("ABCDEFGHIJ", panel.get("targets", []), strict=False):
            item["refId"] = ref
    return panels


def dashboard(
    uid: str, title: str, description: str, tags: list[str], panels: list[Panel]
) -> Panel:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [
            {
                "asDropdown": True,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "tags": ["polyframe"],
                "targetBlank": False,
                "title": "Polyframe dashboards",
                "type": "dashboards",
            }
        ],
        "panels": layout(panels),
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["polyframe", *tags],
        "templating": {"list": variables()},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
    }


def variables() -> list[Panel]:
    namespaces = "label_values(polyframe_build_info, namespace)"
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
        },
        {
            "name": "namespace",
            "label": "Namespace",
            "type": "query",
            "datasource": DS,
            "definition": namespaces,
            "query": {"qryType": 1, "query": namespaces, "refId": "PrometheusVariableQueryEditor"},
            "current": {},
            "hide": 0,
            "includeAll": True,
            "allValue": ".+",
            "multi": True,
            "options": [],
            "refresh": 2,
            "regex": "",
            "sort": 1,
        },
    ]


def quantiles(metric: str, by: str, legend: str, extra: str = "") -> list[Panel]:
    """p50, p95, p99 targets of a ``...:quantile_rate5m`` recording rule."""
    return [
        target(
            f'max by ({by}) ({metric}{{{NS}{extra}, quantile="{q}"}})',
            f"{legend} p{label}",
        )
        for q, label in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))
    ]


# -- the dashboards --------------------------------------------------------------------------


def overview() -> Panel:
    panels = [
        row("Through the ingress (Traefik's view: what clients get)"),
        timeseries(
            "Requests per second through the ingress",
            "Requests Traefik forwarded to each service (all status codes), 5-minute rate.",
            [
                target(
                    f"sum by (service_name) (service_name:traefik_service_requests:rate5m{{{NS}}})",
                    "{{service_name}}",
                )
            ],
            unit="reqps",
            width=8,
        ),
        timeseries(
            "5xx ratio through the ingress",
            "Share of responses with a 5xx status as clients saw them, including the 502/504 "
            "Traefik answers itself when a service is down or too slow.",
            [
                target(
                    "max by (service_name) "
                    f"(service_name:traefik_service_requests_errors:ratio_rate5m{{{NS}}})",
                    "{{service_name}}",
                )
            ],
            unit="percentunit",
            width=8,
            threshold=0.05,
        ),
        timeseries(
            "Latency through the ingress (p50 / p95 / p99)",
            "Time from Traefik receiving a request to the end of the response (Traefik's coarse "
            "buckets: 0.1, 0.3, 1.2, 5 s; the services' own histograms are finer).",
            quantiles(
                "service_name:traefik_service_request_duration_seconds:quantile_rate5m",
                "service_name",
                "{{service_name}}",
            ),
            unit="s",
            width=8,
        ),
        row("Per service (the services' own metrics)"),
        timeseries(
            "Requests per second",
            "Requests each service served (probes and /metrics excluded), 5-minute rate.",
            [
                target(
                    f"sum by (service_name) (service_name:http_server_requests:rate5m{{{NS}}})",
                    "{{service_name}}",
                )
            ],
            unit="reqps",
            width=8,
        ),
        timeseries(
            "5xx ratio",
            "Share of requests answered with a 5xx over 5 minutes (PolyframeHighErrorRatio "
            "fires above 5 %).",
            [
                target(
                    "max by (service_name) "
                    f"(service_name:http_server_requests_errors:ratio_rate5m{{{NS}}})",
                    "{{service_name}}",
                )
            ],
            unit="percentunit",
            width=8,
            threshold=0.05,
        ),
        timeseries(
            "Latency (p50 / p95 / p99)",
            "Server-side request duration, from the first byte the framework sees to the last "
            "it sends.",
            quantiles(
                "service_name:http_server_request_duration_seconds:quantile_rate5m",
                "service_name",
                "{{service_name}}",
            ),
            unit="s",
            width=8,
        ),
        timeseries(
            "Latency SLO burn rate (99 % under 500 ms)",
            "How fast each service spends its latency error budget (1 % of requests may take "
            "500 ms or more): 1 = the 30-day budget lasts exactly 30 days. "
            "PolyframeLatencySLOBurn pages at 14.4 over 1 h (and 5 min) or 6 over 6 h "
            "(and 30 min).",
            [
                target(
                    "max by (service_name) "
                    f"(service_name:http_server_requests_over_500ms:ratio_rate1h{{{NS}}}) / 0.01",
                    "{{service_name}} 1 h",
                ),
                target(
                    "max by (service_name) "
                    f"(service_name:http_server_requests_over_500ms:ratio_rate5m{{{NS}}}) / 0.01",
                    "{{service_name}} 5 min",
                ),
            ],
            width=8,
            threshold=14.4,
        ),
        timeseries(
            "Requests in flight",
            "Requests being served right now (a gunicorn service's count includes the scrape).",
            [
                target(
                    f"sum by (service_name) (service_name:http_server_active_requests:sum{{{NS}}})",
                    "{{service_name}}",
                )
            ],
            width=8,
        ),
        stat(
            "Scrape targets up",
            "1 = Prometheus scraped the target at its last attempt (PolyframeServiceDown fires "
            "after a minute at 0). A gunicorn service whose threads are all busy also fails "
            "its scrape.",
            [target(f'up{{{NS}, job=~"{POLYFRAME_JOBS}"}}', "{{job}} {{instance}}")],
            width=8,
            height=8,
            steps=[(None, "red"), (1, "green")],
            mappings=[
                {
                    "type": "value",
                    "options": {
                        "0": {"text": "DOWN", "color": "red"},
                        "1": {"text": "UP", "color": "green"},
                    },
                }
            ],
        ),
        row("Routes"),
        timeseries(
            "Requests per second by route",
            "Route templates, never raw paths; __unmatched__ is every request no route matched.",
            [
                target(
                    "sum by (service_name, http_route) "
                    f"(service_name_http_route:http_server_requests:rate5m{{{NS}}})",
                    "{{service_name}} {{http_route}}",
                )
            ],
            unit="reqps",
            width=8,
        ),
        timeseries(
            "p95 latency by route",
            "95th percentile of the request duration of each route over 5 minutes.",
            [
                target(
                    "max by (service_name, http_route) "
                    "(service_name_http_route:http_server_request_duration_seconds:quantile_rate5m"
                    f'{{{NS}, quantile="0.95"}})',
                    "{{service_name}} {{http_route}}",
                )
            ],
            unit="s",
            width=8,
        ),
        timeseries(
            "5xx ratio by route",
            "Which routes fail, when a service's 5xx ratio rises.",
            [
                target(
                    "max by (service_name, http_route) "
                    f"(service_name_http_route:http_server_requests_errors:ratio_rate5m{{{NS}}})",
                    "{{service_name}} {{http_route}}",
                )
            ],
            unit="percentunit",
            width=8,
        ),
        heatmap(
            "Request duration distribution (exemplars link to traces)",
            "All services' request durations by bucket. With one server process per "
            "container (Kubernetes), the diamonds are exemplars: click one to open its trace; "
            "the multiprocess mode of `make up` has none.",
            "sum by (le) (rate(http_server_request_duration_seconds_bucket"
            f"{{{NS}}}[$__rate_interval]))",
            width=24,
        ),
        row("Calls between services, and the audit outbox"),
        timeseries(
            "Outbound calls per second",
            "Attempts through the service-kit client, by caller and peer (a retry is another "
            "attempt). framework=dispatcher: the outbox dispatcher delivering audit events.",
            [
                target(
                    "sum by (service_name, framework, peer_service) "
                    f"(service_name_peer_service:http_client_requests:rate5m{{{NS}}})",
                    "{{service_name}} ({{framework}}) → {{peer_service}}",
                )
            ],
            unit="reqps",
            width=8,
        ),
        timeseries(
            "Failed outbound attempts",
            "Share of attempts answered 5xx or not answered at all (timeout, refused).",
            [
                target(
                    "max by (service_name, framework, peer_service) "
                    "(service_name_peer_service:http_client_requests_errors:ratio_rate5m"
                    f"{{{NS}}})",
                    "{{service_name}} ({{framework}}) → {{peer_service}}",
                )
            ],
            unit="percentunit",
            width=8,
        ),
        timeseries(
            "Outbound call latency (p95)",
            "95th percentile of one attempt's duration, by caller and peer.",
            [
                target(
                    "max by (service_name, framework, peer_service) "
                    "(service_name_peer_service:http_client_request_duration_seconds:"
                    f'quantile_rate5m{{{NS}, quantile="0.95"}})',
                    "{{service_name}} ({{framework}}) → {{peer_service}}",
                )
            ],
            unit="s",
            width=8,
        ),
        timeseries(
            "Audit events waiting in the outbox",
            "Events written by each producer and not yet delivered to admin-django.",
            [
                target(
                    f"max by (service_name) (service_name:polyframe_outbox_pending:max{{{NS}}})",
                    "{{service_name}}",
                )
            ],
            width=8,
        ),
        timeseries(
            "Oldest undelivered audit event",
            "Age of the oldest waiting event (PolyframeAuditBacklog fires after 5 minutes "
            "above 30 s).",
            [
                target(
                    "max by (service_name) "
                    f"(service_name:polyframe_outbox_oldest_pending_age_seconds:max{{{NS}}})",
                    "{{service_name}}",
                )
            ],
            unit="s",
            width=8,
            threshold=30,
        ),
        timeseries(
            "Audit events delivered per second",
            "Deliveries to admin-django accepted (a redelivery counts again).",
            [
                target(
                    "max by (service_name) "
                    f"(service_name:polyframe_outbox_delivered:rate5m{{{NS}}})",
                    "{{service_name}}",
                )
            ],
            unit="reqps",
            width=8,
        ),
    ]
    return dashboard(
        "polyframe-overview",
        "Polyframe / Overview",
        "RED of the three services through the ingress and from the services themselves, "
        "calls between them, and the audit outbox.",
        ["overview"],
        panels,
    )


def _by_framework(framework: str) -> str:
    return f'{NS}, framework="{framework}"'


def frameworks() -> Panel:
    glance = [
        row("At a glance (last value)"),
        bargauge(
            "Throughput",
            "Requests per second served, 5-minute rate.",
            [
                target(
                    f"sum by (framework) (service_name:http_server_requests:rate5m{{{NS}}})",
                    "{{framework}}",
                    instant=True,
                )
            ],
            unit="reqps",
        ),
        bargauge(
            "p95 latency",
            "95th percentile of the request duration over 5 minutes.",
            [
                target(
                    "max by (framework) "
                    "(service_name:http_server_request_duration_seconds:quantile_rate5m"
                    f'{{{NS}, quantile="0.95"}})',
                    "{{framework}}",
                    instant=True,
                )
            ],
            unit="s",
        ),
        bargauge(
            "5xx ratio",
            "Share of requests answered with a 5xx over 5 minutes.",
            [
                target(
                    "max by (framework) "
                    f"(service_name:http_server_requests_errors:ratio_rate5m{{{NS}}})",
                    "{{framework}}",
                    instant=True,
                )
            ],
            unit="percentunit",
            steps=[(None, "green"), (0.05, "red")],
        ),
        bargauge(
            "Memory per worker (average)",
            "Resident memory of one server process (gunicorn worker, uvicorn worker, or pod).",
            [
                target(
                    f"max by (framework) (service_name:process_resident_memory_bytes:avg{{{NS}}})",
                    "{{framework}}",
                    instant=True,
                )
            ],
            unit="bytes",
        ),
        bargauge(
            "Cold start",
            "From the start of the server's main process to its first ready /readyz.",
            [
                target(
                    f"max by (framework) (service_name:polyframe_cold_start_seconds:max{{{NS}}})",
                    "{{framework}}",
                    instant=True,
                )
            ],
            unit="s",
        ),
        bargauge(
            "CPU per request",
            "CPU seconds the servers spent per request served (all of it: probes, scrapes "
            "and background work too), over 5 minutes.",
            [
                target(
                    "max by (framework) "
                    f"(service_name:process_cpu_seconds_per_request:ratio_rate5m{{{NS}}})",
                    "{{framework}}",
                    instant=True,
                )
            ],
            unit="s",
        ),
    ]
    side_by_side: list[Panel] = []
    for title, description, build in (
        ("Throughput", "Requests per second served, 5-minute rate.", _throughput),
        (
            "Latency p50 / p95 / p99",
            "Server-side request duration quantiles over 5 minutes.",
            _latency,
        ),
        ("5xx ratio", "Share of requests answered with a 5xx over 5 minutes.", _errors),
        (
            "Memory per worker",
            "Resident memory of each server process (one line per gunicorn/uvicorn worker, "
            "or per pod) and their average.",
            _memory,
        ),
        (
            "Cold start",
            "Process start to first ready /readyz, of the current processes.",
            _cold_start,
        ),
        (
            "CPU per request",
            "CPU seconds per request served (everything the processes did, divided by the "
            "requests), 5-minute rates.",
            _cpu,
        ),
    ):
        side_by_side.append(row(title))
        for framework, name in FRAMEWORKS:
            side_by_side.append(build(f"{title}: {name}", description, framework))
    return dashboard(
        "polyframe-frameworks",
        "Polyframe / Framework comparison",
        "FastAPI, Flask and Django side by side, with the same panels from the same metric "
        "catalogue: throughput, latency, errors, memory per worker, cold start, CPU per request.",
        ["frameworks"],
        glance + side_by_side,
    )


def _throughput(title: str, description: str, framework: str) -> Panel:
    return timeseries(
        title,
        description,
        [
            target(
                "sum by (service_name) "
                f"(service_name:http_server_requests:rate5m{{{_by_framework(framework)}}})",
                "{{service_name}}",
            )
        ],
        unit="reqps",
        width=8,
    )


def _latency(title: str, description: str, framework: str) -> Panel:
    return timeseries(
        title,
        description,
        quantiles(
            "service_name:http_server_request_duration_seconds:quantile_rate5m",
            "service_name",
            "{{service_name}}",
            extra=f', framework="{framework}"',
        ),
        unit="s",
        width=8,
    )


def _errors(title: str, description: str, framework: str) -> Panel:
    return timeseries(
        title,
        description,
        [
            target(
                "max by (service_name) (service_name:http_server_requests_errors:ratio_rate5m"
                f"{{{_by_framework(framework)}}})",
                "{{service_name}}",
            )
        ],
        unit="percentunit",
        width=8,
        threshold=0.05,
    )


def _memory(title: str, description: str, framework: str) -> Panel:
    return timeseries(
        title,
        description,
        [
            target(
                f"process_resident_memory_bytes{{{_by_framework(framework)}}}",
                "{{instance}} {{pid}}{{pod}}",
            ),
            target(
                "max by (service_name) (service_name:process_resident_memory_bytes:avg"
                f"{{{_by_framework(framework)}}})",
                "average",
            ),
        ],
        unit="bytes",
        width=8,
    )


def _cold_start(title: str, description: str, framework: str) -> Panel:
    return stat(
        title,
        description,
        [
            target(
                "max by (service_name) (service_name:polyframe_cold_start_seconds:max"
                f"{{{_by_framework(framework)}}})",
                "{{service_name}}",
            )
        ],
        unit="s",
        height=6,
    )


def _cpu(title: str, description: str, framework: str) -> Panel:
    return timeseries(
        title,
        description,
        [
            target(
                "max by (service_name) (service_name:process_cpu_seconds_per_request:ratio_rate5m"
                f"{{{_by_framework(framework)}}})",
                "{{service_name}}",
            )
        ],
        unit="s",
        width=8,
    )


def _births_aware(metric: str, window: str) -> str:
    """Events over ``window``, counting a series born inside it in full (see the rules)."""
    return (
        f"({metric}{{{NS}}} unless {metric}{{{NS}}} offset {window})"
        f" or increase({metric}{{{NS}}}[{window}])"
    )


def fastapi() -> Panel:
    panels = [
        row("The event loop (FastAPI on uvicorn)"),
        timeseries(
            "Event loop lag (p50 / p99)",
            "How late a probe scheduled every 50 ms ran: time the loop could not serve "
            "anything. Healthy: well under 1 ms.",
            [
                target(
                    "max by (service_name) (service_name:polyframe_event_loop_lag_seconds:"
                    f'quantile_rate5m{{{NS}, quantile="{q}"}})',
                    f"{{{{service_name}}}} p{label}",
                )
                for q, label in (("0.5", "50"), ("0.99", "99"))
            ],
            unit="s",
            width=8,
        ),
        timeseries(
            "Loop stalls over 50 ms (last 5 min)",
            "Probes that ran more than 50 ms late, whatever held the loop (a handler, a "
            "background task, a long garbage collection). PolyframeEventLoopLagHigh fires when "
            "stalls keep happening every minute for 3 minutes.",
            [
                target(
                    "max by (service_name) "
                    f"(service_name:polyframe_event_loop_lag_over_50ms:increase5m{{{NS}}})",
                    "{{service_name}}",
                )
            ],
            width=8,
        ),
        heatmap(
            "Event loop lag distribution",
            "Probe lateness by bucket over time.",
            "sum by (le) (rate(polyframe_event_loop_lag_seconds_bucket"
            f"{{{NS}}}[$__rate_interval]))",
            width=8,
        ),
        row("Blocking calls in async handlers, by route"),
        timeseries(
            "Blocks by route (last 5 min)",
            "Times a request handler held the loop for longer than 100 ms, by route "
            "(__no_request__: outside any request). PolyframeEventLoopBlocked fires on any.",
            [
                target(
                    "sum by (service_name, http_route) "
                    f"(service_name_http_route:polyframe_event_loop_blocks:increase5m{{{NS}}})",
                    "{{http_route}}",
                )
            ],
            width=8,
            bars=True,
        ),
        timeseries(
            "Time the loop was blocked, by route",
            "Seconds per second the loop spent blocked by each route's handlers (0.1 = "
            "everything else waited 10 % of the time).",
            [
                target(
                    "sum by (service_name, http_route) "
                    "(service_name_http_route:polyframe_event_loop_blocked_seconds:rate5m"
                    f"{{{NS}}})",
                    "{{http_route}}",
                )
            ],
            unit="percentunit",
            width=8,
        ),
        bargauge(
            "Blocks by route in the selected time range",
            "Every block in the range, by route: the routes to fix first.",
            [
                target(
                    "sum by (service_name, http_route) ("
                    + _births_aware("polyframe_event_loop_blocks_total", "$__range")
                    + ") or sum by (service_name, http_route) "
                    f"(service_name_http_route:polyframe_event_loop_blocks:increase5m{{{NS}}})"
                    " * 0",
                    "{{http_route}}",
                    instant=True,
                )
            ],
            width=8,
            steps=[(None, "green"), (1, "red")],
        ),
        row("What the loop's users feel"),
        timeseries(
            "p99 latency by route",
            "A blocked loop delays every request of its worker, not only the blocking one.",
            [
                target(
                    "max by (service_name, http_route) "
                    "(service_name_http_route:http_server_request_duration_seconds:quantile_rate5m"
                    f'{{{NS}, framework="fastapi", quantile="0.99"}})',
                    "{{http_route}}",
                )
            ],
            unit="s",
            width=8,
        ),
        timeseries(
            "Requests in flight",
            "Concurrent requests on the loop(s).",
            [
                target(
                    "sum by (service_name) "
                    f'(service_name:http_server_active_requests:sum{{{NS}, framework="fastapi"}})',
                    "{{service_name}}",
                )
            ],
            width=8,
        ),
        timeseries(
            "Garbage collection pauses",
            "Seconds per second spent in Python's garbage collector (a pause stalls the loop).",
            [
                target(
                    "max by (service_name) "
                    f'(service_name:python_gc_pause_seconds:rate5m{{{NS}, framework="fastapi"}})',
                    "{{service_name}}",
                )
            ],
            unit="percentunit",
            width=8,
        ),
    ]
    return dashboard(
        "polyframe-fastapi",
        "Polyframe / FastAPI: the event loop",
        "The async tax: event-loop lag, and the request handlers that block the loop, by route.",
        ["fastapi", "asyncio"],
        panels,
    )


def flask() -> Panel:
    gunicorn = f"{{{NS}}}"
    panels = [
        row("The worker thread pool (gunicorn gthread: legacy-flask and admin-django)"),
        timeseries(
            "Worker threads: busy vs available",
            "Threads serving a request now (the one answering the scrape included) against "
            "workers x threads.",
            [
                target(
                    f"sum by (service_name) (polyframe_worker_threads{gunicorn})",
                    "{{service_name}} available",
                ),
                target(
                    f"sum by (service_name) (polyframe_worker_threads_busy{gunicorn})",
                    "{{service_name}} busy",
                ),
            ],
            width=8,
        ),
        timeseries(
            "Saturation (busy / available)",
            "At 1 every thread is busy and new requests queue. The dashed line is "
            "PolyframeThreadPoolNearExhaustion's threshold.",
            [
                target(
                    "max by (service_name) "
                    f"(service_name:polyframe_worker_threads_saturation:ratio{{{NS}}})",
                    "{{service_name}}",
                ),
                target(
                    "sum by (service_name) (max_over_time(polyframe_worker_threads_busy"
                    f"{gunicorn}[1m])) / sum by (service_name) "
                    f"(max_over_time(polyframe_worker_threads{gunicorn}[1m]))",
                    "{{service_name}} peak of the last minute",
                ),
            ],
            unit="percentunit",
            width=8,
            threshold=0.8,
            maximum=1,
        ),
        stat(
            "Scrapes answered",
            "A gunicorn service answers /metrics from its worker threads: when all are busy "
            "the scrape waits and fails (0), so a saturated pool is also a blind one.",
            [
                target(
                    f'up{{{NS}, job=~".*(legacy-flask|admin-django).*"}}',
                    "{{job}} {{instance}}",
                )
            ],
            width=8,
            height=8,
            steps=[(None, "red"), (1, "green")],
        ),
        row("Waiting for a thread"),
        timeseries(
            "Queue time (p50 / p95 / p99)",
            "Time a request waited, after it arrived, for a free worker thread. "
            "PolyframeRequestQueueing fires when the p95 stays above 100 ms.",
            quantiles(
                "service_name:polyframe_request_queue_duration_seconds:quantile_rate5m",
                "service_name",
                "{{service_name}}",
            ),
            unit="s",
            width=8,
            threshold=0.1,
        ),
        timeseries(
            "Requests that waited over 100 ms",
            "Requests per second that found every thread busy for 100 ms or more.",
            [
                target(
                    "sum by (service_name) (rate(polyframe_request_queue_duration_seconds_count"
                    f"{gunicorn}[$__rate_interval])) - sum by (service_name) "
                    "(rate(polyframe_request_queue_duration_seconds_bucket"
                    f'{{{NS}, le="0.1"}}[$__rate_interval]))',
                    "{{service_name}}",
                )
            ],
            unit="reqps",
            width=8,
        ),
        heatmap(
            "Queue time distribution",
            "Time waiting for a thread, by bucket.",
            "sum by (le) (rate(polyframe_request_queue_duration_seconds_bucket"
            f"{gunicorn}[$__rate_interval]))",
            width=8,
        ),
        row("What the pool's users feel"),
        timeseries(
            "Latency (p50 / p95 / p99)",
            "Request duration once a thread runs it (add the queue time for what clients wait).",
            quantiles(
                "service_name:http_server_request_duration_seconds:quantile_rate5m",
                "service_name",
                "{{service_name}}",
                extra=', framework=~"flask|django"',
            ),
            unit="s",
            width=12,
        ),
        timeseries(
            "Requests per second",
            "Requests served, 5-minute rate.",
            [
                target(
                    "sum by (service_name) (service_name:http_server_requests:rate5m"
                    f'{{{NS}, framework=~"flask|django"}})',
                    "{{service_name}}",
                )
            ],
            unit="reqps",
            width=12,
        ),
    ]
    return dashboard(
        "polyframe-flask",
        "Polyframe / Flask & Django on gunicorn: the thread pool",
        "Thread-pool exhaustion at scale: busy threads against capacity, saturation, and the "
        "time requests wait for a thread, for both gunicorn gthread services.",
        ["flask", "django", "gunicorn"],
        panels,
    )


def django() -> Panel:
    dj = f'{{{NS}, framework="django"}}'
    panels = [
        row("Queries per request (Django ORM)"),
        timeseries(
            "Queries per request by route (mean)",
            "Average number of SQL statements one request of each route ran, over 5 minutes.",
            [
                target(
                    "max by (service_name, http_route) "
                    f"(service_name_http_route:polyframe_db_queries_per_request:mean_rate5m{dj})",
                    "{{http_route}}",
                )
            ],
            width=12,
        ),
        timeseries(
            "Queries per request by route (p95)",
            "95th percentile of statements per request: a route whose count grows with the "
            "data (one per item) is an N+1.",
            [
                target(
                    "max by (service_name, http_route) "
                    "(service_name_http_route:polyframe_db_queries_per_request:quantile_rate5m"
                    f'{{{NS}, framework="django", quantile="0.95"}})',
                    "{{http_route}}",
                )
            ],
            width=12,
        ),
        row("Time in the database per request"),
        timeseries(
            "DB time per request by route (mean)",
            "Average time one request of each route spent waiting on the database.",
            [
                target(
                    "max by (service_name, http_route) "
                    "(service_name_http_route:polyframe_db_time_per_request_seconds:mean_rate5m"
                    f"{dj})",
                    "{{http_route}}",
                )
            ],
            unit="s",
            width=12,
        ),
        timeseries(
            "DB time per request by route (p95)",
            "95th percentile of the time in the database per request.",
            [
                target(
                    "max by (service_name, http_route) "
                    "(service_name_http_route:polyframe_db_time_per_request_seconds:"
                    f'quantile_rate5m{{{NS}, framework="django", quantile="0.95"}})',
                    "{{http_route}}",
                )
            ],
            unit="s",
            width=12,
        ),
        row("N+1 detections"),
        timeseries(
            "N+1 detections by route (last 5 min)",
            "Requests that ran one SQL shape more often than the threshold (default 10). "
            "PolyframeRepeatedQueries fires on any.",
            [
                target(
                    "sum by (service_name, http_route) "
                    f"(service_name_http_route:polyframe_db_repeated_queries:increase5m{dj})",
                    "{{http_route}}",
                )
            ],
            width=12,
            bars=True,
        ),
        bargauge(
            "N+1 detections by route in the selected time range (all services)",
            "Every detection in the range, by service and route: the queries to fix first "
            "(Django: select_related / prefetch_related).",
            [
                target(
                    "sum by (service_name, http_route) ("
                    + _births_aware("polyframe_db_repeated_queries_total", "$__range")
                    + ") or sum by (service_name, http_route) "
                    f"(service_name_http_route:polyframe_db_repeated_queries:increase5m{{{NS}}})"
                    " * 0",
                    "{{service_name}} {{http_route}}",
                    instant=True,
                )
            ],
            width=12,
            height=8,
            steps=[(None, "green"), (1, "red")],
        ),
        row("All three services"),
        timeseries(
            "Queries per request by service (mean)",
            "The same measure for the SQLAlchemy services, for comparison.",
            [
                target(
                    "sum by (service_name) (rate(polyframe_db_queries_per_request_sum"
                    f"{{{NS}}}[$__rate_interval])) / sum by (service_name) "
                    f"(rate(polyframe_db_queries_per_request_count{{{NS}}}[$__rate_interval]))",
                    "{{service_name}}",
                )
            ],
            width=12,
        ),
        timeseries(
            "Share of request time spent in the database",
            "DB time over request time: near 1, the database is the bottleneck; near 0, the "
            "framework and the code are.",
            [
                target(
                    "sum by (service_name) (rate(polyframe_db_time_per_request_seconds_sum"
                    f"{{{NS}}}[$__rate_interval])) / sum by (service_name) "
                    f"(rate(http_server_request_duration_seconds_sum{{{NS}}}[$__rate_interval]))",
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
        "ORM queries and database time per request by route, and N+1 detections.",
        ["django", "database"],
        panels,
    )


def build() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    boards = {
        "polyframe-overview.json": overview(),
        "polyframe-frameworks.json": frameworks(),
        "polyframe-fastapi.json": fastapi(),
        "polyframe-flask.json": flask(),
        "polyframe-django.json": django(),
    }
    return {
        name: json.dumps(board, indent=2, ensure_ascii=False) + "\n"
        for name, board in boards.items()
    }


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in build().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
