"""The pytest plugin (entry point ``pytest11``) with the fixtures the workspace's suites
share: loggers put back, the users service's signing key, and every test's database on
SQLite and on PostgreSQL for a suite that provides ``service_databases``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from polyframe_testing.databases import (
    BACKENDS,
    ServiceDatabases,
    empty_tables,
    fresh_postgres_database,
)
from polyframe_testing.logs import loggers_restored
from polyframe_testing.peers import generate_private_key


@pytest.fixture
def logging_snapshot() -> Iterator[None]:
    """Put back every existing logger, for tests that run ``logging.config.dictConfig``
    (it replaces the root's handlers, re-enables every other logger, resets children)."""
    with loggers_restored():
        yield


@pytest.fixture
def unset_environment(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``unset_environment("USERS_")``: no variable of that prefix (any case) in this test,
    so settings come from the fixtures only, never from the developer's shell."""

    def unset(prefix: str) -> None:
        for name in list(os.environ):
            if name.upper().startswith(prefix):
                monkeypatch.delenv(name)

    return unset


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    """The users service's token-signing key in this session."""
    return generate_private_key()


@pytest.fixture(scope="session")
def _postgres_databases() -> Iterator[_LazyDatabases]:
    """Each service's session database (name -> ``postgresql://`` URL), made on first use and
    dropped at the end: one run may test several services, each with its own schema."""
    with ExitStack() as stack:
        yield _LazyDatabases(stack)


class _LazyDatabases(dict[str, str]):
    def __init__(self, stack: ExitStack) -> None:
        super().__init__()
        self._stack = stack

    def of(self, service: ServiceDatabases) -> str:
        if service.name not in self:
            url = self._stack.enter_context(fresh_postgres_database(f"{service.name}_test"))
            service.migrate(service.postgres_url(url))
            self[service.name] = url
        return self[service.name]


@pytest.fixture
def postgres_url(_postgres_databases: _LazyDatabases, service_databases: ServiceDatabases) -> str:
    """The suite's database for the whole session, migrated once (``postgresql://``, no
    driver). Per service, not per run: a session-scoped fixture would hand the first suite's
    database to every other suite of the same run."""
    return _postgres_databases.of(service_databases)


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, service_databases: ServiceDatabases
) -> Iterator[str]:
    """A migrated, empty database: a new SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        url = service_databases.sqlite_url(tmp_path / f"{service_databases.name}.db")
        service_databases.migrate(url)
        yield url
        return
    plain: str = request.getfixturevalue("postgres_url")
    yield service_databases.postgres_url(plain)
    empty_tables(plain, service_databases.tables_first)


@pytest.fixture(params=BACKENDS)
def empty_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, service_databases: ServiceDatabases
) -> Iterator[str]:
    """A database nobody migrated: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield service_databases.sqlite_url(tmp_path / "unmigrated.db")
        return
    with fresh_postgres_database(f"{service_databases.name}_unmigrated") as url:
        yield service_databases.postgres_url(url)
