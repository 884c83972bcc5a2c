"""How the local platform runs each service: its setup commands and its production server.

One entry per service. Routes are not here (they live in ``deploy/routes.yaml``);
this is only what differs per framework: environment, migrate/seed commands and
the server command line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from polyframe_dev.localsecrets import LocalSecrets


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
    name: str
    #: Its settings' environment prefix (``USERS`` for ``USERS_DATABASE_URL``).
    prefix: str
    env: Callable[[Context], dict[str, str]]
    #: Commands run in order before the server starts (migrations, demo data); idempotent.
    setup: Callable[[Context], list[list[str]]]
    #: The production server's command line.
    serve: Callable[[Context], list[str]]
    #: Demo data created through the public API once everything is up; idempotent.
    seed: Callable[[Context, str], str] | None = None
    #: Background processes of the service (name -> command line), e.g. its outbox
    #: dispatcher; each gets a port of its own for its metrics.
    workers: Mapping[str, list[str]] = field(default_factory=dict)
    #: Where a person starts: API docs, or the console.
    docs: str = ""
    #: Serves with several processes (gunicorn's master and workers; uvicorn with
    #: ``--workers`` over 1), so its metrics need prometheus_client's multiprocess mode.
    preforks: Callable[[Context], bool] = lambda ctx: True
    #: gunicorn's master serves the merged metrics on a port of its own (``<name>-metrics``),
    #: so a scrape never waits for a worker thread (see ``service_kit.gunicorn``).
    master_metrics: bool = False

    @property
    def metrics_port_name(self) -> str | None:
        return f"{self.name}-metrics" if self.master_metrics else None

    def metrics_target(self, ctx: Context) -> str:
        """Where Prometheus scrapes this service."""
        name = self.metrics_port_name or self.name
        return f"127.0.0.1:{ctx.ports[name]}"

    def server_env(self, ctx: Context) -> dict[str, str]:
        """The server's environment: its own settings, and the platform-wide switches."""
        env = {
            **self.env(ctx),
            f"{self.prefix}_INSTRUMENTATION": str(ctx.instrumentation).lower(),
            f"{self.prefix}_DRILLS": str(ctx.drills).lower(),
        }
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


def _users_env(ctx: Context) -> dict[str, str]:
    return {
        "USERS_ENVIRONMENT": "development",
        "USERS_DATABASE_URL": ctx.database_url(
            "users-fastapi", "postgresql+asyncpg", sqlite_driver="sqlite+aiosqlite"
        ),
        "USERS_JWT_PRIVATE_KEY_FILE": str(ctx.secrets.jwt_signing_key),
        "USERS_SERVICE_SECRET_FILE": str(ctx.secrets.service_secret("users-fastapi")),
        "USERS_TRUSTED_SERVICES_FILE": str(ctx.secrets.trusted_services("users-fastapi")),
        "USERS_ADMIN_URL": ctx.url("admin-django"),
        **rate_limit_env(ctx.rate_limits),
    }


def _users_serve(ctx: Context) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "users_fastapi.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(ctx.ports["users-fastapi"]),
        "--workers",
        str(ctx.workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--proxy-headers",
        "--forwarded-allow-ips",
        "127.0.0.1",
        "--timeout-graceful-shutdown",
        "15",
    ]


def _users_setup(ctx: Context) -> list[list[str]]:
    cli = [sys.executable, "-m", "users_fastapi.cli"]
    return [[*cli, "migrate"], [*cli, "seed", "--accounts-file", str(ctx.secrets.demo_accounts)]]


def _orders_env(ctx: Context) -> dict[str, str]:
    return {
        "ORDERS_ENVIRONMENT": "development",
        "ORDERS_DATABASE_URL": ctx.database_url("legacy-flask", "postgresql+psycopg"),
        "ORDERS_USERS_URL": ctx.url("users-fastapi"),
        "ORDERS_SERVICE_SECRET_FILE": str(ctx.secrets.service_secret("legacy-flask")),
        "ORDERS_TRUSTED_SERVICES_FILE": str(ctx.secrets.trusted_services("legacy-flask")),
        "ORDERS_BIND": f"127.0.0.1:{ctx.ports['legacy-flask']}",
        "ORDERS_WORKERS": str(ctx.workers),
        "ORDERS_ADMIN_URL": ctx.url("admin-django"),
    }


def _orders_setup(ctx: Context) -> list[list[str]]:
    return [[sys.executable, "-m", "legacy_flask.cli", "migrate"]]


def _orders_serve(ctx: Context) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", "python:legacy_flask.gunicorn_conf"]


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


def _admin_env(ctx: Context) -> dict[str, str]:
    return {
        "ADMIN_ENVIRONMENT": "development",
        "ADMIN_DATABASE_URL": ctx.database_url("admin-django", "postgresql"),
        "ADMIN_SECRET_KEY_FILE": str(ctx.secrets.django_secret_key),
        "ADMIN_SERVICE_SECRET_FILE": str(ctx.secrets.service_secret("admin-django")),
        "ADMIN_TRUSTED_SERVICES_FILE": str(ctx.secrets.trusted_services("admin-django")),
        "ADMIN_USERS_URL": ctx.url("users-fastapi"),
        "ADMIN_ORDERS_URL": ctx.url("legacy-flask"),
        "ADMIN_STATIC_ROOT": str(ctx.data_dir / "admin-static"),
        "ADMIN_BIND": f"127.0.0.1:{ctx.ports['admin-django']}",
        "ADMIN_WORKERS": str(ctx.workers),
    }


def _admin_setup(ctx: Context) -> list[list[str]]:
    manage = [sys.executable, "-m", "admin_django.manage"]
    return [
        [*manage, "migrate", "--no-input", "-v", "0"],
        [*manage, "collectstatic", "--no-input", "-v", "0"],
        [*manage, "seed_staff", "--accounts-file", str(ctx.secrets.demo_staff)],
    ]


def _admin_serve(ctx: Context) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", "python:admin_django.gunicorn_conf"]


SERVICES: dict[str, ServiceSpec] = {
    "users-fastapi": ServiceSpec(
        "users-fastapi",
        "USERS",
        _users_env,
        _users_setup,
        _users_serve,
        workers={"users-outbox": [sys.executable, "-m", "users_fastapi.cli", "dispatch-outbox"]},
        docs="/api/users/docs",
        # One uvicorn process serves alone (and keeps exemplars); several need the files.
        preforks=lambda ctx: ctx.workers > 1,
    ),
    "legacy-flask": ServiceSpec(
        "legacy-flask",
        "ORDERS",
        _orders_env,
        _orders_setup,
        _orders_serve,
        seed=_orders_seed,
        workers={"orders-outbox": [sys.executable, "-m", "legacy_flask.cli", "dispatch-outbox"]},
        docs="/api/orders/docs",
        master_metrics=True,
    ),
    "admin-django": ServiceSpec(
        "admin-django",
        "ADMIN",
        _admin_env,
        _admin_setup,
        _admin_serve,
        docs="/admin/",
        master_metrics=True,
    ),
}
