"""One benchmark run: start everything, load it in interleaved rounds, measure, stop.

Method: every scenario gets one warm-up run that is thrown away; then rounds
(A B C …, A B C …) so that drift of the machine hits every scenario alike;
medians with min and max over the rounds. Each load run is bounded in time and
aimed at 127.0.0.1 only. CPU per request is the process tree's user+system
time during the run divided by the requests it served; memory (RSS and PSS of
each server's process tree) is read after the load; cold starts are measured
last, each server alone.
"""

from __future__ import annotations

import os
import platform as host
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from polyframe_bench import coldstart, procs, wrk
from polyframe_bench.platform import BareProcess, Platform
from polyframe_bench.scenarios import LUA, Scenario, bare_scenarios, service_scenarios
from polyframe_bench.servers import BASELINE_OF, bare_servers

SERVICES = ("users-fastapi", "legacy-flask", "admin-django")


@dataclass(frozen=True)
class Settings:
    rounds: int = 3
    seconds: float = 8.0
    warmup_seconds: float = 2.0
    cold_starts: int = 5
    workers: int = 2
    quick: bool = False
    #: A PostgreSQL server for the services' databases (None: SQLite, make up's default).
    postgres: str | None = None


def _say(message: str) -> None:
    print(f"bench | {message}", file=sys.stderr, flush=True)


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _workers_rss(root: int) -> list[int]:
    """RSS of each worker of a server (the root's children; the root itself when alone)."""
    children = [pid for pid in procs.tree(root) if pid != root and not _is_helper(pid)]
    return [procs.memory([pid]).rss_bytes for pid in (children or [root])]


def _is_helper(pid: int) -> bool:
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def _memory(root: int) -> dict[str, Any]:
    tree = procs.memory(procs.tree(root))
    workers = _workers_rss(root)
    return {
        "processes": tree.processes,
        "rss_mb": round(tree.rss_mb, 1),
        "pss_mb": round(tree.pss_mb, 1),
        "rss_per_worker_mb": round(statistics.mean(workers) / 2**20, 1),
    }


def _load(scenario: Scenario, seconds: float, nonce: int) -> dict[str, Any]:
    target = scenario.target()
    tree = procs.tree(target.server_pid)
    cpu_before = procs.cpu_seconds(tree)
    result = wrk.run(
        target.url,
        seconds=seconds,
        connections=scenario.connections,
        script=LUA,
        env=target.env(nonce),
    )
    cpu = procs.cpu_seconds(procs.tree(target.server_pid)) - cpu_before
    return {
        "rps": result.rps,
        "requests": result.requests,
        "p50_ms": result.p50_ms,
        "p75_ms": result.p75_ms,
        "p90_ms": result.p90_ms,
        "p99_ms": result.p99_ms,
        "non_2xx": result.non_2xx,
        "socket_errors": result.socket_errors,
        "cpu_us_per_request": cpu / result.requests * 1e6 if result.requests else None,
    }


