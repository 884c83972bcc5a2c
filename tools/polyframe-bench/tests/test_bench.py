"""The benchmark harness: its parts, and one quick run of the whole (never a speed threshold)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from polyframe_bench import procs, report, wrk
from polyframe_bench.bench import errors, goals
from polyframe_dev.services import database_name, postgres_database_url
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


def _results(**cpu: float) -> dict[str, Any]:
    """A run's JSON: scenario name (``_`` for spaces) -> CPU µs per request (req/s: 1e6 / it)."""

    def entry(value: float) -> dict[str, Any]:
        def spread(number: float) -> dict[str, float]:
            return {"median": number, "min": number, "max": number}

        return {
            "subject": "",
            "connections": 50,
            "rps": spread(1e6 / value),
            "p50_ms": spread(10),
            "p99_ms": spread(100),
            "cpu_us_per_request": spread(value),
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
        "summary": {name.replace("_", " "): entry(value) for name, value in cpu.items()},
        "memory": {
            "users-fastapi": {
                "processes": 3,
                "rss_mb": 200,
                "pss_mb": 150,
                "rss_per_worker_mb": 90,
            },
            "bare-fastapi": {"processes": 3, "rss_mb": 120, "pss_mb": 80, "rss_per_worker_mb": 70},
        },
        "cold_start_ms": {
            "users-fastapi": {"median": 900, "min": 800, "max": 1000},
            "floor-fastapi": {"median": 450, "min": 400, "max": 500},
            "bare-fastapi": {"median": 300, "min": 250, "max": 350},
        },
        "errors": {},
    }


def _one_service_run() -> dict[str, Any]:
    results = _results(
        **{
            "users-fastapi_read_direct_instr-on": 1000,  # 1,000 req/s
            "users-fastapi_read_direct_instr-off": 900,  # 1,111 req/s
            "users-fastapi_read_ingress_instr-on": 1250,  # 800 req/s
            "floor-fastapi_read_direct": 400,
            "legacy-flask_create_order_(calls_users)_ingress_c50_instr-on": 5000,
        }
    )
    results["summary"]["users-fastapi read direct instr-on"]["subject"] = "users-fastapi"
    order = results["summary"]["legacy-flask create order (calls users) ingress c50 instr-on"]
    order["p99_ms"] = {"median": 240, "min": 200, "max": 300}
    order["errors"] = 2
    return results


def test_goals_are_ratios_of_one_run() -> None:
    found = {
        (goal["goal"].split(" (")[0], goal["service"]): goal for goal in goals(_one_service_run())
    }
    cpu = found["CPU per read", "users-fastapi"]
    assert (cpu["ratio"], cpu["met"]) == (2.5, True)
    cold = found["cold start", "users-fastapi"]  # against the readiness floor, not the bare app
    assert (cold["ratio"], cold["met"]) == (2, False)
    memory = found["memory per worker", "users-fastapi"]
    assert (memory["ratio"], memory["met"]) == (20, True)
    tax = found["observability tax", "users-fastapi"]
    assert (tax["ratio"], tax["met"]) == (0.9, True)
    ingress = found["ingress tax", "users-fastapi"]
    assert (ingress["ratio"], ingress["met"]) == (0.8, True)
    # Under 250 ms, but not with zero errors: not met.
    order = found["order creation p99 ms, 50 connections via Traefik", "legacy-flask"]
    assert (order["ratio"], order["errors"], order["met"]) == (240, 2, False)
    assert ("CPU per read", "legacy-flask") not in found  # not measured: no verdict


def test_the_table_gives_each_service_against_its_floors() -> None:
    results = _one_service_run()
    results["goals"] = goals(results)
    results["errors"] = errors(results)
    table = report.markdown(results)
    assert (
        "| users-fastapi | 1,000 / 400 = 2.50x | 900 / 450 = 2.00x | 90 - 70 = +20 | 0.90x | 0 |"
        in table
    )
    assert "p99 240 ms (200-300), 200 req/s, 2 errors" in table
    assert "| CPU per read (service / floor) | users-fastapi | 2.5 | <= 3 | met |" in table
    assert "| 240, 2 errors | <= 250 with zero errors | **not met** |" in table
    assert (
        "the run fails on any): legacy-flask create order (calls users) ingress c50 instr-on: 2."
        in table
    )


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
            "--workers",
            "1",  # the harness, not speed: half the processes and database connections
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
    assert set(results) == {
        "meta",
        "runs",
        "summary",
        "memory",
        "cold_start_ms",
        "goals",
        "errors",
        "postgres",
    }
    assert results["meta"]["settings"]["quick"] is True
    server = results["meta"]["settings"]["postgres"]  # the default
    assert server
    run_folder = tmp_path / "scratch" / json_file.stem
    made = [
        database_name(run_folder / platform / "data", service)
        for platform in ("platform-on", "platform-off")
        for service in ("users-fastapi", "legacy-flask", "admin-django")
    ]
    admin = postgres_database_url(server, "postgres", "postgresql")
    with psycopg.connect(admin, connect_timeout=5) as connection:
        left = connection.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)", (made,)
        ).fetchall()
    assert left == []  # dropped after the run
    for name, entry in results["summary"].items():
        assert entry["rps"]["median"] > 0, name
        assert entry["errors"] == 0, name
        assert entry["p99_ms"]["median"] >= entry["p50_ms"]["median"] > 0, name
    services = {"users-fastapi", "legacy-flask", "admin-django"}
    assert services <= set(results["memory"])
    floors = {"floor-fastapi", "floor-flask", "floor-django"}  # checked against the services
    assert {f"{floor} read direct" for floor in floors} <= set(results["summary"])
    assert services | floors | {"bare-fastapi", "bare-flask", "bare-django"} <= set(
        results["cold_start_ms"]
    )
    assert {goal["service"] for goal in results["goals"]} == services
    table = json_file.with_suffix(".md").read_text()
    assert "| framework (service) |" in table
    assert "FastAPI (users-fastapi)" in table
    assert json_file.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert table.strip() in completed.stdout
