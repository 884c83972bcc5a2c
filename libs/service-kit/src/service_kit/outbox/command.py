"""The commands every producer's CLI has: ``migrate``, ``wait-for-migrations``, ``dispatch-outbox``.

A producer adds them to its parser with :func:`add_producer_commands` and runs them with
:func:`run_producer_command`; ``dispatch-outbox`` is a process of its own, until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from sqlalchemy import Table

from service_kit import metrics
from service_kit.client import ClientConfig, ServiceClient
from service_kit.logs import configure_logging
from service_kit.migrations import migrate, wait_for_migrations
from service_kit.outbox.dispatcher import Liveness, OutboxDispatcher
from service_kit.settings import ProducerSettings
from service_kit.sqla import blocking_engine
from service_kit.telemetry import Telemetry, setup
from service_kit.tracing import flush


def add_producer_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add the producer commands to a CLI's sub-commands (``dest="command"``)."""
    commands.add_parser("migrate", help="apply database migrations up to head")
    commands.add_parser(
        "dispatch-outbox",
        help="deliver queued audit events to admin-django until SIGTERM (its own process)",
    )
    wait_parser = commands.add_parser(
        "wait-for-migrations",
        help="wait until the database is at the migrations' head; exit 1 after --timeout",
    )
    wait_parser.add_argument("--timeout", type=float, required=True, help="seconds")


def run_producer_command(
    args: argparse.Namespace, settings: ProducerSettings, *, migrations: Path, outbox: Table
) -> int:
    """Run the producer command ``args.command``: its exit status."""
    if args.command == "migrate":
        migrate(migrations, settings.database_url)
        print(f"{settings.service_name}: migrations at head", file=sys.stderr)
        return 0
    if args.command == "wait-for-migrations":
        ready = wait_for_migrations(
            settings.service_name, migrations, settings.database_url, timeout_seconds=args.timeout
        )
        return 0 if ready else 1
    if args.command == "dispatch-outbox":
        return dispatch_command(settings, outbox)
    raise ValueError(f"not a producer command: {args.command}")


def dispatch_command(settings: ProducerSettings, table: Table) -> int:
    """A producer's ``dispatch-outbox`` command, from its settings: runs until SIGTERM."""
    configure_logging(settings.service_name, settings.log_level)
    instruments = setup(settings.service_name, "dispatcher", enabled=settings.instrumentation)
    return serve_dispatcher(
        producer=settings.service_name,
        database_url=settings.database_url,
        table=table,
        client=ServiceClient(
            ClientConfig.for_service(settings, "admin-django", settings.admin_url),
            telemetry=instruments,
        ),
        telemetry=instruments,
        metrics_bind=settings.outbox_metrics_bind,
        stall_seconds=settings.outbox_stall_seconds,
    )


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds would drown the dispatcher's own log."""


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def probe_app(liveness: Liveness) -> WSGIApp:
    """``/livez`` from ``liveness``; any other path is the catalogue's ``/metrics``."""
    metrics_app = make_wsgi_app(metrics.REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/livez":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        alive = liveness.alive
        body = json.dumps(
            {
                "status": "ok" if alive else "stalled",
                "since_last_round_seconds": round(liveness.since_last_round(), 3),
                "stall_seconds": liveness.bound,
            }
        ).encode()
        start_response(
            "200 OK" if alive else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


def serve_probes(bind: str, liveness: Liveness) -> WSGIServer:
    """Serve ``/metrics`` and ``/livez`` on ``host:port`` from a daemon thread.

    A thread of its own, so both answer while the loop is busy; which is why ``/metrics``
    answering proves nothing about the loop, and ``/livez`` asks :class:`Liveness`.
    """
    host, _, port = bind.rpartition(":")
    server = make_server(
        host or "127.0.0.1",
        int(port),
        probe_app(liveness),
        server_class=ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="outbox-probes", daemon=True).start()
    return server


def serve_dispatcher(
    *,
    producer: str,
    database_url: str,
    table: Table,
    client: ServiceClient,
    batch_size: int = 100,
    telemetry: Telemetry | None = None,
    metrics_bind: str | None = None,
    stall_seconds: float | None = None,
) -> int:
    """Run a dispatcher until SIGTERM/SIGINT.

    ``metrics_bind`` (``host:port``) serves this process's ``/metrics`` for Prometheus (the
    backlog, deliveries, the loop's heartbeat and errors, the calls to admin-django) and
    ``/livez``, which fails once no round completed for ``stall_seconds`` (default: from
    the client's timeouts, ``dispatcher.default_stall_seconds``).
    """
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    engine = blocking_engine(database_url)
    dispatcher = OutboxDispatcher(
        engine,
        table,
        client,
        producer=producer,
        batch_size=batch_size,
        telemetry=telemetry,
        stall_seconds=stall_seconds,
    )
    server = serve_probes(metrics_bind, dispatcher.liveness) if metrics_bind else None
    try:
        dispatcher.run(stop)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        client.close()
        engine.dispose()
        flush()
    return 0
