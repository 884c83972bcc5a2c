"""gunicorn for the WSGI services: shared settings, an instrumented gthread worker, hooks.

Design: docs/architecture.md, "Runtime signals", "The thread pool".
"""

from __future__ import annotations

import importlib
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.workers.gthread import ThreadWorker as GThreadWorker

from service_kit import (
    drain,
    exposition,
    health,
    metrics,
    refusals,
    runtime,
    telemetry,
    tracing,
    unread,
    workerexits,
)
from service_kit.cycle import ENQUEUED_ENVIRON
from service_kit.logs import gunicorn_logconfig


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
    framework: str,
    default_workers: int = 2,
    default_threads: int = 4,
    import_before_fork: tuple[str, ...] = (),
) -> dict[str, Any]:
    """gunicorn settings from ``<PREFIX>_BIND``, ``_WORKERS``, ``_THREADS``, ``_LOG_LEVEL``
    and ``_METRICS_BIND`` (the master's metrics address); ``service`` and ``framework``
    label what the master itself records (its workers' exits, its own process figures).

    ``import_before_fork``: modules the master imports before it forks its workers (see
    :func:`import_modules`): their code is loaded once, and shared copy-on-write."""
    env = os.environ
    global _drain_seconds
    _drain_seconds = drain_setting(env, prefix)
    return {
        "wsgi_app": wsgi_app,
        "bind": env.get(f"{prefix}_BIND", f"127.0.0.1:{default_port}"),
        "worker_class": "service_kit.gunicorn.ThreadWorker",
        "workers": int(env.get(f"{prefix}_WORKERS", str(default_workers))),
        "threads": int(env.get(f"{prefix}_THREADS", str(default_threads))),
        # The master kills (SIGABRT, then SIGKILL) a worker whose main loop has not told it
        # "alive" for this long: a process stuck as a whole (a C call holding the GIL, a
        # deadlock). A long or hung request in a gthread pool thread is NOT cut: the main
        # loop notifies on; the oldest in-flight request's age shows such a request.
        "timeout": 30,
        # On SIGTERM a worker drains (<PREFIX>_DRAIN_SECONDS: serving on, /readyz failing),
        # then in-flight requests get the rest of this to finish (a chart's grace period is
        # longer, so nothing is cut off).
        "graceful_timeout": drain.GRACEFUL_SECONDS,
        "keepalive": 5,
        # The app is made in each worker after the fork (no preload): database pools,
        # service clients, the OpenTelemetry exporter and the runtime sampler's thread are
        # made per process, never copied (a thread does not survive a fork). Its modules
        # may be imported by the master (``import_before_fork``): code, not state.
        "preload_app": False,
        "accesslog": None,
        "logconfig_dict": gunicorn_logconfig(service, env.get(f"{prefix}_LOG_LEVEL", "INFO")),
        "proc_name": service,
        # No control socket ($HOME/.gunicorn/gunicorn.ctl, shared by every gunicorn of the
        # user, and not writable on a read-only root filesystem): nothing here uses it.
        "control_socket_disable": True,
        "on_starting": import_modules(import_before_fork),
        "when_ready": _serve_metrics_from_master(
            env.get(f"{prefix}_METRICS_BIND"),
            (service, framework) if _instrumented(env, prefix) else None,
        ),
        "post_worker_init": post_worker_init,
        "child_exit": workerexits.counting_child_exit(service, framework),
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


def import_modules(modules: tuple[str, ...]) -> Callable[[Any], None]:
    """``on_starting``: :func:`on_starting`, then ``modules`` imported by the master.

    Each worker forked afterwards finds them imported: it skips their import at boot (a
    quicker cold start, less CPU on a busy node), and their code and module-level data
    stay in pages the workers share with the master until one writes to them, instead of
    a copy in each worker (less memory per worker, PSS). Only modules whose import makes
    no connection, thread, file or telemetry state: the app itself is made per worker.
    Measured in docs/benchmarks.md ("Cold start and memory").
    """

    def on_starting_and_import(server: Any) -> None:
        on_starting(server)
        for module in modules:
            importlib.import_module(module)

    return on_starting_and_import


def _instrumented(env: Mapping[str, str], prefix: str) -> bool:
    """``<PREFIX>_INSTRUMENTATION`` as the services' settings read it (pydantic's booleans)."""
    raw = env.get(f"{prefix}_INSTRUMENTATION", "true").strip().lower()
    return raw not in ("0", "false", "f", "no", "n", "off")


def _serve_metrics_from_master(
    bind: str | None, labels: tuple[str, str] | None
) -> Callable[[Any], None]:
    """``when_ready``, before any worker exists: in multiprocess mode, the master's pid and
    labels are recorded (the workers inherit them) so that its memory, CPU and open files
    are part of the merged ``/metrics`` (``process_role="master"``); with
    ``<PREFIX>_METRICS_BIND``, the master serves that ``/metrics`` on that address.

    Scraped there, the metrics answer even when every worker thread is busy: a scrape
    through the workers' own port would have to wait for a free thread, exactly when
    the pool is exhausted and the numbers matter most.
    """

    def when_ready(server: Any) -> None:
        if labels is not None and exposition.multiprocess_dir():
            runtime.set_master(os.getpid(), labels)
            for reason in (
                metrics.WORKER_EXIT_REASONS
            ):  # 0 from the start (after on_starting emptied the folder)
                metrics.WORKER_EXITS.labels(*labels, reason)
        if labels is not None:
            _check_readiness(server)
        if bind and exposition.multiprocess_dir():
            exposition.serve_merged(bind)
            server.log.info("metrics of all workers on http://%s/metrics", bind)

    return when_ready


def _check_readiness(server: Any) -> None:
    """Ask the server's own ``/readyz`` from a thread of the master, until it passes: the
    worker that answers records the cold start (master's start to ready) then, not when a
    kubelet or ``make up`` first probes. Through the bound socket, as any client would.
    """
    for listener in server.LISTENERS:
        address = listener.getsockname()
        if listener.family not in (socket.AF_INET, socket.AF_INET6):
            continue  # a Unix socket: left to the outside probes
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address[0], address[0])  # noqa: S104
        threading.Thread(
            target=health.probe_until_ready,
            args=(host, address[1]),
            name="polyframe-cold-start",
            daemon=True,
        ).start()
        return


