"""The process itself, sampled: what runs (build info), memory, CPU, file descriptors, GC.

A daemon thread samples every few seconds; :func:`server_age` gives the cold start.
Started by :func:`service_kit.telemetry.setup` in each worker, after the fork.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import sys
import threading
import time
from collections import deque
from importlib import metadata
from pathlib import Path

from service_kit import metrics

#: Seconds between two samples of memory, CPU and file descriptors.
SAMPLE_INTERVAL_SECONDS = 5.0

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
    watch_gc()
    _sampler = threading.Thread(
        target=_sample_forever, args=(labels,), name="polyframe-runtime-sampler", daemon=True
    )
    _sampler.start()


def _sample_forever(labels: tuple[str, str]) -> None:
    last_cpu = _cpu_seconds()
    metrics.PROCESS_CPU.labels(*labels).inc(last_cpu)
    while True:
        sample_process(labels)
        publish_gc(labels)
        time.sleep(SAMPLE_INTERVAL_SECONDS)
        now = _cpu_seconds()
        metrics.PROCESS_CPU.labels(*labels).inc(max(0.0, now - last_cpu))
        last_cpu = now


def sample_process(labels: tuple[str, str]) -> None:
    """Memory and file descriptors of this process, now."""
    rss = resident_memory_bytes()
    if rss is not None:
        metrics.PROCESS_RSS.labels(*labels).set(rss)
    with contextlib.suppress(OSError):
        metrics.PROCESS_OPEN_FDS.labels(*labels).set(
            sum(1 for _ in Path("/proc/self/fd").iterdir())
        )


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def resident_memory_bytes() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


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
