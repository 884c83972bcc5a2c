"""Databases for tests: a fresh PostgreSQL database per use (``POLYFRAME_TEST_POSTGRES``, by
default the CI machine's), and how a service's suite runs each test on SQLite and on
PostgreSQL (:class:`ServiceDatabases`, used by the plugin's ``database_url`` fixtures)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from polyframe_testing.tools import unavailable

ADMIN_URL = os.environ.get("POLYFRAME_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
#: Every test that asks for a database runs on both (PostgreSQL: skipped locally without one).
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _psycopg() -> ModuleType:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg comes with polyframe-testing
        unavailable("psycopg is not installed")
    return psycopg


@contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """Create an empty database; yield its URL (``postgresql://…``, no driver); drop it."""
    psycopg = _psycopg()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL is not reachable at {ADMIN_URL}: {str(exc).strip()[:120]}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def empty_tables(url: str, first: tuple[str, ...] = ()) -> None:
    """Delete every row of the database at ``url`` (``postgresql://``): the tables ``first``
    in that order (children first), then every other one but alembic's own."""
    with _psycopg().connect(url, autocommit=True, connect_timeout=3) as connection:
        present = {
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        } - {"alembic_version"}
        for table in [*first, *sorted(present - set(first))]:
            connection.execute(f'DELETE FROM "{table}"')  # noqa: S608 - names from the catalog


@dataclass(frozen=True)
class ServiceDatabases:
    """How a service's suite gets its databases: a conftest's ``service_databases`` fixture
    (session scope) returns one, and the plugin's ``postgres_url``, ``database_url`` and
    ``empty_database_url`` fixtures use it."""

    #: Names the databases (``<name>_test``) and the SQLite files (``<name>.db``).
    name: str
    #: SQLAlchemy URL schemes: ``sqlite+aiosqlite``, ``postgresql+psycopg`` …
    sqlite_scheme: str
    postgres_scheme: str
    #: Migrates the database at a URL of those schemes, the way production does.
    migrate: Callable[[str], None]
    #: Emptied first, in this order, after each PostgreSQL test (children before parents).
    tables_first: tuple[str, ...] = ()

    def sqlite_url(self, path: Path) -> str:
        return f"{self.sqlite_scheme}:///{path}"

    def postgres_url(self, url: str) -> str:
        """``postgresql://…`` (no driver) in the service's scheme."""
        assert url.startswith("postgresql://"), url
        return f"{self.postgres_scheme}://" + url.removeprefix("postgresql://")
