"""How the local platform runs each service, from its manifest (services/<name>/service.yaml).

Environment, setup commands, server command line and workers come from the manifest; routes
from ``deploy/routes.yaml``; what only ``make up`` adds (demo orders, local limits) is here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from polyframe_dev import manifest
from polyframe_dev.localsecrets import LocalSecrets
from polyframe_dev.manifest import EnvVar, Manifest


@dataclass(frozen=True, slots=True)
class Context:
    data_dir: Path
    secrets: LocalSecrets
    #: Every server's port; a background process's metrics port under its own name.
    ports: dict[str, int]
    workers: int
    #: Metrics, traces and runtime probes in every service (``--no-instrumentation``: off).
    instrumentation: bool = True
    #: The fault-drill routes (``--drills``).
    drills: bool = False
    #: A PostgreSQL server (``postgresql://user@host:port/db``) to keep the services'
    #: databases in, one per service, instead of SQLite files (``--postgres``).
    postgres: str | None = None
    #: A PostgreSQL server for one service, over ``postgres`` (``--postgres-for NAME=URL``):
    #: e.g. one a test stops to take the database away from that service alone.
    postgres_for: Mapping[str, str] = field(default_factory=dict)
    #: The users service's rate limits (``--rate-limit NAME=VALUE``), over ``LOCAL_RATE_LIMITS``.
    rate_limits: Mapping[str, str] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def metrics_dir(self, service: str) -> Path:
        return self.data_dir / "metrics" / service

    def postgres_server(self, service: str) -> str | None:
        """The PostgreSQL server that keeps ``service``'s database (None: a SQLite file)."""
        return self.postgres_for.get(service, self.postgres)

    def database_url(self, service: str, driver: str, sqlite_driver: str = "sqlite") -> str:
        """The service's own database: a SQLite file, or its database on its PostgreSQL."""
        server = self.postgres_server(service)
        if server is None:
            return f"{sqlite_driver}:///{self.data_dir / f'{service}.db'}"
        return postgres_database_url(server, database_name(self.data_dir, service), driver)


#: The users service's rate-limit settings ``--rate-limit`` may set (``USERS_<NAME>``).
RATE_LIMIT_SETTINGS = (
    "login-limit-per-ip",
    "register-limit-per-ip",
    "ip-limit-window-seconds",
    "login-failure-limit",
    "login-failure-window-seconds",
)
#: A local platform takes every log-in and registration from one address (127.0.0.1): the
#: e2e suite and the soak register and log in hundreds of accounts, which the per-address
#: defaults of a deployment (30 log-ins, 10 registrations a minute) would refuse. The
#: per-account limit on failed log-ins keeps the service's default.
LOCAL_RATE_LIMITS = {"login-limit-per-ip": "100000", "register-limit-per-ip": "100000"}


def rate_limit_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """``USERS_*`` variables of the rate limits: the local defaults, then ``overrides``."""
    return {
        f"USERS_{name.upper().replace('-', '_')}": value
        for name, value in {**LOCAL_RATE_LIMITS, **overrides}.items()
    }


def database_name(data_dir: Path, service: str) -> str:
    """``polyframe_legacy_flask_1a2b3c4d``: one per service and data folder (so that two
    platforms, in tests, can share one PostgreSQL server)."""
    import hashlib

    folder = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return f"polyframe_{service.replace('-', '_')}_{folder}"


