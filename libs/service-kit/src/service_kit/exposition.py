"""``/metrics``: the catalogue's exposition, of this process or merged from every worker.

Multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is imported)
merges the workers' files; the modes and their limits are in docs/architecture.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from service_kit import runtime
from service_kit.metrics import REGISTRY

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


_DB_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db$")


def reap_dead_processes(path: str) -> list[int]:
    """Drop the live gauges of workers that no longer exist (uvicorn has no exit hook)."""
    reaped = []
    for file in Path(path).glob("gauge_live*_*.db"):
        match = _DB_FILE.search(file.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _alive(pid):
            continue
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        reaped.append(pid)
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rsplit(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


class _MergedWorkers(MultiProcessCollector):
    """Every worker's samples, after dropping the live gauges of dead workers, and the
    master's memory, CPU and open files (:func:`service_kit.runtime.master_families`)."""

    def collect(self) -> Any:
        reap_dead_processes(self._path)
        # A worker starting up creates its files empty and sizes them a moment later
        # (prometheus_client opens, then truncates): such a file holds no sample yet, and
        # reading it would fail the whole scrape with a 500.
        files = [file for file in Path(self._path).glob("*.db") if _size(file) > 0]
        merged = self.merge([str(file) for file in files], accumulate=True)  # type: ignore[no-untyped-call]
        return runtime.master_families(list(merged))


def _size(file: Path) -> int:
    try:
        return file.stat().st_size
    except FileNotFoundError:  # a dead worker's live gauges, dropped meanwhile
        return 0


def serve_merged(bind: str) -> None:
    """Serve every worker's merged metrics on ``host:port`` from a thread of this process.

    For gunicorn's master, which handles no request itself: its ``/metrics`` answers
    even when every worker thread is busy, which is exactly when a scrape that must
    wait for a worker thread would time out.
    """
    path = multiprocess_dir()
    if path is None:
        raise ValueError(f"{MULTIPROC_ENV} is not set: there is nothing to merge")
    host, _, port = bind.rpartition(":")
    registry = CollectorRegistry()
    _MergedWorkers(registry, path=path)  # type: ignore[no-untyped-call]
    start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)


def render(accept: str | None) -> tuple[bytes, str]:
    """The body and content type of ``/metrics`` for a scraper sending ``accept``.

    OpenMetrics (with exemplars) when the scraper asks for it, else the classic
    text format; in multiprocess mode, the merged samples of every worker.
    """
    encoder, content_type = choose_encoder(accept or "")
    path = multiprocess_dir()
    if path is None:
        return encoder(REGISTRY), content_type
    merged = CollectorRegistry()
    _MergedWorkers(merged, path=path)  # type: ignore[no-untyped-call]
    return encoder(merged), content_type
