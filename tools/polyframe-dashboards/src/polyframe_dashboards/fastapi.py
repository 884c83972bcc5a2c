"""polyframe-fastapi: the async tax: event-loop lag, and the handlers that block the loop."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as models

from polyframe_dashboards.kit import Item, dashboard, heat, q, ranking, raw, rec, row, ts

FASTAPI = 'framework="fastapi"'


def _blocks_in_range() -> str:
    """Every block in the dashboard's range, births-aware, zero for a route without any."""
    blocks = raw("polyframe_event_loop_blocks_total")
    return (
        f"sum by (service_name, http_route) (({blocks} unless {blocks} offset $__range) "
        f"or increase({blocks}[$__range])) or sum by (service_name, http_route) "
        f"({rec('service_name_http_route:polyframe_event_loop_blocks:increase5m')}) * 0"
    )


def build() -> models.Dashboard:
    items: list[Item] = [
        row("The event loop (FastAPI on uvicorn)"),
        ts(
            "Event loop lag (p50 / p99)",
            "How late a probe scheduled every 50 ms ran: time the loop could not serve "
            "anything. Healthy: well under 1 ms.",
            [
                q(
                    "histogram_quantile("
                    f"{value}, sum by (le, service_name, instance) (rate("
                    f"{raw('polyframe_event_loop_lag_seconds_bucket')}[$__rate_interval])))",
                    f"{{{{service_name}}}} {{{{instance}}}} p{label}",
                )
                for value, label in (("0.5", "50"), ("0.99", "99"))
            ],
            unit="s",
        ),
        ts(
            "Loop stalls over 50 ms (last 5 min)",
            "Probes that ran more than 50 ms late, whatever held the loop (a handler, a "
            "background task, a long garbage collection). PolyframeEventLoopLagHigh fires when "
            "stalls keep happening every minute for 3 minutes.",
            [
                q(
                    "max by (service_name) "
                    f"({rec('service_name:polyframe_event_loop_lag_over_50ms:increase5m')})",
                    "{{service_name}}",
                )
            ],
        ),
        heat(
            "Event loop lag distribution",
            "Probe lateness by bucket over time.",
            "sum by (le) (rate("
            f"{raw('polyframe_event_loop_lag_seconds_bucket')}[$__rate_interval]))",
            width=8,
        ),
        row("Blocking calls in async handlers, by route"),
        ts(
            "Blocks by route (last 5 min)",
            "Times a request handler held the loop for longer than 100 ms, by route "
            "(__no_request__: outside any request). PolyframeEventLoopBlocked fires on any.",
            [
                q(
                    "sum by (service_name, http_route) "
                    f"({rec('service_name_http_route:polyframe_event_loop_blocks:increase5m')})",
                    "{{http_route}}",
                )
            ],
            bars=True,
        ),
        ts(
            "Time the loop was blocked, by route",
            "Seconds per second the loop spent blocked by each route's handlers (0.1 = "
            "everything else waited 10 % of the time).",
            [
                q(
                    "sum by (service_name, http_route) "
                    f"({rec('service_name_http_route:polyframe_event_loop_blocked_seconds:rate5m')})",
                    "{{http_route}}",
                )
            ],
            unit="percentunit",
        ),
        ranking(
            "Blocks by route in the selected time range",
            "Every block in the range, by route: the routes to fix first.",
            [q(_blocks_in_range(), "{{http_route}}", instant=True)],
        ),
        row("What the loop's users feel"),
        ts(
            "p99 latency by route",
            "A blocked loop delays every request of its worker, not only the blocking one.",
            [
                q(
                    "max by (service_name, http_route) ("
                    + rec(
                        "service_name_http_route:http_server_request_duration_seconds:"
                        "quantile_rate5m",
                        FASTAPI,
                        'quantile="0.99"',
                    )
                    + ")",
                    "{{http_route}}",
                )
            ],
            unit="s",
        ),
        ts(
            "Oldest request in flight",
            "Age of the longest-running request of each process (0 when none runs): a request "
            "stuck behind a blocked loop grows here.",
            [
                q(
                    "clamp_min(time() - min by (service_name, instance) "
                    f"({raw('polyframe_oldest_request_start_timestamp_seconds', FASTAPI)}), 0)",
                    "{{service_name}} {{instance}}",
                )
            ],
            unit="s",
        ),
        ts(
            "Garbage collection pauses",
            "Seconds per second spent in Python's garbage collector (a pause stalls the loop).",
            [
                q(
                    "sum by (service_name, instance) (rate("
                    f"{raw('python_gc_pause_seconds_sum', FASTAPI)}[$__rate_interval]))",
                    "{{service_name}} {{instance}}",
                )
            ],
            unit="percentunit",
        ),
    ]
    return dashboard(
        "polyframe-fastapi",
        "Polyframe / FastAPI: the event loop",
        "The async tax: event-loop lag, and the request handlers that block the loop, by route.",
        ["fastapi", "asyncio"],
        items,
    )