def postgres_database_url(server: str, database: str, driver: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(server).set(drivername=driver, database=database)
    return url.render_as_string(hide_password=False)


def drop_postgres_databases(server: str, data_dir: Path, services: Iterable[str]) -> None:
    """Drop the databases ``--postgres`` made for the platform of ``data_dir`` (tests, bench)."""
    import psycopg

    admin = postgres_database_url(server, "postgres", "postgresql")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
        for service in services:
            connection.execute(
                f'DROP DATABASE IF EXISTS "{database_name(data_dir, service)}" WITH (FORCE)'
            )


def ensure_postgres_databases(ctx: Context, services: list[str]) -> list[str]:
    """Create the services' databases on their PostgreSQL servers that do not exist yet."""
    import psycopg

    by_server: dict[str, list[str]] = {}
    for service in services:
        server = ctx.postgres_server(service)
        if server is not None:
            by_server.setdefault(server, []).append(service)
    created = []
    for server, served in by_server.items():
        admin = postgres_database_url(server, "postgres", "postgresql")
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            for service in served:
                name = database_name(ctx.data_dir, service)
                exists = connection.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
                ).fetchone()
                if not exists:
                    connection.execute(f'CREATE DATABASE "{name}"')
                    created.append(name)
    return created


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A service as ``make up`` runs it: its manifest (services/<name>/service.yaml), and
    what only the local platform adds (demo orders through the ingress, local rate limits)."""

    manifest: Manifest
    #: Demo data created through the public API once everything is up; idempotent.
    seed: Callable[[Context, str], str] | None = None
    #: Local-only variables of every process of the service (after the manifest's).
    local_env: Callable[[Context], dict[str, str]] = lambda ctx: {}

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def prefix(self) -> str:
        return self.manifest.prefix

    @property
    def docs(self) -> str:
        """Where a person starts: API docs, or the console."""
        return self.manifest.docs

    @property
    def workers(self) -> dict[str, list[str]]:
        """Background processes (name -> command line), each with a metrics port of its own."""
        return {name: _local_argv(argv) for name, argv in self.manifest.workers.items()}

    @property
    def master_metrics(self) -> bool:
        return self.manifest.server.master_metrics

    def preforks(self, ctx: Context) -> bool:
        """Several processes serve, so metrics need prometheus_client's multiprocess mode."""
        return self.manifest.server.preforks == "always" or ctx.workers > 1

    def _values(self, ctx: Context) -> dict[str, Any]:
        """What a manifest's ``local`` strings may name."""
        return {
            "port": ctx.ports,
            "url": _Urls(ctx),
            "workers": ctx.workers,
            "data_dir": ctx.data_dir,
            "secrets": ctx.secrets,
            "service_secret": ctx.secrets.service_secret(self.name),
            "trusted_services": ctx.secrets.trusted_services(self.name),
            "instrumentation": str(ctx.instrumentation).lower(),
            "drills": str(ctx.drills).lower(),
        }

    def _local(self, var: EnvVar, ctx: Context) -> str | None:
        if var.database:
            driver = self.manifest.database
            return ctx.database_url(self.name, driver["driver"], sqlite_driver=driver["sqlite"])
        if var.secret_file is not None:
            return self.manifest.secret_files[var.secret_file].local.format(**self._values(ctx))
        return None if var.local is None else var.local.format(**self._values(ctx))

    def _env(self, ctx: Context, *, server: bool) -> dict[str, str]:
        env = {}
        for var in self.manifest.env:
            value = self._local(var, ctx)
            if value is not None and var.flag is None and (server or not var.server):
                env[var.name] = value
        return {**env, **self.local_env(ctx)}

    def env(self, ctx: Context) -> dict[str, str]:
        """The environment of the setup commands (migrations, demo data)."""
        return self._env(ctx, server=False)

    def setup(self, ctx: Context) -> list[list[str]]:
        """Commands run in order before the server starts (migrations, demo data); idempotent."""
        values = self._values(ctx)
        return [
            _local_argv(part.format(**values) for part in (*step.run, *step.local_args))
            for step in self.manifest.setup
        ]

    def serve(self, ctx: Context) -> list[str]:
        """The production server's command line, with the options the image reads from env."""
        flags = []
        for var in self.manifest.env:
            value = self._local(var, ctx)
            if var.flag is not None and value is not None:
                flags += [var.flag, value]
        return [sys.executable, "-m", *self.manifest.server.command, *flags]

    @property
    def metrics_port_name(self) -> str | None:
        return f"{self.name}-metrics" if self.master_metrics else None

    def metrics_target(self, ctx: Context) -> str:
        """Where Prometheus scrapes this service."""
        name = self.metrics_port_name or self.name
        return f"127.0.0.1:{ctx.ports[name]}"

    def server_env(self, ctx: Context) -> dict[str, str]:
        """The server's environment: the manifest's, and multiprocess metrics where it forks."""
        env = self._env(ctx, server=True)
        if self.preforks(ctx):
            env["PROMETHEUS_MULTIPROC_DIR"] = str(ctx.metrics_dir(self.name))
            if self.metrics_port_name:
                env[f"{self.prefix}_METRICS_BIND"] = self.metrics_target(ctx)
        return env

    def worker_env(self, ctx: Context, worker: str) -> dict[str, str]:
        """A background process's environment: the server's, metrics on a port of its own."""
        server_only = ("PROMETHEUS_MULTIPROC_DIR", f"{self.prefix}_METRICS_BIND")
        env = {k: v for k, v in self.server_env(ctx).items() if k not in server_only}
        env[f"{self.prefix}_OUTBOX_METRICS_BIND"] = f"127.0.0.1:{ctx.ports[worker]}"
        return env


class _Urls:
    """``{url[admin-django]}`` in a manifest: that service's local address."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __getitem__(self, service: str) -> str:
        return self._ctx.url(service)


def _local_argv(argv: Iterable[str]) -> list[str]:
    """A manifest's command line as run here: ``python`` is this interpreter."""
    return [sys.executable if part == "python" else part for part in argv]


def _orders_seed(ctx: Context, ingress: str) -> str:
    """A few demo orders per demo member, through the ingress, with fixed idempotency keys."""
    accounts = json.loads(ctx.secrets.demo_accounts.read_text())
    created = 0
    with httpx.Client(base_url=ingress, timeout=10) as client:
        for account in (a for a in accounts if a["role"] == "member"):
            login = client.post(
                "/api/users/login",
                json={"email": account["email"], "password": account["password"]},
            )
            login.raise_for_status()
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            for number, (sku, quantity, price) in enumerate(DEMO_ORDERS, start=1):
                response = client.post(
                    "/api/orders",
                    json={
                        "currency": "EUR",
                        "items": [{"sku": sku, "quantity": quantity, "unit_price_cents": price}],
                    },
                    headers={**headers, "Idempotency-Key": f"demo-order-{number}"},
                )
                response.raise_for_status()
                created += "idempotent-replayed" not in response.headers
    return f"{created} demo order(s) created"


DEMO_ORDERS = [("BOOK-42", 1, 2_990), ("MUG-7", 2, 1_250)]

SERVICES: dict[str, ServiceSpec] = {
    "users-fastapi": ServiceSpec(
        manifest.load("users-fastapi"), local_env=lambda ctx: rate_limit_env(ctx.rate_limits)
    ),
    "legacy-flask": ServiceSpec(manifest.load("legacy-flask"), seed=_orders_seed),
    "admin-django": ServiceSpec(manifest.load("admin-django")),
}
