"""promtool on observability/prometheus: the scrape configuration, the rules, their unit tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

PROMETHEUS = Path(__file__).resolve().parents[2] / "observability" / "prometheus"
RULES = PROMETHEUS / "rules"
RULE_TESTS = PROMETHEUS / "tests"


def _promtool(binary: str, *args: str | Path) -> str:
    done = subprocess.run(
        [binary, *map(str, args)],
        capture_output=True,
        text=True,
        # A bound, not a measure: slo_test.yaml evaluates hours of rules (~5 s of CPU).
        timeout=600,
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


def test_there_are_rule_unit_tests() -> None:
    assert sorted(RULE_TESTS.glob("*.yaml")), f"no promtool test in {RULE_TESTS}"


@pytest.fixture(scope="module")
def rule_test_runs(promtool: str) -> Iterator[dict[Path, subprocess.Popen[str]]]:
    """``promtool test rules`` of every file, all started at once: each is a process of its own
    with its own in-memory storage (nothing shared), and on CI's 2 cores they take about half
    the time of one after the other (~35 s of CPU in all). Each test below waits for its own."""
    runs = {
        path: subprocess.Popen(
            [promtool, "test", "rules", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=PROMETHEUS,
        )
        for path in sorted(RULE_TESTS.glob("*.yaml"))
    }
    try:
        yield runs
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
            run.communicate()


@pytest.mark.parametrize("path", sorted(RULE_TESTS.glob("*.yaml")), ids=lambda p: p.name)
def test_the_rule_unit_tests_pass(
    rule_test_runs: dict[Path, subprocess.Popen[str]], path: Path
) -> None:
    run = rule_test_runs[path]
    # A bound, not a measure (see _promtool).
    output, _ = run.communicate(timeout=600)
    output = f"$ promtool test rules {path}\n{output}"
    assert run.returncode == 0, output
    assert output.count("SUCCESS") == 1, output
