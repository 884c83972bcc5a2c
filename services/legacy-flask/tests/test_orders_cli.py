"""``legacy-flask`` operational commands: wait-for-migrations (migrate is every fixture's)."""

from __future__ import annotations

import secrets
import threading
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from legacy_flask import cli
from legacy_flask.db import Base, make_engine
from legacy_flask.settings import OrdersSettings

SERVICE_SECRET = secrets.token_urlsafe(24)


def _settings(database_url: str) -> OrdersSettings:
    return OrdersSettings(
        environment="test", database_url=database_url, service_secret=SERVICE_SECRET
    )


def use_environment(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("ORDERS_ENVIRONMENT", "test")
    monkeypatch.setenv("ORDERS_DATABASE_URL", database_url)
    monkeypatch.setenv("ORDERS_SERVICE_SECRET", SERVICE_SECRET)


def test_migrations_build_what_the_models_declare(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()


def test_main_migrate_on_a_database_at_head(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    use_environment(monkeypatch, database_url)
    assert cli.main(["migrate"]) == 0  # already at head: nothing to do, no error
    assert "legacy-flask: migrations at head" in capsys.readouterr().err


def test_wait_for_migrations_passes_on_a_database_at_head(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    use_environment(monkeypatch, database_url)
    assert cli.main(["wait-for-migrations", "--timeout", "5"]) == 0
    assert "legacy-flask: ready (database: " in capsys.readouterr().err


def test_wait_for_migrations_gives_up_on_an_unmigrated_database(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    use_environment(monkeypatch, empty_database_url)
    assert cli.main(["wait-for-migrations", "--timeout", "0"]) == 1
    err = capsys.readouterr().err
    assert "legacy-flask: not ready after 0s (database: database at revision none" in err


def test_wait_for_migrations_returns_once_they_are_applied(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """What the outbox dispatcher's init container does while the migration Job runs."""
    migrating = threading.Timer(1.0, cli.migrate, args=(_settings(empty_database_url),))
    migrating.start()
    try:
        use_environment(monkeypatch, empty_database_url)
        assert cli.main(["wait-for-migrations", "--timeout", "60"]) == 0
    finally:
        migrating.join()
    err = capsys.readouterr().err
    assert "legacy-flask: waiting (database: database at revision none" in err
    assert "legacy-flask: ready (database: " in err
