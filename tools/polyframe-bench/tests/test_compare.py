"""``polyframe-bench compare``: a change counts only beyond the larger of the two runs' spreads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from polyframe_bench import cli, compare


@pytest.mark.parametrize(
    ("old", "new", "higher_is_better", "verdict"),
    [
        ([1000, 1100, 1050], [1300, 1350, 1400], True, "faster"),  # +300 beyond a spread of 100
        ([1000, 1100, 1050], [800, 850, 900], True, "slower"),
        ([1000, 1100, 1050], [1100, 1200, 1150], True, "within noise"),  # +100, spread 100
        ([10, 12, 11], [5, 6, 5.5], False, "faster"),  # lower latency is faster
        ([10, 12, 11], [20, 21, 22], False, "slower"),
        ([10, 30, 11], [20, 21, 22], False, "within noise"),  # OLD's own spread is 20
        ([10], [10.5], False, "slower"),  # one round: no spread, every change counts
    ],
)
def test_a_change_is_judged_against_the_larger_spread(
    old: list[float], new: list[float], higher_is_better: bool, verdict: str
) -> None:
    assert compare.classify(old, new, higher_is_better=higher_is_better)[3] == verdict


def _run(rps: list[float], cpu: list[float], cold: list[float], rss: float) -> dict[str, Any]:
    scenario = "users-fastapi read direct instr-on"
    return {
        "summary": {scenario: {}},
        "runs": [
            {
                "scenario": scenario,
                "round": n,
                "rps": r,
                "p50_ms": 10.0,
                "p99_ms": 50.0,
                "cpu_us_per_request": c,
            }
            for n, (r, c) in enumerate(zip(rps, cpu, strict=True), start=1)
        ],
        "cold_start_ms": {"users-fastapi": {"median": cold[1], "samples": cold}},
        "memory": {"users-fastapi": {"rss_per_worker_mb": rss}},
    }


def test_compare_prints_what_got_faster_or_slower(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(_run([1000, 1020, 1010], [2000, 2100, 2050], [900, 950, 1000], 110)))
    new.write_text(json.dumps(_run([1500, 1490, 1510], [2040, 2080, 2060], [1500, 1550, 1600], 90)))
    assert cli.main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in out.splitlines()}
    assert "**faster**" in rows["users-fastapi read direct instr-on", "rps"]
    assert "+48.5%" in rows["users-fastapi read direct instr-on", "rps"]
    assert "within noise" in rows["users-fastapi read direct instr-on", "cpu_us_per_request"]
    assert "within noise" in rows["users-fastapi read direct instr-on", "p99_ms"]  # unchanged
    assert "**slower**" in rows["users-fastapi cold start", "ms"]
    assert "not judged" in rows["users-fastapi memory", "rss_per_worker_mb"]
    assert out.startswith(f"{old} -> {new}: 1 faster, 1 slower,")
