"""One benchmark run: start everything, load it in interleaved rounds, measure, stop.

Method: every scenario gets one warm-up run that is thrown away; then rounds
(A B C …, A B C …) so that drift of the machine hits every scenario alike;
medians with min and max over the rounds. Each load run is bounded in time and
aimed at 127.0.0.1 only. CPU per request is the process tree's user+system
time during the run divided by the requests it served; memory (RSS and PSS of
each server's process tree) is read after the load; cold starts are measured
last, each server alone. On PostgreSQL (the default) each service also gets its
floor (:mod:`polyframe_bench.floor`), checked to answer the same JSON as the
service before anything is measured.
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

import httpx

from polyframe_bench import coldstart, procs, wrk
from polyframe_bench.databases import Connections, floor_database, run_database_names
from polyframe_bench.floor import DATABASE_ENV, SERVICE_POOLS
from polyframe_bench.platform import BareProcess, Platform
from polyframe_bench.scenarios import (
    FLOOR_READS,
    LUA,
    SERVICE_READS,
    Scenario,
    bare_scenarios,
    floor_scenarios,
    service_scenarios,
)
from polyframe_bench.servers import BASELINE_OF, FLOOR_OF, bare_servers, floor_servers

SERVICES = ("users-fastapi", "legacy-flask", "admin-django")
#: The PostgreSQL server of ``make bench`` (``--postgres`` or ``POLYFRAME_BENCH_POSTGRES``
#: say another): a fresh database per service and platform, dropped after the run.
DEFAULT_POSTGRES = os.environ.get(
    "POLYFRAME_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass(frozen=True)
class Settings:
    rounds: int = 3
    seconds: float = 8.0
    warmup_seconds: float = 2.0
    cold_starts: int = 5
    workers: int = 2
    quick: bool = False
    #: A PostgreSQL server for the services' databases and the floors (None: SQLite files,
    #: and no floors).
    postgres: str | None = DEFAULT_POSTGRES


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
    pools = dict(SERVICE_POOLS) if settings.postgres else {}
    on = Platform("instrumented", scratch / "platform-on", workers, env=pools)
    off = Platform(
        "uninstrumented", scratch / "platform-off", (*workers, "--no-instrumentation"), env=pools
    )
    bare = [BareProcess(server) for server in bare_servers(settings.workers)]
    if settings.quick:
        bare = [b for b in bare if b.server.baseline_of is not None]
    floors: list[BareProcess] = []
    started = time.monotonic()
    results: dict[str, Any] = {"meta": _meta(settings), "runs": [], "summary": {}}
    try:
        try:
            databases = Connections(settings.postgres, [])
            if settings.postgres:
                databases.start()  # before anything of the run holds a connection
                progress(
                    f"PostgreSQL: {databases.free_at_start} of {databases.max_connections} "
                    'connections free before the run (too few: 500s, "too many clients")'
                )
            progress("starting the platform twice (instrumented, uninstrumented) and the bare apps")
            on.start()
            off.start()
            on.prepare()
            off.prepare()
            if settings.postgres:
                floors = [
                    BareProcess(server, env={DATABASE_ENV: floor_database(on, server.floor_of)})
                    for server in floor_servers(settings.workers)
                ]
            for each in bare + floors:
                each.start(scratch / f"{each.server.name}.log")
            check_floors(on, floors)
            scenarios = (
                service_scenarios(on, off, quick=settings.quick)
                + bare_scenarios(bare)
                + floor_scenarios(on, floors)
            )
            nonce = int(time.time())
            progress(f"{len(scenarios)} scenarios: warm-up ({settings.warmup_seconds:g} s each)")
            for scenario in scenarios:
                nonce += 1
                _load(scenario, settings.warmup_seconds, nonce)
            databases.names = run_database_names((on, off))
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
                    databases.sample()
            if databases.server:
                results["postgres"] = databases.summary()
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
                **{
                    each.server.name: _memory(each.process.pid)
                    for each in bare + floors
                    if each.process
                },
            }
        finally:
            for each in bare + floors:
                each.stop()
        samples = 1 if settings.quick else settings.cold_starts
        progress(f"cold starts: {samples} per server, each alone")
        cold: dict[str, list[float]] = {}
        for _ in range(samples):
            for name in SERVICES:
                cold.setdefault(name, []).append(
                    coldstart.service(on, name, settings.workers, scratch)
                )
            for each in bare + floors:
                cold.setdefault(each.server.name, []).append(
                    coldstart.bare(each.server, scratch, each.env)
                )
        results["cold_start_ms"] = {
            name: {
                **{key: round(value * 1000, 1) for key, value in _summary(values).items()},
                "samples": [round(value * 1000, 1) for value in values],
            }
            for name, values in cold.items()
        }
    finally:
        # Whatever failed above, no server of the run outlives it.
        on.stop()
        off.stop()
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    results["goals"] = goals(results)
    results["errors"] = errors(results)
    return results


def check_floors(platform: Platform, floors: list[BareProcess]) -> None:
    """Each floor answers its service's read with the same JSON (else it is no floor)."""
    with httpx.Client(timeout=30) as client:
        for floor in floors:
            service = floor.server.floor_of
            assert service is not None
            path, auth = SERVICE_READS[service]
            answer = client.get(
                platform.service(service) + path(platform),
                headers={"Authorization": auth(platform)},
            )
            answer.raise_for_status()
            floor_answer = client.get(floor.url + FLOOR_READS[service](platform))
            floor_answer.raise_for_status()
            if answer.json() != floor_answer.json():
                raise RuntimeError(
                    f"{floor.server.name} answers {floor_answer.text} where {service} answers "
                    f"{answer.text}: the floor must read the same row into the same JSON"
                )


