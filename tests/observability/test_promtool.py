"""promtool on observability/prometheus: the scrape configuration, the rules, their unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

PROMETHEUS = Path(__file__).resolve().parents[2] / "observability" / "prometheus"
RULES = PROMETHEUS / "rules"
RULE_TESTS = PROMETHEUS / "tests"


def _promtool(binary: str, *args: str | Path) -> str:
    done = subprocess.run(
        [binary, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=PROMETHEUS,
    )
    output = f"$ promtool {' '.join(map(str, args))}\n{done.stdout}{done.stderr}"
    assert done.returncode == 0, output
    return output


def test_the_scrape_configuration_is_valid(promtool: str) -> None:
    output = _promtool(promtool, "check", "config", PROMETHEUS / "prometheus.yml")
    # It loads the rule files too: the glob must find them.
    assert "SUCCESS: 0 rule files found" not in output, output


def test_the_rule_files_are_valid(promtool: str) -> None:
    files = sorted(RULES.glob("*.yaml"))
    assert files, f"no rule file in {RULES}"
    _promtool(promtool, "check", "rules", *files)


def test_the_rule_unit_tests_pass(promtool: str) -> None:
    files = sorted(RULE_TESTS.glob("*.yaml"))
    assert files, f"no promtool test in {RULE_TESTS}"
    output = _promtool(promtool, "test", "rules", *files)
    assert output.count("SUCCESS") == len(files), output
