"""gunicorn for the WSGI services: shared settings, an instrumented gthread worker, hooks.

Design: docs/architecture.md, "Runtime signals", "The thread pool".
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.workers.gthread import ThreadWorker as GThreadWorker

from service_kit import drain, exposition, metrics, telemetry, tracing
from service_kit.headers import missing as security_headers
from service_kit.logs import gunicorn_logconfig
from service_kit.problems import PROBLEM_CONTENT_TYPE, Problem


def drain_setting(env: Mapping[str, str], prefix: str) -> float:
    """``<PREFIX>_DRAIN_SECONDS``, checked as the services' setting is: from 0 to under
    :data:`service_kit.drain.MAX_SECONDS` (the requests in flight keep time to finish
    before the master kills)."""
    name = f"{prefix}_DRAIN_SECONDS"
    raw = env.get(name, "2")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < drain.MAX_SECONDS:
        raise SystemExit(
            f"{name}={raw!r}: expected seconds from 0 to under {drain.MAX_SECONDS:g}; fix it"
        )
    return seconds


def settings(
    *,
    prefix: str,
    service: str,
    wsgi_app: str,
    default_port: int,
    default_workers: int = 2,
    default_threads: int = 4,
) -> dict[str, Any]:
    """gunicorn settings from ``<PREFIX>_BIND``, ``_WORKERS``, ``_THREADS``, ``_LOG_LEVEL``
    and ``_METRICS_BIND`` (the master's metrics address)."""
    env = os.environ
    global _drain_seconds
    _drain_seconds = drain_setting(env, prefix)
    return {
        "wsgi_app": wsgi_app,
        "bind": env.get(f"{prefix}_BIND", f"127.0.0.1:{default_port}"),
        "worker_class": "service_kit.gunicorn.ThreadWorker",
        "workers": int(env.get(f"{prefix}_WORKERS", str(default_workers))),
        "threads": int(env.get(f"{prefix}_THREADS", str(default_threads))),
        # A request that takes longer than this is a bug or a hang: the worker is recycled.
        "timeout": 30,
        # On SIGTERM a worker drains (<PREFIX>_DRAIN_SECONDS: serving on, /readyz failing),
        # then in-flight requests get the rest of this to finish (a chart's grace period is
        # longer, so nothing is cut off).
        "graceful_timeout": drain.GRACEFUL_SECONDS,
        "keepalive": 5,
        # The app is imported in each worker after the fork (no preload): database pools,
        # service clients and the OpenTelemetry exporter are made per process, never copied.
        "preload_app": False,
        "accesslog": None,
        "logconfig_dict": gunicorn_logconfig(service, env.get(f"{prefix}_LOG_LEVEL", "INFO")),
        "proc_name": service,
        # No control socket ($HOME/.gunicorn/gunicorn.ctl, shared by every gunicorn of the
        # user, and not writable on a read-only root filesystem): nothing here uses it.
        "control_socket_disable": True,
        "on_starting": on_starting,
        "when_ready": _serve_metrics_from_master(env.get(f"{prefix}_METRICS_BIND")),
        "post_worker_init": post_worker_init,
        "child_exit": child_exit,
        "worker_exit": worker_exit,
    }


def on_starting(_server: Any) -> None:
    """Master side, before any worker exists: make the multiprocess folder, or empty it.

    Files of an earlier run (a restarted container keeps its emptyDir) would add old
    samples, and could name a pid that a new process has again.
    """
    path = exposition.multiprocess_dir()
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)  # a fresh emptyDir has no subfolder
        for stale in Path(path).glob("*.db"):
            stale.unlink(missing_ok=True)


def _serve_metrics_from_master(bind: str | None) -> Callable[[Any], None]:
    """``when_ready``: with ``<PREFIX>_METRICS_BIND`` (and multiprocess mode), the master
    serves the merged ``/metrics`` of all workers on that address.

    Scraped there, the metrics answer even when every worker thread is busy: a scrape
    through the workers' own port would have to wait for a free thread, exactly when
    the pool is exhausted and the numbers matter most.
    """

    def when_ready(server: Any) -> None:
        if bind and exposition.multiprocess_dir():
            exposition.serve_merged(bind)
            server.log.info("metrics of all workers on http://%s/metrics", bind)

    return when_ready


def post_worker_init(worker: Any) -> None:
    """Worker side, app loaded: report the thread pool's size from the start."""
    if isinstance(worker, ThreadWorker):
        worker.instrument()


def child_exit(_server: Any, worker: Any) -> None:
    """Master side: a worker is gone; its live gauges (busy threads, memory) go with it."""
    path = exposition.multiprocess_dir()
    if path:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(worker.pid, path)  # type: ignore[no-untyped-call]


def worker_exit(_server: Any, _worker: Any) -> None:
    """Worker side, on its way out: send the spans still buffered."""
    tracing.flush()


#: Seconds a worker serves on after SIGTERM, ``/readyz`` failing (set by :func:`settings`
#: in the master, inherited by the workers it forks).
_drain_seconds = 2.0


def write_problem(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error``, answering problem+json instead of an HTML page.

    gunicorn refuses some requests itself, before any application sees them: a request
    line over 4094 bytes (414), headers too large (431), a malformed request (400). Its
    page is the one answer of a service that is not problem+json; this one has the same
    shape as all the others (``instance`` is null: the path may be what could not be read).
    """
    problem = Problem(status=status_int, title=reason, detail=mesg or reason)
    body = json.dumps(problem.as_dict()).encode()
    headers = {
        "Connection": "close",
        "Content-Type": PROBLEM_CONTENT_TYPE,
        "Content-Length": str(len(body)),
        **security_headers(PROBLEM_CONTENT_TYPE, ()),
    }
    head = f"HTTP/1.1 {status_int} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + b"\r\n" + body)


class ThreadWorker(GThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, reporting its thread pool into the metric catalogue,
    draining on SIGTERM (see :mod:`service_kit.drain`), and answering the requests gunicorn
    refuses itself as problem+json (:func:`write_problem`)."""

    def init_process(self) -> None:
        # gunicorn's workers write their refusals through ``util.write_error``; this is a
        # worker process of ours, so every refusal it writes is a problem.
        gunicorn_util.write_error = write_problem
        super().init_process()

    def handle_exit(self, sig: int, frame: Any) -> None:
        if _drain_seconds <= 0:
            super().handle_exit(sig, frame)
            return
        drain.begin(_drain_seconds, lambda: GThreadWorker.handle_exit(self, sig, frame))

    _busy: Any = None
    _queue: Any = None

    def instrument(self) -> bool:
        """Bind to the app's telemetry (once its factory has run); False when it is off."""
        if self._busy is None:
            current = telemetry.current()
            if current is None or not current.enabled:
                return False
            self._busy = metrics.WORKER_THREADS_BUSY.labels(*current.labels)
            self._queue = metrics.REQUEST_QUEUE_DURATION.labels(*current.labels)
            metrics.WORKER_THREADS.labels(*current.labels).set(self.cfg.threads)
        return True

    def enqueue_req(self, conn: Any) -> None:
        conn.polyframe_enqueued = time.perf_counter()
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        if not self.instrument():
            return super().handle(conn)
        enqueued = getattr(conn, "polyframe_enqueued", None)
        if enqueued is not None:
            self._queue.observe(time.perf_counter() - enqueued)
        self._busy.inc()
        try:
            return super().handle(conn)
        finally:
            self._busy.dec()
