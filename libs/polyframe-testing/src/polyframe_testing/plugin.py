"""The pytest plugin (entry point ``pytest11``) with the fixtures the workspace's suites
share: loggers put back, the users service's signing key, and every test's database on
SQLite and on PostgreSQL for a suite that provides ``service_databases``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
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
def postgres_url(service_databases: ServiceDatabases) -> Iterator[str]:
    """A fresh database for the whole session, migrated once (``postgresql://``, no driver)."""
    with fresh_postgres_database(f"{service_databases.name}_test") as url:
        service_databases.migrate(service_databases.postgres_url(url))
        yield url


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