def run(
    settings: Settings, scratch: Path, progress: Callable[[str], None] = _say
) -> dict[str, Any]:
    wrk.binary()  # fails early, saying how to install it
    scratch.mkdir(parents=True, exist_ok=True)
    workers: tuple[str, ...] = ("--workers", str(settings.workers))
    if settings.postgres:
        workers = (*workers, "--postgres", settings.postgres)
    on = Platform("instrumented", scratch / "platform-on", workers)
    off = Platform("uninstrumented", scratch / "platform-off", (*workers, "--no-instrumentation"))
    bare = [BareProcess(server) for server in bare_servers(settings.workers)]
    if settings.quick:
        bare = [b for b in bare if b.server.baseline_of is not None]
    started = time.monotonic()
    results: dict[str, Any] = {"meta": _meta(settings), "runs": [], "summary": {}}
    try:
        try:
            progress("starting the platform twice (instrumented, uninstrumented) and the bare apps")
            on.start()
            off.start()
            on.prepare()
            off.prepare()
            for each in bare:
                each.start(scratch / f"{each.server.name}.log")
            scenarios = service_scenarios(on, off, quick=settings.quick) + bare_scenarios(bare)
            nonce = int(time.time())
            progress(f"{len(scenarios)} scenarios: warm-up ({settings.warmup_seconds:g} s each)")
            for scenario in scenarios:
                nonce += 1
                _load(scenario, settings.warmup_seconds, nonce)
            for round_number in range(1, settings.rounds + 1):
                for index, scenario in enumerate(scenarios, start=1):
                    nonce += 1
                    progress(
                        f"round {round_number}/{settings.rounds}, {index}/{len(scenarios)}: "
                        f"{scenario.name} ({settings.seconds:g} s, "
                        f"{scenario.connections} connections)"
                    )
                    measured = _load(scenario, settings.seconds, nonce)
                    results["runs"].append(
                        {"scenario": scenario.name, "round": round_number, **measured}
                    )
            for scenario in scenarios:
                runs = [r for r in results["runs"] if r["scenario"] == scenario.name]
                results["summary"][scenario.name] = {
                    "subject": scenario.subject,
                    "kind": scenario.kind,
                    "via": scenario.via,
                    "instrumented": scenario.instrumented,
                    "connections": scenario.connections,
                    "rps": _summary([r["rps"] for r in runs]),
                    "p50_ms": _summary([r["p50_ms"] for r in runs]),
                    "p99_ms": _summary([r["p99_ms"] for r in runs]),
                    "cpu_us_per_request": _summary(
                        [r["cpu_us_per_request"] for r in runs if r["cpu_us_per_request"]] or [0.0]
                    ),
                    "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
                }
            progress("memory of every server after the load")
            results["memory"] = {
                **{name: _memory(on.server_pid(name)) for name in SERVICES},
                **{f"{name} (instr-off)": _memory(off.server_pid(name)) for name in SERVICES},
                **{each.server.name: _memory(each.process.pid) for each in bare if each.process},
            }
        finally:
            for each in bare:
                each.stop()
        samples = 1 if settings.quick else settings.cold_starts
        progress(f"cold starts: {samples} per server, each alone")
        cold: dict[str, list[float]] = {}
        for _ in range(samples):
            for name in SERVICES:
                cold.setdefault(name, []).append(
                    coldstart.service(on, name, settings.workers, scratch)
                )
            for server in (b.server for b in bare):
                cold.setdefault(server.name, []).append(coldstart.bare(server, scratch))
        results["cold_start_ms"] = {
            name: {key: round(value * 1000, 1) for key, value in _summary(values).items()}
            for name, values in cold.items()
        }
    finally:
        # Whatever failed above, no server of the run outlives it.
        on.stop()
        off.stop()
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    results["goals"] = goals(results)
    return results


def _meta(settings: Settings) -> dict[str, Any]:
    return {**run_meta(), "settings": asdict(settings)}


def run_meta() -> dict[str, Any]:
    """When, at which commit and on what machine a run was made."""
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        revision = ""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": revision,
        "python": host.python_version(),
        "machine": host.machine(),
        "cpus": _cpus(),
    }


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


BASELINES = {
    "users-fastapi": "bare-fastapi",
    "legacy-flask": "bare-flask",
    "admin-django": "bare-django",
}


def _rps(results: dict[str, Any], name: str) -> float | None:
    entry = results["summary"].get(name)
    return float(entry["rps"]["median"]) if entry else None


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals as ratios measured in this one run."""
    found: list[dict[str, Any]] = []

    def add(name: str, service: str, ratio: float | None, target: float, lower: bool) -> None:
        if ratio is None:
            return
        met = ratio <= target if lower else ratio >= target
        found.append(
            {
                "goal": name,
                "service": service,
                "ratio": round(ratio, 3),
                "target": f"{'<=' if lower else '>='} {target:g}",
                "met": met,
            }
        )

    for service, bare in BASELINE_OF.items():
        on = _rps(results, f"{service} read direct instr-on")
        off = _rps(results, f"{service} read direct instr-off")
        ingress = _rps(results, f"{service} read ingress instr-on")
        bare_rps = _rps(results, f"{bare} hello direct")
        if on and off:
            add("observability tax (instrumented / uninstrumented)", service, on / off, 0.85, False)
        if on and bare_rps:
            add("framework tax (cheapest read / bare app)", service, on / bare_rps, 0.6, False)
        if on and ingress:
            add("ingress tax (through Traefik / direct)", service, ingress / on, 0.7, False)
        cold = results.get("cold_start_ms", {})
        if service in cold and bare in cold:
            add(
                "cold start (service / bare app)",
                service,
                cold[service]["median"] / cold[bare]["median"],
                1.5,
                True,
            )
        memory = results.get("memory", {})
        if service in memory and bare in memory:
            extra = memory[service]["rss_per_worker_mb"] - memory[bare]["rss_per_worker_mb"]
            add("memory per worker (MB over the bare app's)", service, extra, 30, True)
    return found
