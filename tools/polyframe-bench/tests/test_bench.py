"""The benchmark harness: its parts, and one quick run of the whole (never a speed threshold)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from polyframe_bench import procs, report, wrk
from polyframe_bench.bench import goals
from polyframe_testing.tools import unavailable

WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:8101/api/users/me
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    11.03ms    4.14ms  60.10ms   80.33%
    Req/Sec     2.29k   215.98     2.66k    70.00%
  Latency Distribution
     50%  {p50}
     75%   12.41ms
     90%   15.75ms
     99%    1.21s
  9120 requests in 2.00s, 2.94MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:   4559.12
Transfer/sec:      1.47MB
"""


@pytest.mark.parametrize(
    ("p50", "expected_ms"), [("823.00us", 0.823), ("9.83ms", 9.83), ("1.02s", 1020)]
)
def test_wrk_output_is_parsed(p50: str, expected_ms: float) -> None:
    result = wrk.parse(WRK_OUTPUT.format(p50=p50))
    assert result.requests == 9120
    assert result.seconds == pytest.approx(2.0)
    assert result.rps == pytest.approx(4560)
    assert result.p50_ms == pytest.approx(expected_ms)
    assert result.p99_ms == pytest.approx(1210)
    assert (result.non_2xx, result.socket_errors) == (7, 3)


def test_wrk_output_without_a_distribution_is_refused() -> None:
    with pytest.raises(ValueError, match="--latency"):
        wrk.parse("  10 requests in 1.00s, 1KB read\n")


def test_load_goes_to_127_0_0_1_only() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        wrk.run("http://example.com/", seconds=1, connections=1, script=None)


def test_process_tree_cpu_and_memory_of_a_real_child() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; sum(range(10**6)); time.sleep(30)"],
    )
    try:
        tree = procs.tree(os.getpid())
        assert os.getpid() in tree
        assert child.pid in tree
        memory = procs.memory([child.pid])
        assert memory.processes == 1
        assert memory.rss_bytes >= memory.pss_bytes > 0
        assert procs.cpu_seconds([os.getpid()]) > 0
    finally:
        child.kill()
        child.wait()


def _results(**rps: float) -> dict[str, Any]:
    def entry(value: float) -> dict[str, Any]:
        spread = {"median": value, "min": value, "max": value}
        return {
            "connections": 50,
            "rps": spread,
            "p50_ms": spread,
            "p99_ms": spread,
            "cpu_us_per_request": spread,
            "errors": 0,
        }

    return {
        "meta": {
            "date": "2026-11-27T00:00:00+00:00",
            "git": "abc1234",
            "python": "3.11.7",
            "machine": "x86_64",
            "cpus": 2,
            "settings": {"rounds": 1, "seconds": 1, "warmup_seconds": 1, "workers": 2},
        },
        "summary": {name.replace("_", " "): entry(value) for name, value in rps.items()},
        "memory": {
            "users-fastapi": {
                "processes": 3,
                "rss_mb": 200,
                "pss_mb": 150,
                "rss_per_worker_mb": 90,
            },
            "bare-fastapi": {"processes": 3, "rss_mb": 120, "pss_mb": 80, "rss_per_worker_mb": 50},
        },
        "cold_start_ms": {
            "users-fastapi": {"median": 900, "min": 800, "max": 1000},
            "bare-fastapi": {"median": 600, "min": 500, "max": 700},
        },
    }


def test_goals_are_ratios_of_one_run() -> None:
    results = _results(
        **{
            "users-fastapi_read_direct_instr-on": 900,
            "users-fastapi_read_direct_instr-off": 1000,
            "users-fastapi_read_ingress_instr-on": 600,
            "bare-fastapi_hello_direct": 3000,
        }
    )
    found = {goal["goal"].split(" (")[0]: goal for goal in goals(results)}
    assert found["observability tax"]["ratio"] == 0.9
    assert found["observability tax"]["met"]
    assert found["framework tax"]["ratio"] == 0.3
    assert not found["framework tax"]["met"]
    assert found["ingress tax"]["ratio"] == pytest.approx(0.667, abs=1e-3)
    assert not found["ingress tax"]["met"]
    assert found["cold start"]["ratio"] == 1.5
    assert found["cold start"]["met"]
    assert found["memory per worker"]["ratio"] == 40
    assert not found["memory per worker"]["met"]


def test_the_docs_section_is_replaced_and_the_prose_kept(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Title\n\nProse.\n\n{report.DOCS_START}\nold\n{report.DOCS_END}\n\nMore.\n")
    report.update_docs(docs, "| new | table |", "benchmarks.png")
    text = docs.read_text()
    assert "old" not in text
    assert "| new | table |" in text
    assert text.startswith("# Title\n\nProse.")
    assert text.endswith("More.\n")
    unmarked = tmp_path / "other.md"
    unmarked.write_text("# No markers\n")
    with pytest.raises(ValueError, match=r"no .* section"):
        report.update_docs(unmarked, "| t |", "c.png")


def test_a_quick_run_of_the_whole_harness(tmp_path: Path) -> None:
    """The real thing, shortened: platforms, bare apps, wrk, cold starts, the three outputs."""
    if shutil.which("wrk") is None:
        unavailable(wrk.INSTALL_HINT)
    results_dir = tmp_path / "results"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "polyframe_bench.cli",
            "run",
            "--quick",
            "--results-dir",
            str(results_dir),
            "--scratch",
            str(tmp_path / "scratch"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "round 1/1" in completed.stderr  # progress is shown
    (json_file,) = results_dir.glob("*.json")
    results = json.loads(json_file.read_text())
    assert set(results) == {"meta", "runs", "summary", "memory", "cold_start_ms", "goals"}
    assert results["meta"]["settings"]["quick"] is True
    for name, entry in results["summary"].items():
        assert entry["rps"]["median"] > 0, name
        assert entry["errors"] == 0, name
        assert entry["p99_ms"]["median"] >= entry["p50_ms"]["median"] > 0, name
    services = {"users-fastapi", "legacy-flask", "admin-django"}
    assert services <= set(results["memory"])
    assert services | {"bare-fastapi", "bare-flask", "bare-django"} <= set(results["cold_start_ms"])
    assert {goal["service"] for goal in results["goals"]} == services
    table = json_file.with_suffix(".md").read_text()
    assert "| framework (service) |" in table
    assert "FastAPI (users-fastapi)" in table
    assert json_file.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert table.strip() in completed.stdout