def post_worker_init(worker: Any) -> None:
    """Worker side, app loaded: report the thread pool's size from the start."""
    if isinstance(worker, ThreadWorker):
        worker.instrument()


def worker_exit(_server: Any, _worker: Any) -> None:
    """Worker side, on its way out: send the spans still buffered."""
    tracing.flush()


#: How often the main loop adds the busy seconds of requests still running (its heartbeat
#: comes at least once a second, and after every event: no need to write each time).
BUSY_SLICE_SECONDS = 1.0

#: Seconds a worker serves on after SIGTERM, ``/readyz`` failing (set by :func:`settings`
#: in the master, inherited by the workers it forks).
_drain_seconds = 2.0


#: Thread-local of the pool threads: when the request a thread serves was queued.
_serving = threading.local()


def write_problem(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error`` (its 414, 431 and 400 for what it cannot parse),
    answering problem+json instead of an HTML page, then lingering (:mod:`service_kit.refusals`)."""
    gunicorn_util.write_nonblock(sock, refusals.answer(status_int, reason, mesg))
    refusals.linger(sock)


class ThreadWorker(GThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, reporting its thread pool into the metric catalogue,
    draining on SIGTERM (:mod:`service_kit.drain`), answering the requests gunicorn refuses
    itself as problem+json (:mod:`service_kit.refusals`), handing each request's queue time
    to the app (:data:`~service_kit.cycle.ENQUEUED_ENVIRON`), saying ``Connection: close``
    only when it cannot reuse the connection (:mod:`service_kit.unread`) and telling the
    master how it exits (:class:`~service_kit.workerexits.ExitNotingTmp`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # in the master, before the fork
        self.tmp: Any = workerexits.ExitNotingTmp(self.tmp)

    def init_process(self) -> None:
        # gunicorn's workers write their refusals through ``util.write_error``; this is a
        # worker process of ours, so every refusal it writes is a problem.
        gunicorn_util.write_error = write_problem
        try:
            super().init_process()
        except SystemExit as leaving:
            # SIGQUIT/SIGINT (the master's quick stop) leave with 0; SIGABRT with 1.
            if leaving.code in (0, None):
                self.tmp.mark_clean_exit()
            raise
        self.tmp.mark_clean_exit()  # the run loop ended: SIGTERM, max_requests, no parent

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app: Any = self.wsgi

        def with_enqueued_time(environ: dict[str, Any], start_response: Any) -> Any:
            enqueued = getattr(_serving, "enqueued", None)
            if enqueued is not None:
                environ[ENQUEUED_ENVIRON] = enqueued
            return app(environ, unread.settling_start_response(start_response))

        self.wsgi: Any = with_enqueued_time

    def handle_exit(self, sig: int, frame: Any) -> None:
        if _drain_seconds <= 0:
            super().handle_exit(sig, frame)
            return
        drain.begin(_drain_seconds, lambda: GThreadWorker.handle_exit(self, sig, frame))

    _busy: Any = None
    _busy_seconds: Any = None
    _queue: Any = None
    #: Pool threads serving a request: thread id -> the time its busy seconds count from.
    _busy_since: dict[int, float]
    _busy_lock: threading.Lock
    _sliced_at = 0.0

    def instrument(self) -> bool:
        """Bind to the app's telemetry (once its factory has run); False when it is off."""
        if self._busy is None:
            current = telemetry.current()
            if current is None or not current.enabled:
                return False
            self._busy_since = {}
            self._busy_lock = threading.Lock()
            self._busy_seconds = metrics.WORKER_THREADS_BUSY_SECONDS.labels(*current.labels)
            self._queue = metrics.REQUEST_QUEUE_DURATION.labels(*current.labels)
            metrics.WORKER_THREADS.labels(*current.labels).set(self.cfg.threads)
            self._busy = metrics.WORKER_THREADS_BUSY.labels(*current.labels)
        return True

    def notify(self) -> None:
        """The main loop's heartbeat (at least once a second): also the busy seconds of
        requests still running, so a hung request shows in the counter's rate at once."""
        super().notify()
        if self._busy is None:
            return
        now = time.perf_counter()
        if now - self._sliced_at < BUSY_SLICE_SECONDS:
            return
        self._sliced_at = now
        with self._busy_lock:
            for thread, since in self._busy_since.items():
                self._busy_seconds.inc(now - since)
                self._busy_since[thread] = now

    def _busy_begins(self) -> None:
        with self._busy_lock:
            self._busy_since[threading.get_ident()] = time.perf_counter()
        self._busy.inc()

    def _busy_ends(self) -> None:
        self._busy.dec()
        with self._busy_lock:
            since = self._busy_since.pop(threading.get_ident(), None)
            if since is not None:
                self._busy_seconds.inc(time.perf_counter() - since)

    def enqueue_req(self, conn: Any) -> None:
        conn.polyframe_enqueued = time.perf_counter()
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        enqueued = getattr(conn, "polyframe_enqueued", None)
        _serving.enqueued = enqueued
        try:
            if not self.instrument():
                return super().handle(conn)
            if enqueued is not None:
                self._queue.observe(time.perf_counter() - enqueued)
            self._busy_begins()
            try:
                return super().handle(conn)
            finally:
                self._busy_ends()
        finally:
            _serving.enqueued = None
