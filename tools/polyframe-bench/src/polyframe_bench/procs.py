"""What a server costs the machine, read from ``/proc``: its process tree's CPU and memory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a gunicorn master and its workers, …)."""
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        if Path(f"/proc/{current}").exists():
            pids.append(current)
            pending.extend(_children(current))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of these processes so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


@dataclass(frozen=True, slots=True)
class Memory:
    processes: int
    rss_bytes: int
    pss_bytes: int

    @property
    def rss_mb(self) -> float:
        return self.rss_bytes / 2**20

    @property
    def pss_mb(self) -> float:
        return self.pss_bytes / 2**20


def memory(pids: list[int]) -> Memory:
    """RSS (pages each process holds) and PSS (shared pages split fairly) of the tree."""
    rss = pss = count = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        count += 1
        for line in rollup.splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                kib = int(rest.split()[0]) * 1024
                if key == "Rss":
                    rss += kib
                else:
                    pss += kib
    return Memory(count, rss, pss)
