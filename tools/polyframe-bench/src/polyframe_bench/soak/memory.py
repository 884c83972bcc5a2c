"""The servers' memory: RSS of each server's process tree (the server and its workers).

Taken after the warm-up and at the end of the load; growth counts only over a long window.
"""

from __future__ import annotations

from typing import Any

from polyframe_bench import procs
from polyframe_bench.soak.settings import Settings


def rss(pids: dict[str, int]) -> dict[str, dict[str, int]]:
    """RSS bytes and process count of each server's tree (0 processes: it is gone)."""
    found = {}
    for name, pid in pids.items():
        memory = procs.memory(procs.tree(pid))
        found[name] = {"rss_bytes": memory.rss_bytes, "processes": memory.processes}
    return found


def rss_report(
    start: dict[str, dict[str, int]],
    end: dict[str, dict[str, int]],
    peak: dict[str, int],
    window: float,
    settings: Settings,
) -> dict[str, Any]:
    """Growth of each server from the warm-up's end to the load's end, and whether it counts."""
    asserted = window >= settings.rss_min_window
    servers = {}
    for name, first in start.items():
        last = end.get(name, {"rss_bytes": 0, "processes": 0})
        growth = (last["rss_bytes"] - first["rss_bytes"]) / first["rss_bytes"] if first else 0.0
        servers[name] = {
            "start_mb": round(first["rss_bytes"] / 2**20, 1),
            "end_mb": round(last["rss_bytes"] / 2**20, 1),
            "peak_mb": round(peak.get(name, 0) / 2**20, 1),
            "growth_pct": round(growth * 100, 1),
            "processes": f"{first['processes']}->{last['processes']}",
            "ok": growth < settings.rss_limit and last["processes"] > 0,
        }
    note = (
        f"asserted (< {settings.rss_limit:.0%}): {window:.0f} s between the warm-up's end and "
        f"the load's end"
        if asserted
        else f"reported, not asserted: {window:.0f} s between the warm-up's end and the load's "
        f"end is under {settings.rss_min_window:.0f} s, where allocator arenas, caches and "
        "connection pools still fill up (noise, not a leak)"
    )
    if not start:
        note = "not measured: no process ids (a running platform needs --ready-file)"
    return {"asserted": asserted and bool(start), "note": note, "servers": servers}


def rss_line(sample: dict[str, dict[str, int]]) -> str:
    return ", ".join(f"{name} {each['rss_bytes'] / 2**20:.0f} MB" for name, each in sample.items())
