"""What ``polyframe-dev up`` will run, decided and checked before anything starts.

The routed services, their ports (each checked free), the data folder and its secrets.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from polyframe_dev import prometheus
from polyframe_dev.localsecrets import LocalSecrets, ensure_local_secrets
from polyframe_dev.routes import Route, load_routes
from polyframe_dev.services import RATE_LIMIT_SETTINGS, SERVICES, Context
from polyframe_dev.supervisor import StartupError

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
LOCAL_HOSTS = ("127.0.0.1", "0.0.0.0", "localhost")  # noqa: S104


@dataclass(frozen=True)
class Plan:
    routes: list[Route]
    #: The routed services, in the routing table's order.
    names: list[str]
    #: The services' background processes (outbox dispatchers), each with a metrics port.
    workers: list[str]
    ctx: Context
    host: str
    ingress_port: int
    internal_port: int
    otlp_endpoint: str | None
    #: The local Prometheus binary and port (None: not started).
    prometheus: tuple[str, int] | None
    #: Prometheus was wanted but is not installed (``up`` says how to install it).
    prometheus_missing: bool
    scrape_interval: str
    #: Every alert's ``for:`` cut to at most this (``--alert-for-max``); None: as shipped.
    alert_for_max: str | None
    #: Seconds each part may take to become ready.
    timeout: float

    @property
    def data_dir(self) -> Path:
        return self.ctx.data_dir

    @property
    def secrets(self) -> LocalSecrets:
        return self.ctx.secrets

    @property
    def public_url(self) -> str:
        """The ingress as a person opens it."""
        host = "localhost" if self.host in LOCAL_HOSTS else self.host
        return f"http://{host}:{self.ingress_port}"

    @property
    def ingress_url(self) -> str:
        """The ingress as this machine's clients reach it (readiness, seeding, the ready file)."""
        if self.host in LOCAL_HOSTS:
            return f"http://127.0.0.1:{self.ingress_port}"
        return self.public_url

    @property
    def internal_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    def otlp_env(self) -> dict[str, str]:
        if not self.otlp_endpoint:
            return {}
        # Short batches, so a trace shows up in the backend within a second or so.
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "500"}

    def scrape_targets(self) -> dict[str, list[str]]:
        """Prometheus job -> the host:port list this run's processes serve metrics on."""
        return {
            **{name: [SERVICES[name].metrics_target(self.ctx)] for name in self.names},
            "outbox": [f"127.0.0.1:{self.ctx.ports[worker]}" for worker in self.workers],
            "traefik": [f"127.0.0.1:{self.internal_port}"],
        }


def make_plan(args: argparse.Namespace) -> Plan:
    """The plan ``up``'s arguments ask for; raises :class:`StartupError` on what cannot run."""
    routes = load_routes()
    names = list(dict.fromkeys(route.service for route in routes))
    unknown = [name for name in names if name not in SERVICES]
    if unknown:
        raise StartupError(f"deploy/routes.yaml routes {unknown}, which polyframe-dev cannot run")
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    secrets = ensure_local_secrets(data_dir)
    workers = [worker for name in names for worker in SERVICES[name].workers]
    metrics_ports = [
        port for name in names if (port := SERVICES[name].metrics_port_name) is not None
    ]
    ingress_port, internal_port, ports = resolve_ports(args, names, [*workers, *metrics_ports])
    ctx = Context(
        data_dir=data_dir,
        secrets=secrets,
        ports=ports,
        workers=args.workers,
        instrumentation=not args.no_instrumentation,
        drills=args.drills,
        postgres=args.postgres,
        postgres_for=postgres_for(args.postgres_for),
        rate_limits=rate_limits(args.rate_limit),
        rate_limit_storage=args.rate_limit_storage,
    )
    binary = None if args.no_prometheus else prometheus.find_binary()
    if args.alert_for_max is not None:
        try:
            prometheus.seconds(args.alert_for_max)
        except ValueError:
            raise StartupError(
                f"--alert-for-max {args.alert_for_max!r}: expected a Prometheus duration "
                "such as 5s or 1m"
            ) from None
    return Plan(
        routes=routes,
        names=names,
        workers=workers,
        ctx=ctx,
        host=args.host,
        ingress_port=ingress_port,
        internal_port=internal_port,
        otlp_endpoint=args.otlp_endpoint,
        prometheus=None
        if binary is None
        else (binary, _prometheus_port(args, {ingress_port, internal_port, *ports.values()})),
        prometheus_missing=binary is None and not args.no_prometheus,
        scrape_interval=args.scrape_interval,
        alert_for_max=args.alert_for_max,
        timeout=args.timeout,
    )


def free_port(host: str = "127.0.0.1", avoid: Collection[int] = ()) -> int:
    """A port nothing listens on now and not in ``avoid`` (the ports picked before it for the
    same run: a probe closed at once may get the same number from the kernel twice)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


def check_port(host: str, port: int, what: str, hint: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise StartupError(
                f"port {port} on {host} ({what}) is already in use: stop what listens there, "
                f"or choose another port ({hint})"
            ) from None


def resolve_ports(
    args: argparse.Namespace, services: list[str], workers: list[str]
) -> tuple[int, int, dict[str, int]]:
    """The ingress port, Traefik's internal port and every process's own port, each free."""
    overrides: dict[str, int] = {}
    for item in args.service_port:
        name, _, value = item.partition("=")
        if name not in services or not value.isdigit():
            raise StartupError(
                f"--service-port {item!r}: expected NAME=PORT with NAME in {services}"
            )
        overrides[name] = int(value)
    host = args.host
    ingress = args.port or free_port(host)
    internal = args.internal_port or free_port("127.0.0.1", avoid={ingress})
    check_port(host, ingress, "the ingress", "make up PORT=9080")
    check_port("127.0.0.1", internal, "Traefik's ping and metrics", "--internal-port")
    ports: dict[str, int] = {}
    for name in [*services, *workers]:
        port = overrides.get(name, DEFAULT_PORTS.get(name, 0) if not args.free_ports else 0)
        port = port or free_port("127.0.0.1", avoid={ingress, internal, *ports.values()})
        check_port("127.0.0.1", port, name, f"--service-port {name}=PORT")
        ports[name] = port
    return ingress, internal, ports


def _prometheus_port(args: argparse.Namespace, taken: Collection[int]) -> int:
    port = (0 if args.free_ports else args.prometheus_port) or free_port("127.0.0.1", taken)
    check_port("127.0.0.1", port, "Prometheus", "--prometheus-port")
    return int(port)


def rate_limits(items: list[str]) -> dict[str, str]:
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


def postgres_for(items: list[str]) -> dict[str, str]:
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
