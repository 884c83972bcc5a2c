"""Alembic helpers shared by the SQLAlchemy services: is the schema at head?"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from service_kit.health import CheckFailedError


def alembic_config(script_location: Path, database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    if database_url:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def script_heads(script_location: Path) -> frozenset[str]:
    """The revisions the code expects (read once, at start)."""
    return frozenset(ScriptDirectory.from_config(alembic_config(script_location)).get_heads())


def require_heads(connection: Connection, expected: frozenset[str]) -> str:
    """Readiness check body: fail unless the database is at the expected heads."""
    current = frozenset(MigrationContext.configure(connection).get_current_heads())
    if current != expected:
        have = ", ".join(sorted(current)) or "none"
        want = ", ".join(sorted(expected))
        raise CheckFailedError(
            f"database at revision {have}, code expects {want}: run the migrations"
        )
    return ", ".join(sorted(current))
