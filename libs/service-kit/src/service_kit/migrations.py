"""Alembic helpers shared by the SQLAlchemy services: migrate, and wait until at head.

The readiness check reads the heads with ``ast``, without importing alembic (docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from service_kit import sqla
from service_kit.health import CheckFailedError, wait_until_ready

if TYPE_CHECKING:
    from alembic.config import Config

VERSION_TABLE = "alembic_version"


def alembic_config(script_location: Path, database_url: str | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location))
    if database_url:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(script_location: Path, database_url: str) -> None:
    """Bring the database to the newest schema (idempotent): a service's ``migrate`` command."""
    from alembic import command

    command.upgrade(alembic_config(script_location, database_url), "head")


def _module_values(path: Path) -> dict[str, Any]:
    """Literal module-level assignments of a migration file (``revision = "…"``, …)."""
    values: dict[str, Any] = {}
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign):
            targets, value = [t for t in node.targets if isinstance(t, ast.Name)], node.value
        else:
            continue
        for target in targets:
            try:
                values[target.id] = ast.literal_eval(value)
            except ValueError:
                continue
    return values


def script_heads(script_location: Path) -> frozenset[str]:
    """The revisions the code expects: those no other migration builds on (read at start)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((script_location / "versions").glob("*.py")):
        values = _module_values(path)
        revision = values.get("revision")
        if not isinstance(revision, str):
            continue
        revisions.add(revision)
        down = values.get("down_revision")
        if isinstance(down, str):
            parents.add(down)
        elif isinstance(down, tuple | list):
            parents.update(str(each) for each in down)
    return frozenset(revisions - parents)


def require_heads(connection: Connection, expected: frozenset[str]) -> str:
    """Readiness check body: fail unless the database is at the expected heads."""
    current: frozenset[str] = frozenset()
    if inspect(connection).has_table(VERSION_TABLE):
        rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))  # noqa: S608
        current = frozenset(str(row[0]) for row in rows)
    if current != expected:
        have = ", ".join(sorted(current)) or "none"
        want = ", ".join(sorted(expected))
        raise CheckFailedError(
            f"database at revision {have}, code expects {want}: run the migrations"
        )
    return ", ".join(sorted(current))


def wait_for_migrations(
    service: str, script_location: Path, database_url: str, *, timeout_seconds: float
) -> bool:
    """Wait, at most ``timeout_seconds``, until the database is at the migrations' heads.

    The check of ``/readyz``, for what must not run on an older schema (the outbox dispatcher).
    """
    heads = script_heads(script_location)
    engine = sqla.blocking_engine(database_url)

    def database() -> str:
        with engine.connect() as connection:
            return require_heads(connection, heads)

    try:
        return wait_until_ready(service, {"database": database}, timeout_seconds=timeout_seconds)
    finally:
        engine.dispose()