def errors(results: dict[str, Any]) -> dict[str, int]:
    """Non-2xx answers and socket errors per scenario, where there were any."""
    return {name: entry["errors"] for name, entry in results["summary"].items() if entry["errors"]}


def _meta(settings: Settings) -> dict[str, Any]:
    pools = dict(SERVICE_POOLS) if settings.postgres else {}
    return {**run_meta(), "settings": asdict(settings), "service_pools": pools}


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


ORDER_SCENARIO = "legacy-flask create order (calls users) ingress c50 instr-on"


def _median(results: dict[str, Any], name: str, key: str) -> float | None:
    entry = results["summary"].get(name)
    return float(entry[key]["median"]) if entry and entry[key]["median"] else None


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 18's goals, each measured in this one run (interleaved rounds), met or not."""
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

    def ratio(numerator: float | None, denominator: float | None) -> float | None:
        return numerator / denominator if numerator and denominator else None

    cold = results.get("cold_start_ms", {})
    memory = results.get("memory", {})
    for service, bare in BASELINE_OF.items():
        floor = FLOOR_OF[service]
        read = f"{service} read direct instr-on"
        add(
            "CPU per read (service / floor)",
            service,
            ratio(
                _median(results, read, "cpu_us_per_request"),
                _median(results, f"{floor} read direct", "cpu_us_per_request"),
            ),
            3,
            True,
        )
        if service in cold and floor in cold:
            add(
                "cold start (service / readiness floor)",
                service,
                cold[service]["median"] / cold[floor]["median"],
                1.5,
                True,
            )
        if service in memory and bare in memory:
            extra = memory[service]["rss_per_worker_mb"] - memory[bare]["rss_per_worker_mb"]
            add("memory per worker (MB over the bare app's)", service, extra, 30, True)
        add(
            "observability tax (instrumented / uninstrumented req/s)",
            service,
            ratio(
                _median(results, read, "rps"),
                _median(results, f"{service} read direct instr-off", "rps"),
            ),
            0.9,
            False,
        )
        add(
            "ingress tax (through Traefik / direct req/s)",
            service,
            ratio(
                _median(results, f"{service} read ingress instr-on", "rps"),
                _median(results, read, "rps"),
            ),
            0.7,
            False,
        )
    order = results["summary"].get(ORDER_SCENARIO)
    if order:
        add("order creation p99 ms, 50 connections via Traefik", "legacy-flask",
            order["p99_ms"]["median"], 250, True)  # fmt: skip
        found[-1]["met"] = found[-1]["met"] and order["errors"] == 0
        found[-1]["errors"] = order["errors"]
    return found
