"""The process itself, sampled: what runs (build info), memory, CPU, file descriptors, GC.

A daemon thread samples every few seconds (``process_role="worker"``); started by
:func:`service_kit.telemetry.setup` in each worker, after the fork. A server's master (gunicorn's
arbiter, uvicorn's supervisor with ``--workers``) runs no app and no sampler: its figures are
read from ``/proc`` by whichever process serves the merged ``/metrics`` (:func:`master_families`).
:func:`server_age` gives the cold start.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import platform
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from prometheus_client import Metric
from prometheus_client.samples import Sample

from service_kit import metrics

#: Seconds between two samples of memory, CPU and file descriptors.
SAMPLE_INTERVAL_SECONDS = 5.0

#: ``process_role`` of a process that serves requests (and of a lone server process).
WORKER = "worker"
#: ``process_role`` of a server's master: it forks or spawns the workers and serves no request.
MASTER = "master"

_sampler: threading.Thread | None = None


def version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def publish_build_info(service: str, framework: str) -> None:
    """``polyframe_build_info``: the versions of the service, its framework and Python."""
    metrics.BUILD_INFO.labels(
        service,
        framework,
        version(service),
        version(framework),
        platform.python_version(),
        _server(),
    ).set(1)


def _server() -> str:
    for name in ("gunicorn", "uvicorn"):
        if name in sys.modules:
            return f"{name} {version(name)}"
    return "other"


def start_sampler(labels: tuple[str, str]) -> None:
    """The sampler thread of this process, started once (the caller holds the set-up lock)."""
    global _sampler
    if _sampler is not None and _sampler.is_alive():
        return
    parent = multiprocessing.parent_process()
    if _master is None and parent is not None and parent.pid is not None:
        # A worker spawned by multiprocessing: uvicorn's supervisor (``--workers`` > 1).
        set_master(parent.pid, labels)
    watch_gc()
    _sampler = threading.Thread(
        target=_sample_forever, args=(labels,), name="polyframe-runtime-sampler", daemon=True
    )
    _sampler.start()


def _sample_forever(labels: tuple[str, str]) -> None:
    cpu = metrics.PROCESS_CPU.labels(*labels, WORKER)
    last_cpu = _cpu_seconds()
    cpu.inc(last_cpu)
    while True:
        sample_process(labels)
        publish_gc(labels)
        time.sleep(SAMPLE_INTERVAL_SECONDS)
        now = _cpu_seconds()
        cpu.inc(max(0.0, now - last_cpu))
        last_cpu = now


def sample_process(labels: tuple[str, str]) -> None:
    """Memory and file descriptors of this (worker) process, now."""
    rss = resident_memory_bytes()
    if rss is not None:
        metrics.PROCESS_RSS.labels(*labels, WORKER).set(rss)
    fds = open_fds("self")
    if fds is not None:
        metrics.PROCESS_OPEN_FDS.labels(*labels, WORKER).set(fds)
    limit = max_fds("self")
    if limit is not None:
        metrics.PROCESS_MAX_FDS.labels(*labels, WORKER).set(limit)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def resident_memory_bytes(pid: int | str = "self") -> int | None:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def open_fds(pid: int | str = "self") -> int | None:
    try:
        return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None


def max_fds(pid: int | str = "self") -> int | None:
    """The soft limit of open files of ``pid`` (``/proc/<pid>/limits``: another process's
    limit can be changed by prlimit, so it is read, not assumed equal to ours)."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft = line[len("Max open files") :].split()[0]
                return None if soft == "unlimited" else int(soft)
    except (OSError, IndexError, ValueError):
        return None
    return None


