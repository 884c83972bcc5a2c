"""The Prometheus rules: names, annotations, the metrics they read, and their promtool tests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "observability" / "prometheus"

#: The alerts other tests (the live one) and operators' routing know by name.
ALERTS = (
    "PolyframeServiceDown",
    "PolyframeHighErrorRatio",
    "PolyframeLatencySLOBurn",
    "PolyframeEventLoopBlocked",
    "PolyframeEventLoopLagHigh",
    "PolyframeThreadPoolNearExhaustion",
    "PolyframeRequestQueueing",
    "PolyframeRepeatedQueries",
    "PolyframeAuditBacklog",
)
#: Recording rules the dashboards and alerts lean on: each has a promtool expression test.
MAIN_RECORDING_RULES = (
    "service_name:http_server_requests:rate5m",
    "service_name:http_server_requests_errors:ratio_rate5m",
    "service_name:http_server_request_duration_seconds:quantile_rate5m",
    "service_name_http_route:http_server_request_duration_seconds:quantile_rate5m",
    "service_name:http_server_requests_over_500ms:ratio_rate5m",
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


def _unit_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = []
    for path in sorted((PROMETHEUS / "tests").glob("*.yaml")):
        tests.extend(yaml.safe_load(path.read_text())["tests"])
    return tests


def test_the_alerts_are_exactly_the_known_ones(alerts: dict[str, Any]) -> None:
    assert sorted(alerts) == sorted(ALERTS)


@pytest.mark.parametrize("name", ALERTS)
def test_each_alert_says_how_bad_and_what_to_do(alerts: dict[str, Any], name: str) -> None:
    rule = alerts[name].body
    assert rule["labels"]["severity"] in {"critical", "warning"}, rule["labels"]
    annotations = rule["annotations"]
    for key in ("summary", "description", "runbook"):
        assert str(annotations.get(key, "")).strip(), f"{name} has no {key}"
    # Steps an operator can follow, naming where to look.
    assert "1." in annotations["runbook"], annotations["runbook"]
    assert "dashboard" in annotations["runbook"].lower() or name == "PolyframeAuditBacklog"
    assert DURATION.fullmatch(str(rule.get("for", ""))), f"{name}: `for:` {rule.get('for')!r}"


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
    assert quiet, f"no promtool test where {name} stays quiet"


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
