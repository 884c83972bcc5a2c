"""How the local platform runs each service: its setup commands and its production server.

One entry per service. Routes are not here (they live in ``deploy/routes.yaml``);
this is only what differs per framework: environment, migrate/seed commands and
the server command line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from polyframe_dev.localsecrets import LocalSecrets


@dataclass(frozen=True, slots=True)
class Context:
    data_dir: Path
    secrets: LocalSecrets
    ports: dict[str, int]
    workers: int

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    env: Callable[[Context], dict[str, str]]
    #: Commands run in order before the server starts (migrations, demo data); idempotent.
    setup: Callable[[Context], list[list[str]]]
    #: The production server's command line.
    serve: Callable[[Context], list[str]]


def _users_env(ctx: Context) -> dict[str, str]:
    return {
        "USERS_ENVIRONMENT": "development",
        "USERS_DATABASE_URL": f"sqlite+aiosqlite:///{ctx.data_dir / 'users-fastapi.db'}",
        "USERS_JWT_PRIVATE_KEY_FILE": str(ctx.secrets.jwt_signing_key),
        "USERS_SERVICE_SECRET_FILE": str(ctx.secrets.service_secret("users-fastapi")),
        "USERS_TRUSTED_SERVICES_FILE": str(ctx.secrets.trusted_services("users-fastapi")),
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


SERVICES: dict[str, ServiceSpec] = {
    "users-fastapi": ServiceSpec("users-fastapi", _users_env, _users_setup, _users_serve),
}
