"""Fixtures of the users service's in-process tests.

Every test that asks for ``database_url`` (directly or through ``settings`` or
``api``) runs twice: on a fresh SQLite file and on PostgreSQL. The
PostgreSQL database is created and migrated once per session; each test
leaves it empty again. Migrations always go through ``users_fastapi.cli.migrate``,
the path production uses.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from polyframe_testing.databases import ServiceDatabases
from polyframe_testing.peers import as_service, asgi_client, private_pem
from polyframe_testing.problems import check_problem
from polyframe_testing.telemetry import record_spans
from polyframe_testing.tools import unavailable
from service_kit.problems import PROBLEM_CONTENT_TYPE
from users_fastapi import accounts
from users_fastapi.cli import migrate
from users_fastapi.deps import AppState
from users_fastapi.main import create_app
from users_fastapi.models import Role
from users_fastapi.settings import UsersSettings

PASSWORD = "correct horse battery staple"
REDIS_URL = os.environ.get("POLYFRAME_TEST_REDIS", "redis://127.0.0.1:6379/0")


def pytest_configure(config: pytest.Config) -> None:
    record_spans()  # the observability tests read the spans


def make_settings(
    database_url: str, signing_key_pem: str, trusted: dict[str, str] | None = None
) -> UsersSettings:
    return UsersSettings(
        environment="test",
        database_url=database_url,
        jwt_private_key=signing_key_pem,
        trusted_services=trusted or {},
        argon2_time_cost=1,
        argon2_memory_cost_kib=32,
    )


def run_migrations(settings: UsersSettings) -> None:
    """``cli.migrate`` in its own thread: alembic's env.py calls ``asyncio.run``, which
    must neither meet a running loop nor reset the event loop pytest-asyncio set up."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            migrate(settings)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="users-migrate")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


@pytest.fixture(autouse=True)
def _no_users_environment(unset_environment: Callable[[str], None]) -> None:
    """Settings come from the fixtures only, never from the developer's shell."""
    unset_environment("USERS_")


@pytest.fixture(scope="session")
def signing_key_pem(signing_key: rsa.RSAPrivateKey) -> str:
    return private_pem(signing_key)


@pytest.fixture(scope="session")
def service_secrets() -> dict[str, str]:
    return {"admin-django": secrets.token_urlsafe(24), "legacy-flask": secrets.token_urlsafe(24)}


@pytest.fixture(scope="session")
def service_databases(signing_key_pem: str) -> ServiceDatabases:
    """The users database, on SQLite (aiosqlite) and PostgreSQL (asyncpg), migrated by
    ``cli.migrate`` (the plugin's ``database_url`` and ``empty_database_url`` use it)."""
    return ServiceDatabases(
        name="users",
        sqlite_scheme="sqlite+aiosqlite",
        postgres_scheme="postgresql+asyncpg",
        migrate=lambda url: run_migrations(make_settings(url, signing_key_pem)),
    )


@dataclass(frozen=True)
class RedisSpace:
    """The test Redis (``url``) and a key prefix of this test's own."""

    url: str
    prefix: str
    client: redis.Redis

    def keys(self) -> dict[str, int]:
        """This test's counters: key (without the prefix) -> hits."""
        return {
            key.decode().removeprefix(f"{self.prefix}:"): int(self.client.get(key) or 0)
            for key in self.client.scan_iter(f"{self.prefix}:*")
        }


@pytest.fixture
def redis_space() -> Iterator[RedisSpace]:
    """The Redis every developer and CI machine runs; this test's keys deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        unavailable(f"no Redis at {REDIS_URL} (POLYFRAME_TEST_REDIS): {exc}")
    space = RedisSpace(REDIS_URL, f"test-ratelimit-{uuid.uuid4().hex}", client)
    try:
        yield space
    finally:
        stale = list(client.scan_iter(f"{space.prefix}:*"))
        if stale:
            client.delete(*stale)
        client.close()


@pytest.fixture
def dead_redis_url() -> str:
    """A Redis URL where nothing listens (connections refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def settings(
    database_url: str, signing_key_pem: str, service_secrets: dict[str, str]
) -> UsersSettings:
    return make_settings(database_url, signing_key_pem, service_secrets)


@asynccontextmanager
async def running(settings: UsersSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan run, and a client that talks to it in-process."""
    app = create_app(settings)
    async with asgi_client(app) as client:
        yield app, client


@pytest.fixture
async def api(settings: UsersSettings, service_secrets: dict[str, str]) -> AsyncIterator[Api]:
    async with running(settings) as (app, client):
        yield Api(app=app, client=client, service_secrets=service_secrets)


@pytest.fixture
async def unmigrated_api(
    empty_database_url: str, signing_key_pem: str, service_secrets: dict[str, str]
) -> AsyncIterator[Api]:
    """The app started on a database that nobody migrated."""
    settings = make_settings(empty_database_url, signing_key_pem, service_secrets)
    async with running(settings) as (app, client):
        yield Api(app=app, client=client, service_secrets=service_secrets)


@dataclass
class Api:
    """The running app plus the moves most tests make."""

    app: FastAPI
    client: httpx.AsyncClient
    service_secrets: dict[str, str]
    _counter: int = field(default=0)

    #: The password every helper-made account has.
    password: ClassVar[str] = PASSWORD

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.users
        return state

    def unique_email(self, stem: str = "user") -> str:
        self._counter += 1
        return f"{stem}{self._counter}@example.com"

    async def register(
        self, email: str | None = None, *, password: str = PASSWORD, full_name: str = "Ada Lovelace"
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/api/users/register",
            json={
                "email": email or self.unique_email(),
                "password": password,
                "full_name": full_name,
            },
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def create_staff(self, email: str | None = None, *, password: str = PASSWORD) -> str:
        """A staff account, made the only way there is: directly, not over HTTP."""
        async with self.state.sessions() as session:
            user = await accounts.user_register(
                session,
                self.state.passwords,
                email=email or self.unique_email("staff"),
                password=password,
                full_name="Grace Hopper",
                role=Role.STAFF,
            )
            return user.email

    async def login(self, email: str, password: str = PASSWORD) -> str:
        response = await self.client.post(
            "/api/users/login", json={"email": email, "password": password}
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    async def member_token(self) -> str:
        return await self.login((await self.register())["email"])

    async def staff_token(self) -> str:
        return await self.login(await self.create_staff())

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def service(
        self, name: str, *, secret: str | None = None, acting_for: str | None = None
    ) -> dict[str, str]:
        return as_service(name, secret or self.service_secrets[name], acting_for)

    @staticmethod
    def problem(response: httpx.Response, status: int, kind: str | None = None) -> dict[str, Any]:
        """Assert ``response`` is an RFC 9457 problem with ``status``; return its body."""
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert response.headers.get("x-request-id")
        return check_problem(response.json(), status, instance=response.request.url.path, kind=kind)

    @staticmethod
    def error_fields(body: dict[str, Any]) -> set[str]:
        return {error["field"] for error in body["errors"]}
