"""``polyframe-dev``: the local platform behind ``make up``, and its command line.

``up`` plans the run (:mod:`.plan`), then runs it (:mod:`.platform`) until Ctrl-C or SIGTERM,
and stops everything cleanly; ``config`` prints the Traefik routes.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from polyframe_dev.plan import DEFAULT_PORTS, make_plan
from polyframe_dev.platform import ME, Platform
from polyframe_dev.routes import load_routes
from polyframe_dev.services import RATE_LIMIT_SETTINGS
from polyframe_dev.supervisor import Interrupted, StartupError, Supervisor
from polyframe_dev.traefik import dynamic_config


def up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    stop = threading.Event()
    sup = Supervisor(colour=False if args.no_color else None, stop=stop)

    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # Only record it: a handler runs between any two bytecodes of the main thread,
        # possibly inside a log write, so it must take no lock and do no I/O.
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    try:
        platform = Platform(make_plan(args), sup)
        platform.run(started, Path(args.ready_file) if args.ready_file else None)
        return 0
    except Interrupted:
        return 130
    except StartupError as exc:
        sup.say(ME, f"error: {exc}")
        return 1
    finally:
        if received:
            sup.say(ME, f"{signal.Signals(received[0]).name} received: stopping everything")
        if sup.children:
            sup.say(ME, "stopping…")
            sup.stop_all(grace=args.grace, last=("traefik",))
            sup.say(ME, "stopped")


def config(args: argparse.Namespace) -> int:
    """Print the Traefik dynamic configuration generated from the routing table."""
    import yaml

    routes = load_routes()
    backends = {r.service: f"http://127.0.0.1:{DEFAULT_PORTS.get(r.service, 0)}" for r in routes}
    print(yaml.safe_dump(dynamic_config(routes, backends), sort_keys=True), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


def parser() -> argparse.ArgumentParser:
    """``polyframe-dev``'s arguments: ``up`` and its options, ``config``."""
    root = argparse.ArgumentParser(
        prog="polyframe-dev",
        description="Run the Polyframe platform locally: migrations, demo data, the services "
        "under their production servers, and Traefik as the ingress.",
    )
    sub = root.add_subparsers(dest="command", required=True)
    run = sub.add_parser("up", help="start the whole platform and wait for Ctrl-C")
    run.add_argument(
        "--host",
        default=os.environ.get("POLYFRAME_HOST", "127.0.0.1"),
        help="address the ingress listens on (default 127.0.0.1; env POLYFRAME_HOST)",
    )
    run.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("POLYFRAME_PORT", "8080")),
        help="ingress port (default 8080; 0 picks a free one; env POLYFRAME_PORT)",
    )
    run.add_argument(
        "--internal-port",
        type=int,
        default=0,
        help="Traefik ping/metrics port on 127.0.0.1 (default: a free one)",
    )
    run.add_argument(
        "--service-port",
        action="append",
        default=[],
        metavar="NAME=PORT",
        help=f"a service's own port (defaults {DEFAULT_PORTS})",
    )
    run.add_argument(
        "--free-ports",
        action="store_true",
        help="give every service a free port instead of the defaults (tests)",
    )
    run.add_argument(
        "--data-dir",
        default=os.environ.get("POLYFRAME_DATA_DIR", ".data"),
        help="folder for databases and generated secrets (default .data; env POLYFRAME_DATA_DIR)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("POLYFRAME_WORKERS", "1")),
        help="server worker processes per service (default 1; env POLYFRAME_WORKERS)",
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=90,
        help="seconds each part may take to become ready (default 90)",
    )
    run.add_argument(
        "--grace",
        type=float,
        default=20,
        help="seconds the servers get to drain on shutdown (default 20)",
    )
    run.add_argument(
        "--postgres",
        default=os.environ.get("POLYFRAME_POSTGRES") or None,
        metavar="URL",
        help="keep each service's database on this PostgreSQL server (one database per "
        "service, created if missing), e.g. postgresql://postgres@127.0.0.1:5432/postgres; "
        "default: SQLite files in the data folder (env POLYFRAME_POSTGRES)",
    )
    run.add_argument(
        "--postgres-for",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="keep service NAME's database on this PostgreSQL server instead (repeatable), "
        "e.g. legacy-flask=postgresql://postgres@127.0.0.1:5433/postgres",
    )
    run.add_argument(
        "--no-instrumentation",
        action="store_true",
        help="turn metrics, traces and runtime probes off in every service (to measure them)",
    )
    run.add_argument(
        "--drills",
        action="store_true",
        help="enable the fault-drill routes (block the event loop, hold threads, an N+1)",
    )
    run.add_argument(
        "--otlp-endpoint",
        default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
        metavar="URL",
        help="send traces of Traefik and every service to this OTLP/HTTP endpoint "
        "(e.g. http://127.0.0.1:4318; default: none are exported)",
    )
    run.add_argument(
        "--no-prometheus",
        action="store_true",
        help="do not start the local Prometheus even if the binary is installed",
    )
    run.add_argument(
        "--prometheus-port",
        type=int,
        default=9090,
        help="local Prometheus port on 127.0.0.1 (default 9090; 0 picks a free one)",
    )
    run.add_argument(
        "--scrape-interval",
        default="5s",
        help="how often the local Prometheus scrapes and evaluates rules (default 5s)",
    )
    run.add_argument(
        "--alert-for-max",
        default=None,
        metavar="DURATION",
        help="drills and tests only: load copies of the alert rules with every `for:` cut to at "
        "most DURATION (e.g. 5s), so an alert fires within seconds of its cause instead of "
        "minutes; default: the shipped rules as they are",
    )
    run.add_argument(
        "--rate-limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a rate limit of the users service (USERS_<NAME>), NAME one of "
        f"{', '.join(RATE_LIMIT_SETTINGS)}; locally log-ins and registrations per address "
        "default to 100000 a minute (every request comes from 127.0.0.1)",
    )
    run.add_argument(
        "--rate-limit-storage",
        default="",
        metavar="URL",
        help="a Redis (redis://127.0.0.1:6379/0) the users service's workers share limits in",
    )
    run.add_argument("--ready-file", help="write URLs and pids here as JSON once ready (tests)")
    run.add_argument("--no-color", action="store_true", help="no colours in the log prefixes")
    run.set_defaults(func=up)
    show = sub.add_parser(
        "config", help="print the Traefik routes generated from deploy/routes.yaml"
    )
    show.set_defaults(func=config)
    return root


if __name__ == "__main__":
    raise SystemExit(main())
