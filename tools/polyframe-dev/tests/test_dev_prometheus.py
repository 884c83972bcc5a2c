"""The local Prometheus's configuration, and ``--alert-for-max``: the shipped rules with only
``for:`` cut short, never by default."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from polyframe_dev import cli, prometheus
from polyframe_dev.plan import make_plan
from polyframe_dev.supervisor import StartupError

TARGETS = {"traefik": ["127.0.0.1:1"]}


def _shipped() -> dict[str, dict[str, Any]]:
    """Shipped rule file name -> its document."""
    folder = prometheus.observability_dir() / "rules"
    return {path.name: yaml.safe_load(path.read_text()) for path in folder.glob("*.yaml")}


def test_by_default_prometheus_loads_the_shipped_rule_files(tmp_path: Path) -> None:
    args = cli.parser().parse_args(["up"])
    assert args.alert_for_max is None
    document = yaml.safe_load(prometheus.write_config(tmp_path, TARGETS).read_text())
    assert document["rule_files"] == [str(prometheus.observability_dir() / "rules" / "*.yaml")]
    assert not (tmp_path / "rules").exists()


def test_durations_are_read_as_prometheus_reads_them() -> None:
    assert prometheus.seconds("5s") == 5
    assert prometheus.seconds("1h30m") == 5400
    assert prometheus.seconds("500ms") == 0.5
    assert prometheus.seconds("0s") == 0
    for wrong in ("", "5", "5 s", "1.5m", "m"):
        with pytest.raises(ValueError, match="not a Prometheus duration"):
            prometheus.seconds(wrong)


def test_alert_for_max_changes_only_the_longer_fors_of_alerts() -> None:
    document = {
        "groups": [
            {
                "name": "g",
                "interval": "30s",
                "rules": [
                    {"record": "a:b:c", "expr": "sum(x)"},
                    {"alert": "Long", "expr": "x > 1", "for": "3m", "labels": {"severity": "w"}},
                    {"alert": "Short", "expr": "x > 2", "for": "2s"},
                    {"alert": "Immediate", "expr": "x > 3"},
                ],
            }
        ]
    }
    shortened = prometheus.shorten_for(document, "5s")
    (group,) = shortened["groups"]
    assert group["interval"] == "30s"
    record, long, short, immediate = group["rules"]
    assert record == {"record": "a:b:c", "expr": "sum(x)"}
    assert long == {
        "alert": "Long",
        "expr": "x > 1",
        "for": "5s",
        "labels": {"severity": "w"},
        "annotations": {prometheus.SHORTENED_ANNOTATION: "3m"},
    }
    assert short == {"alert": "Short", "expr": "x > 2", "for": "2s"}
    assert immediate == {"alert": "Immediate", "expr": "x > 3"}
    assert document["groups"][0]["rules"][1]["for"] == "3m"  # the input is left alone


def test_alert_for_max_loads_copies_of_the_shipped_rules_that_differ_only_in_for(
    tmp_path: Path,
) -> None:
    config_file = prometheus.write_config(tmp_path, TARGETS, alert_for_max="5s")
    document = yaml.safe_load(config_file.read_text())
    copies = [Path(path) for path in document["rule_files"]]
    assert all(path.parent == tmp_path / "rules" for path in copies)
    shipped = _shipped()
    assert sorted(path.name for path in copies) == sorted(shipped)
    alerts = 0
    for path in copies:
        text = path.read_text()
        assert text.startswith("# NOT THE SHIPPED RULES"), text[:200]
        copy = yaml.safe_load(text)
        original = shipped[path.name]
        assert [g["name"] for g in copy["groups"]] == [g["name"] for g in original["groups"]]
        for copied_group, group in zip(copy["groups"], original["groups"], strict=True):
            for copied, rule in zip(copied_group["rules"], group["rules"], strict=True):
                if "alert" not in rule or "for" not in rule:
                    assert copied == rule
                    continue
                alerts += 1
                cap = min(prometheus.seconds(rule["for"]), 5)
                assert prometheus.seconds(copied["for"]) == cap
                annotations = dict(copied.get("annotations", {}))
                if prometheus.seconds(rule["for"]) > 5:
                    assert annotations.pop(prometheus.SHORTENED_ANNOTATION) == rule["for"]
                assert {**copied, "for": rule["for"], "annotations": annotations} == {
                    **rule,
                    "annotations": rule.get("annotations", {}),
                }
    assert alerts, "no alert with a `for:` in the shipped rules"
    # Prometheus would load them (promtool checks what the server checks at start).
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run(
            [promtool, "check", "rules", *map(str, copies)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_wrong_alert_for_max_is_refused_before_anything_starts(tmp_path: Path) -> None:
    args = cli.parser().parse_args(
        [
            *("up", "--port", "0", "--free-ports", "--data-dir", str(tmp_path)),
            *("--no-prometheus", "--alert-for-max", "5 seconds"),
        ]
    )
    with pytest.raises(StartupError, match="--alert-for-max '5 seconds'"):
        make_plan(args)
