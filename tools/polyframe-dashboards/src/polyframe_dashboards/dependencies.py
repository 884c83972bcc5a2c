"""Rows of polyframe-overview for what a service depends on and what warns before a failure:
calls between services (retries, circuit breakers), the audit outbox, and the processes
(worker exits, hung requests, descriptors, degraded modes)."""

from __future__ import annotations

from polyframe_dashboards.kit import (
    Item,
    events,
    or_zero,
    q,
    raw,
    rec,
    row,
    ts,
)

PEER = "{{service_name}} ({{framework}}) → {{peer_service}}"


def rows() -> list[Item]:
    return [
        row("Calls between services: attempts, retries, circuit breakers"),
        ts(
            "Outbound calls per second",
            "Attempts through the service-kit client, by caller and peer (a retry is another "
            "attempt). framework=dispatcher: the outbox dispatcher delivering audit events.",
            [
                q(
                    "sum by (service_name, framework, peer_service) "
                    f"({rec('service_name_peer_service:http_client_requests:rate5m')})",
                    PEER,
                )
            ],
            unit="reqps",
        ),
        ts(
            "Failed outbound attempts",
            "Share of attempts answered 5xx or not answered at all (timeout, refused).",
            [
                q(
                    "max by (service_name, framework, peer_service) "
                    f"({rec('service_name_peer_service:http_client_requests_errors:ratio_rate5m')})",
                    PEER,
                )
            ],
            unit="percentunit",
        ),
        ts(
            "Outbound call latency (p95)",
            "95th percentile of one attempt's duration, by caller and peer.",
            [
                q(
                    "max by (service_name, framework, peer_service) ("
                    + rec(
                        "service_name_peer_service:http_client_request_duration_seconds:"
                        "quantile_rate5m",
                        'quantile="0.95"',
                    )
                    + ")",
                    PEER,
                )
            ],
            unit="s",
        ),
        ts(
            "Circuit breaker state",
            "Towards each peer: 0 closed, 1 half-open (trying), 2 open (calls fail at once, "
            "without being sent); the worst worker's.",
            [
                q(
                    "max by (service_name, framework, peer_service) "
                    f"({raw('http_client_circuit_state')})",
                    PEER,
                )
            ],
            threshold=2,
            maximum=2,
        ),
        ts(
            "Retries per second, by reason",
            "Outbound calls retried after a failed attempt: a peer that starts failing shows "
            "here before the callers' error ratio moves.",
            [
                q(
                    "sum by (service_name, framework, peer_service, reason) "
                    f"(rate({raw('http_client_retries_total')}[$__rate_interval]))",
                    f"{PEER} {{{{reason}}}}",
                )
            ],
            unit="reqps",
        ),
        ts(
            "Calls refused by an open circuit",
            "Calls failed at once because the peer's circuit was open, per second.",
            [
                q(
                    or_zero(
                        "sum by (service_name, framework, peer_service) "
                        f"(rate({raw('http_client_circuit_rejections_total')}[$__rate_interval]))",
                        "service_name, framework, peer_service",
                        raw("http_client_circuit_state"),
                    ),
                    PEER,
                )
            ],
            unit="reqps",
        ),
        row("The audit outbox (one dispatcher per producer)"),
        ts(
            "Audit events waiting in the outbox",
            "Events written by each producer and not yet delivered to admin-django.",
            [
                q(
                    f"max by (service_name) ({rec('service_name:polyframe_outbox_pending:max')})",
                    "{{service_name}}",
                )
            ],
        ),
        ts(
            "Oldest undelivered audit event",
            "Age of the oldest waiting event (0 when none waits), from its creation time, "
            "which the dispatcher reads every round whether or not delivery works: a stuck "
            "delivery still shows a growing age.",
            [
                q(
                    "clamp_min(time() - min by (service_name) "
                    f"({raw('polyframe_outbox_oldest_pending_timestamp_seconds')}), 0)",
                    "{{service_name}}",
                )
            ],
            unit="s",
            threshold=30,
        ),
        ts(
            "Dispatcher heartbeat age",
            "Time since the dispatcher's last successful round. It grows while the loop is "
            "stuck or every round fails, even though /metrics (its own thread) still answers.",
            [
                q(
                    "time() - max by (service_name) "
                    f"({raw('polyframe_outbox_last_success_timestamp_seconds')})",
                    "{{service_name}}",
                )
            ],
            unit="s",
            threshold=60,
        ),
        ts(
            "Audit events delivered per second",
            "Deliveries to admin-django accepted (a redelivery counts again).",
            [
                q(
                    "max by (service_name) "
                    f"({rec('service_name:polyframe_outbox_delivered:rate5m')})",
                    "{{service_name}}",
                )
            ],
            unit="reqps",
        ),
        ts(
            "Failed deliveries per second",
            "Delivery attempts that failed (retried later with backoff).",
            [
                q(
                    "sum by (service_name) "
                    f"(rate({raw('polyframe_outbox_failed_total')}[$__rate_interval]))",
                    "{{service_name}}",
                )
            ],
            unit="reqps",
        ),
        ts(
            "Dispatcher rounds that raised",
            "Rounds of the dispatcher's loop that ended in an exception, over the last 5 "
            "minutes (the first one included).",
            [
                q(
                    or_zero(
                        f"sum by (service_name) ({events('polyframe_outbox_loop_errors_total')})",
                        "service_name",
                        raw("polyframe_outbox_pending"),
                    ),
                    "{{service_name}}",
                )
            ],
            bars=True,
        ),
        row("Processes: exits, descriptors, degraded modes"),
        ts(
            "gunicorn worker exits, by reason",
            "Workers the master saw exit: timeout (killed by gunicorn's worker timeout: its "
            "main loop stopped heartbeating), crash (died on its own), restart (max_requests "
            "or a reload), over the last 5 minutes, the first exit of a kind included.",
            [
                q(
                    or_zero(
                        f"sum by (service_name, reason) ({events('polyframe_worker_exits_total')})",
                        "service_name",
                        raw("polyframe_worker_threads"),
                    ),
                    "{{service_name}} {{reason}}",
                )
            ],
            bars=True,
        ),
        ts(
            "Open file descriptors",
            "Per process (master and workers; pid locally). A steady climb is a leak: "
            "connections or files never closed.",
            [
                q(
                    f"max by (service_name, instance, pid, process_role) "
                    f"({raw('process_open_fds')})",
                    "{{service_name}} {{instance}} {{process_role}} {{pid}}",
                )
            ],
        ),
        ts(
            "Rate-limit fallbacks",
            "Rate-limit counter operations done in the process because Redis was unreachable, "
            "per second: meanwhile each process enforces its own limits.",
            [
                q(
                    or_zero(
                        "sum by (service_name) "
                        f"(rate({raw('polyframe_rate_limit_fallbacks_total')}[$__rate_interval]))",
                        "service_name",
                        raw("polyframe_build_info", 'framework="fastapi"'),
                    ),
                    "{{service_name}}",
                )
            ],
            unit="ops",
        ),
    ]
