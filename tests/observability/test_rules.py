"""The Prometheus rules: names, annotations, the metrics they read, and their promtool tests."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "observability" / "prometheus"
RUNBOOKS = REPO / "docs" / "runbooks"
CHARTS = REPO / "deploy" / "helm"

#: The alerts other tests (the live one) and operators' routing know by name.
ALERTS = (
    "PolyframeWatchdog",
    "PolyframeTargetDown",
    "PolyframeServiceAbsent",
    "PolyframeOutboxDispatcherAbsent",
    "PolyframeAvailabilitySLOBurn",
    "PolyframeAvailabilitySLOSlowBurn",
    "PolyframeLatencySLOBurn",
    "PolyframeLatencySLOSlowBurn",
    "PolyframeIngressBadGateway",
    "PolyframeEventLoopBlocked",
    "PolyframeEventLoopLagHigh",
    "PolyframeThreadPoolNearExhaustion",
    "PolyframeThreadPoolSaturated",
    "PolyframeRequestQueueing",
    "PolyframeHungRequest",
    "PolyframeWorkerExits",
    "PolyframeRepeatedQueries",
    "PolyframeOpenFdsHigh",
    "PolyframeDatabasePoolExhausted",
    "PolyframeDatabaseUnreachable",
    "PolyframeCircuitOpen",
    "PolyframeClientRetriesHigh",
    "PolyframeRateLimitFallback",
    "PolyframeAuditBacklog",
    "PolyframeOutboxDispatcherStalled",
    "PolyframeOutboxDeliveryFailing",
    "PolyframeOutboxLoopErrors",
)
#: Always firing, by design: no promtool test where it is quiet, no `for:`.
WATCHDOG = "PolyframeWatchdog"
#: Their windows (2 h to 3 d) hold hundreds of samples; slo_test.yaml tests them.
TICKET_TIERS = frozenset({"PolyframeAvailabilitySLOSlowBurn", "PolyframeLatencySLOSlowBurn"})
#: The SLO windows the alerts and the SLO dashboard read, and 30 days for the error budgets.
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d")
#: Recording rules the dashboards and alerts lean on: each has a promtool expression test.
MAIN_RECORDING_RULES = (
    "service_name:http_server_requests:rate5m",
    "service_name:http_server_requests_errors:ratio_rate5m",
    "service_name:http_server_request_duration_seconds:quantile_rate5m",
    "service_name_http_route:http_server_request_duration_seconds:quantile_rate5m",
    "service_name:http_server_requests_over_500ms:ratio_rate5m",
    "service_name:http_server_requests_over_500ms:ratio_rate6h",
    "service_name:http_server_requests_over_500ms:increase1h",
    "service_name:http_server_requests_errors:ratio_rate1h",
    "service_name:slo_availability_requests_errors:increase1h",
    "service_name:slo_availability_requests_errors:increase5m",
    "service_name:slo_availability_error_budget:remaining_ratio30d",
    "service_name:traefik_service_requests_bad_gateway:ratio_rate5m",
    "service_name:polyframe_worker_threads_busy:ratio_rate5m",
    "service_name_peer_service:http_client_retries:increase5m",
    "service_name_peer_service:http_client_retries:ratio_rate5m",
    "service_name:polyframe_outbox_oldest_pending_age_seconds:max",
    "service_name:polyframe_outbox_last_success_age_seconds:max",
    "service_name:traefik_service_requests:rate5m",
    "service_name:traefik_service_requests_errors:ratio_rate5m",
    "service_name:process_resident_memory_bytes:avg",
    "service_name:process_cpu_seconds_per_request:ratio_rate5m",
    "service_name:polyframe_cold_start_seconds:max",
    "service_name_http_route:polyframe_event_loop_blocks:increase5m",
    "service_name_http_route:polyframe_db_repeated_queries:increase5m",
    "service_name:polyframe_worker_threads_saturation:ratio",
)
#: level:metric:operations, in Prometheus's naming (lower case, underscores).
RECORD_NAME = re.compile(r"[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z][a-z0-9_]*")
DURATION = re.compile(r"\d+[smh]")
#: A range or a subquery's range: `[5m]`, `[1h:1m]`.
RANGE = re.compile(r"\[(\w+)(?::\w*)?\]")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


@functools.cache
def _unit_tests() -> tuple[dict[str, Any], ...]:
    """Every promtool test case, read once: the per-alert and per-rule checks below each scan
    them all (parsing ~120 kB of YAML for each of ~70 of them took 20-30 s of make test)."""
    tests: list[dict[str, Any]] = []
    for path in sorted((PROMETHEUS / "tests").glob("*.yaml")):
        tests.extend(yaml.safe_load(path.read_text())["tests"])
    return tuple(tests)


def _seconds(duration: str) -> float:
    """A Prometheus duration (`90s`, `1h30m`, `3d`) in seconds."""
    parts = re.findall(r"(\d+)(ms|[smhdwy])", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(number) * _UNITS[unit] for number, unit in parts)


def _dashboard_uids(dashboards: dict[str, dict[str, Any]]) -> set[str]:
    return {str(dashboard["uid"]) for dashboard in dashboards.values()}


def _chart_scrape_intervals() -> dict[str, float]:
    intervals = {}
    for values in sorted(CHARTS.glob("*/values.yaml")):
        monitor = (yaml.safe_load(values.read_text()) or {}).get("serviceMonitor")
        if monitor and "interval" in monitor:
            intervals[values.parent.name] = _seconds(str(monitor["interval"]))
    return intervals


def test_the_alerts_are_exactly_the_known_ones(rules: list[Any]) -> None:
    names = [rule.name for rule in rules if "alert" in rule.body]
    assert sorted(names) == sorted(ALERTS), "each alert once, and only the known ones"


@pytest.mark.parametrize("name", ALERTS)
def test_each_alert_says_how_bad_and_what_to_do(
    alerts: dict[str, Any], dashboards: dict[str, dict[str, Any]], name: str
) -> None:
    rule = alerts[name].body
    severities = {"none"} if name == WATCHDOG else {"critical", "warning"}
    assert rule["labels"]["severity"] in severities, rule["labels"]
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url", "dashboard_url"}, name
    for key, text in annotations.items():
        assert str(text).strip(), f"{name} has an empty {key}"
    # Relative in the files (usable as they are); the chart prefixes both from its values.
    assert annotations["runbook_url"] == f"docs/runbooks/{name}.md"
    uid = re.fullmatch(r"/d/([a-z0-9-]+)", annotations["dashboard_url"])
    assert uid, annotations["dashboard_url"]
    assert uid.group(1) in _dashboard_uids(dashboards), uid.group(1)
    if name == WATCHDOG:
        assert "for" not in rule
    else:
        assert DURATION.fullmatch(str(rule.get("for", ""))), f"{name}: `for:` {rule.get('for')!r}"


@pytest.mark.parametrize("name", ALERTS)
def test_each_alert_has_a_runbook_page(name: str) -> None:
    """What the old `runbook` annotation said, and more, one page per alert."""
    page = RUNBOOKS / f"{name}.md"
    assert page.is_file(), f"no runbook {page.relative_to(REPO)}"
    text = page.read_text()
    assert text.startswith(f"# {name}\n"), "the page is titled with the alert's name"
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert headings == ["Meaning", "Impact", "Diagnosis", "Mitigation"], headings


def test_every_runbook_page_is_an_alerts() -> None:
    pages = {page.stem for page in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == set(ALERTS), "pages without an alert: " + ", ".join(sorted(pages - set(ALERTS)))


def test_every_range_is_at_least_four_scrape_intervals(rules: list[Any]) -> None:
    """In Prometheus 3 a range is open at its start: with `[1m]` at a 30 s scrape it holds two
    samples, one missed scrape empties rate() and resets the alert's `for:`. Four intervals
    keep at least three samples after a missed scrape under either semantics."""
    intervals = _chart_scrape_intervals()
    assert intervals, "no chart with serviceMonitor.interval"
    shortest = 4 * max(intervals.values())
    short = [
        f"{rule.path.name}: {rule.name} [{window}]"
        for rule in rules
        for window in RANGE.findall(rule.body["expr"])
        if _seconds(window) < shortest
    ]
    assert not short, f"ranges under {shortest:g} s:\n" + "\n".join(short)


def test_the_range_check_sees_ranges_and_subqueries() -> None:
    assert RANGE.findall('rate(a[1m]) + max_over_time(b[2h:1m]) + c{x="[5m]"}') == [
        "1m",
        "2h",
        "5m",
    ]
    assert _seconds("1h30m") == 5400


def _reads_a_range(expr: str, recorded: dict[str, str], depth: int = 0) -> bool:
    assert depth < 10, "recording rules that read each other in a loop"
    if RANGE.search(expr):
        return True
    names = set(re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", expr))
    return any(_reads_a_range(recorded[n], recorded, depth + 1) for n in names if n in recorded)


def test_every_ranged_alert_survives_a_missed_scrape_at_the_charts_interval(
    rules: list[Any],
) -> None:
    """scrape_interval_test.yaml: series every 30 s (the charts'), one scrape missed (`_`),
    and the alert firing at the end, for every alert whose expression (or a recorded series
    it reads) has a range."""
    recorded: dict[str, str] = {}
    for rule in rules:
        if "record" in rule.body:  # several rules may record one name (quantile labels)
            recorded[rule.name] = recorded.get(rule.name, "") + "\n" + rule.body["expr"]
    ranged = {
        rule.name
        for rule in rules
        if "alert" in rule.body and _reads_a_range(rule.body["expr"], recorded)
    }
    assert "PolyframeAvailabilitySLOBurn" in ranged
    assert "PolyframeTargetDown" not in ranged
    document = yaml.safe_load((PROMETHEUS / "tests" / "scrape_interval_test.yaml").read_text())
    interval = max(_chart_scrape_intervals().values())
    assert _seconds(document["evaluation_interval"]) == interval
    covered = set()
    for test in document["tests"]:
        assert _seconds(test["interval"]) == interval, test["name"]
        assert any("_" in str(s["values"]).split() for s in test["input_series"]), test["name"]
        covered.update(c["alertname"] for c in test["alert_rule_test"] if c.get("exp_alerts"))
    assert ranged - TICKET_TIERS <= covered, sorted(ranged - TICKET_TIERS - covered)


def test_the_slo_ratios_cover_every_window(recorded: frozenset[str]) -> None:
    """The burn-rate alerts and the SLO dashboard read these names."""
    for window in SLO_WINDOWS:
        assert f"service_name:http_server_requests_errors:ratio_rate{window}" in recorded
        assert f"service_name:http_server_requests_over_500ms:ratio_rate{window}" in recorded


def test_recording_rules_are_named_level_metric_operations(rules: list[Any]) -> None:
    for rule in rules:
        if "record" in rule.body:
            assert RECORD_NAME.fullmatch(rule.name), f"{rule.path.name}: {rule.name}"


def test_every_recorded_series_a_rule_reads_is_recorded(
    rules: list[Any], recorded: frozenset[str], scan: Any
) -> None:
    for rule in rules:
        for selector in scan(rule.body["expr"]):
            if selector.recorded:
                assert selector.name in recorded, f"{rule.name} reads {selector.name}"


def test_every_metric_a_rule_reads_exists(rules: list[Any], known_metric: Any, scan: Any) -> None:
    unknown = {
        f"{rule.name}: {selector.name}"
        for rule in rules
        for selector in scan(rule.body["expr"])
        if not known_metric(selector.name)
    }
    assert not unknown, "not in the catalogue (service_kit.metrics) nor recorded:\n" + "\n".join(
        sorted(unknown)
    )


def test_the_scanner_finds_selectors_and_nothing_else(scan: Any) -> None:
    """The scanner the name checks rely on, on the shapes the rules use."""
    expr = (
        'sum by (namespace, le) (rate(a_bucket{le="0.5"}[5m])) / on (x) group_left (y) '
        "b_total unless c offset 5m or histogram_quantile(0.9, d:e:f) > bool 0.1 "
        '* label_replace(g, "n", "$1", "s", "(.*)")'
    )
    assert [(s.name, s.matchers) for s in scan(expr)] == [
        ("a_bucket", 'le="0.5"'),
        ("b_total", ""),
        ("c", ""),
        ("d:e:f", ""),
        ("g", ""),
    ]


@pytest.mark.parametrize("name", ALERTS)
def test_each_alert_has_promtool_tests_firing_and_not(name: str) -> None:
    firing = quiet = 0
    for test in _unit_tests():
        for case in test.get("alert_rule_test", []):
            if case["alertname"] != name:
                continue
            if case.get("exp_alerts"):
                firing += 1
            else:
                quiet += 1
    assert firing, f"no promtool test where {name} fires"
    assert quiet or name == WATCHDOG, f"no promtool test where {name} stays quiet"


@pytest.mark.parametrize("name", MAIN_RECORDING_RULES)
def test_each_main_recording_rule_has_a_promtool_test(recorded: frozenset[str], name: str) -> None:
    assert name in recorded
    tested = {
        case["expr"].split("{")[0].strip()
        for test in _unit_tests()
        for case in test.get("promql_expr_test", [])
    }
    assert name in tested, f"no promql_expr_test of {name}"


def test_rule_files_are_plain_prometheus_rule_files() -> None:
    """The Helm chart turns each file into a PrometheusRule as it is: groups, nothing else."""
    for path in sorted((PROMETHEUS / "rules").glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        assert set(document) == {"groups"}, path.name
        names = [group["name"] for group in document["groups"]]
        assert len(names) == len(set(names)), path.name


def test_the_scrape_configuration_keeps_its_jobs_and_rule_files() -> None:
    """polyframe-dev rewrites the targets of these jobs; the rule files are loaded from rules/."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/*.yaml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"users-fastapi", "legacy-flask", "admin-django", "outbox", "traefik"}
    for job in jobs.values():
        assert job["static_configs"][0]["labels"] == {"namespace": "local"}