def cpu_seconds(pid: int | str = "self") -> float | None:
    """User and system CPU of ``pid`` itself (not of its children: workers count their own)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    except (OSError, IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


# -- the master: figures of a process that runs no sampler --------------------------------------


@dataclass(frozen=True, slots=True)
class Master:
    pid: int
    labels: tuple[str, str]


_master: Master | None = None


def set_master(pid: int, labels: tuple[str, str]) -> None:
    """``pid`` is this server's master (gunicorn's ``when_ready`` says so before it forks, so
    the workers know it too; a spawned uvicorn worker finds its supervisor itself)."""
    global _master
    _master = Master(pid, labels)


def master_families(families: list[Metric]) -> list[Metric]:
    """``families`` (the workers' merged metrics) with the master's memory, CPU and open
    files added, as ``process_role="master"``, read from ``/proc`` now.

    Read at each scrape, not sampled by a thread of the master: a thread writing metrics
    in the master could hold prometheus_client's lock when it forks a worker (which would
    then wait forever), and every value the master made would reappear, zero, in each
    worker's files (prometheus_client re-creates them all after a fork).
    """
    master = _master
    if master is None:
        return families
    figures = {
        metrics.PROCESS_RSS: resident_memory_bytes(master.pid),
        metrics.PROCESS_OPEN_FDS: open_fds(master.pid),
        metrics.PROCESS_MAX_FDS: max_fds(master.pid),
        metrics.PROCESS_CPU: cpu_seconds(master.pid),
    }
    by_name = {family.name: family for family in families}
    service_name, framework = master.labels
    labels = {"service_name": service_name, "framework": framework, "process_role": MASTER}
    for metric, value in figures.items():
        if value is None:  # the master is gone, or another user's
            continue
        (empty,) = metric.describe()  # the catalogue's name, help and type
        family = by_name.get(empty.name)
        if family is None:
            family = by_name[empty.name] = empty
            families.append(family)
        if family.type == "counter":
            family.samples.append(Sample(f"{family.name}_total", labels, value))
        else:  # liveall gauges: one series per process, named by its pid as the workers' are
            family.samples.append(Sample(family.name, {**labels, "pid": str(master.pid)}, value))
    return families


#: Collections seen by the GC callback and not yet published: (generation, pause seconds).
#: The callback runs wherever a collection happens to start, possibly inside a metric's
#: lock (prometheus_client's multiprocess mode has one lock for the whole process): so it
#: only appends here (a deque's append takes no lock) and the sampler thread publishes.
_gc_events: deque[tuple[int, float]] = deque(maxlen=100_000)
_gc_started: dict[int, float] = {}


def _on_gc(phase: str, info: dict[str, int]) -> None:
    generation = info.get("generation", 0)
    if phase == "start":
        _gc_started[generation] = time.perf_counter()
        return
    started = _gc_started.pop(generation, None)
    _gc_events.append((generation, time.perf_counter() - started if started else 0.0))


def watch_gc() -> None:
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def publish_gc(labels: tuple[str, str]) -> None:
    """Move the collections seen since the last call into the metrics (sampler thread).

    Only those: recording allocates, and may start collections that append more; a loop
    until the deque is empty could run forever (with low GC thresholds it does).
    """
    for _ in range(len(_gc_events)):
        generation, pause = _gc_events.popleft()
        metrics.GC_COLLECTIONS.labels(*labels, str(generation)).inc()
        metrics.GC_PAUSE.labels(*labels, str(generation)).observe(pause)


# -- how long has this server been running? -------------------------------------------------------


def server_age() -> float | None:
    """Seconds since the server's main process started: the leader of this process group.

    A gunicorn worker's group leader is the gunicorn master; uvicorn's workers are in
    the group of uvicorn's supervisor; a lone uvicorn, or a container's PID 1, leads
    its own. ``make up`` starts every server in a group of its own.
    """
    age = process_age(os.getpgid(0))
    return age if age is not None else process_age(os.getpid())


def process_age(pid: int) -> float | None:
    """Seconds since ``pid`` started (Linux ``/proc``, 10 ms resolution), or None."""
    try:
        started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return max(0.0, uptime - started / os.sysconf("SC_CLK_TCK"))
