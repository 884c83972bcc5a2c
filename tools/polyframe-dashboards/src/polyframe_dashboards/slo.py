"""polyframe-slo: the error budgets. Availability 99.9 % (no 5xx) and latency 99 % under
500 ms, each with its multi-window burn rates and the budget left over 30 days.

The burn rates and the budget left read the recording rules of
observability/prometheus/rules/polyframe-slo.yaml (``service_name:…:ratio_rate<window>`` and
``service_name:slo_<objective>_error_budget:remaining_ratio30d``), the very series the alerts
read: the dashboard shows what pages.
"""

from __future__ import annotations

from dataclasses import dataclass

from grafana_foundation_sdk.models import dashboard as models

from polyframe_dashboards.kit import Item, Query, dashboard, q, rec, row, single, ts

#: (long window, short window, burn rate) of the page and ticket tiers: Google's SRE workbook.
PAGE = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
TICKET = (("1d", "2h", 3.0), ("3d", "6h", 1.0))


@dataclass(frozen=True)
class Objective:
    name: str
    what: str
    target: float
    ratio: str  # the recorded ratio, without its window
    remaining: str  # the recorded share of the 30-day budget left


OBJECTIVES = (
    Objective(
        "Availability",
        "99.9 % of requests answered without a 5xx",
        0.999,
        "service_name:http_server_requests_errors:ratio_rate",
        "service_name:slo_availability_error_budget:remaining_ratio30d",
    ),
    Objective(
        "Latency",
        "99 % of requests answered in under 500 ms (queue time included on gunicorn)",
        0.99,
        "service_name:http_server_requests_over_500ms:ratio_rate",
        "service_name:slo_latency_error_budget:remaining_ratio30d",
    ),
)


def _remaining(objective: Objective) -> str:
    """Share of the 30-day budget left: 1 - (bad / all over 30 d) / (1 - target)."""
    return f"max by (service_name) ({rec(objective.remaining)})"


def _burn(objective: Objective, tiers: tuple[tuple[str, str, float], ...]) -> list[Query]:
    budget = round(1 - objective.target, 6)
    return [
        q(
            f"max by (service_name) ({rec(objective.ratio + window)}) / {budget}",
            f"{{{{service_name}}}} {window}",
        )
        for long, short, _ in tiers
        for window in (long, short)
    ]


def _panels(objective: Objective) -> list[Item]:
    budget = round(1 - objective.target, 6)
    return [
        row(f"{objective.name}: {objective.what}"),
        single(
            f"{objective.name}: error budget left (30 days)",
            f"Share of the 30-day budget ({budget:.1%} of requests) not yet spent; below 0 "
            "the objective is missed. Over the data Prometheus keeps, up to 30 days.",
            [q(_remaining(objective), "{{service_name}}")],
            unit="percentunit",
            width=6,
            height=8,
            steps=[(None, "red"), (0, "orange"), (0.25, "green")],
        ),
        ts(
            f"{objective.name}: error budget left over time",
            "The same, evaluated at every point of the range: a falling line is a budget being "
            "spent.",
            [q(_remaining(objective), "{{service_name}}")],
            unit="percentunit",
            width=6,
            threshold=0,
        )
        # Each point reads 30 days: a few hundred points are plenty.
        .interval("5m")
        .max_data_points(200),
        ts(
            f"{objective.name}: burn rate, page windows",
            "How fast the budget burns (1 = it lasts exactly 30 days). Page: over 14.4 on 1 h "
            "and 5 min (2 % of the budget in an hour), or over 6 on 6 h and 30 min; both "
            "windows of a pair must be over.",
            _burn(objective, PAGE),
            width=6,
            threshold=14.4,
        ),
        ts(
            f"{objective.name}: burn rate, ticket windows",
            "Ticket: over 3 on 1 d and 2 h, or over 1 on 3 d and 6 h (a slow burn that still "
            "spends the budget before the 30 days are over).",
            _burn(objective, TICKET),
            width=6,
            threshold=1,
        ),
    ]


def build() -> models.Dashboard:
    items: list[Item] = []
    for objective in OBJECTIVES:
        items.extend(_panels(objective))
    return dashboard(
        "polyframe-slo",
        "Polyframe / SLOs and error budgets",
        "Availability 99.9 % and latency 99 % under 500 ms per service: budget left over 30 "
        "days and multi-window burn rates (page: 14.4 and 6; ticket: 3 and 1).",
        ["slo"],
        items,
    )
