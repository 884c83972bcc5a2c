"""The soak's table, its command line, and the target a ready file describes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from polyframe_bench import cli, report
from polyframe_bench.soak import Target
from polyframe_bench.soak.memory import rss_report
from polyframe_bench.soak.settings import Settings
from polyframe_bench.soak.stats import Stats
from polyframe_bench.soak.verify import failures
from polyframe_dev.plan import free_port


def _sample(mb: float) -> dict[str, int]:
    return {"rss_bytes": int(mb * 2**20), "processes": 3}


def test_the_table_has_every_figure_and_the_failures(
    results: Callable[..., dict[str, Any]],
) -> None:
    stats = Stats()
    for status, seconds in ((201, 0.05), (201, 0.07), (503, 0.5), (429, 0.01)):
        stats.record("write: create order", status, seconds)
    run = results(stats, rss_report({"a": _sample(100)}, {"a": _sample(101)}, {}, 30, Settings()))
    run["failures"] = failures(run, stats, [])
    table = report.soak_markdown(run)
    assert "Verdict: **FAILED**" in table
    assert "| write: create order | 4 | 2 | 429: 1, 503: 1 | 50 | 500 | 500 | 500 |" in table
    assert "| 503 | 1 |" in table
    assert "| 429 | 1 |" in table
    assert "| orders verified exactly once | 3 |" in table
    assert "| 4 | 4 | 0 | 0 | 0 | 0.5 |" in table
    assert "| a | 3->3 | 100.0 | 101.0 | 0.0 | +1.0% |" in table
    assert "reported, not asserted" in table
    assert "- write: create order: 1 x 503" in table


def test_the_command_line_says_what_to_do_next(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["soak", "--base-url", "http://127.0.0.1:1"]) == 2
    assert "--staff username:password" in capsys.readouterr().err
    port = free_port()
    assert cli.main(["soak", "--base-url", f"http://127.0.0.1:{port}", "--staff", "a:b"]) == 2
    error = capsys.readouterr().err
    assert f"cannot reach http://127.0.0.1:{port}" in error
    assert "make up" in error
    assert cli.main(["soak", "--base-url", "http://x", "--ready-file", "/nonexistent"]) == 2
    assert "cannot read the ready file" in capsys.readouterr().err


def test_the_target_of_a_ready_file(tmp_path: Path) -> None:
    staff = tmp_path / "staff.json"
    staff.write_text(
        json.dumps(
            [
                {"group": "support-readonly", "username": "rita", "password": "r"},
                {"group": "support-acting", "username": "ada", "password": "a"},
            ]
        )
    )
    ready = {
        "ingress": "http://127.0.0.1:8080/",
        "demo_staff_file": str(staff),
        "pids": {"users-fastapi": 10, "prometheus": 11},
    }
    target = Target.from_ready(ready)
    assert target == Target("http://127.0.0.1:8080", ("ada", "a"), {"users-fastapi": 10})
