"""``users-fastapi`` operational commands: migrate, seed and wait-for-migrations."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service_kit.sqla import blocking_engine
from users_fastapi import cli
from users_fastapi.db import Base
from users_fastapi.settings import UsersSettings

ACCOUNTS = [
    {
        "email": "Staff.Demo@example.com",
        "password": "staff demo password",
        "full_name": "Demo Staff",
        "role": "staff",
    },
    {
        "email": "member.demo@example.com",
        "password": "member demo password",
        "full_name": "Demo Member",
    },
]


@pytest.fixture
def accounts_file(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps(ACCOUNTS), encoding="utf-8")
    return path


async def test_seed_creates_the_accounts_once(api, settings, accounts_file) -> None:
    first = await cli.seed(settings, accounts_file)
    second = await cli.seed(settings, accounts_file)

    assert first == [account["email"] for account in ACCOUNTS]
    assert second == []
    page = (await api.client.get("/api/users", headers=api.service("admin-django"))).json()
    assert sorted((u["email"], u["role"]) for u in page["items"]) == [
        ("Staff.Demo@example.com", "staff"),
        ("member.demo@example.com", "member"),
    ]
    # The seeded staff account is a real one: it logs in and may list users.
    token = await api.login("staff.demo@example.com", "staff demo password")
    listed = await api.client.get("/api/users", headers=api.bearer(token))
    assert listed.status_code == 200, listed.text


async def test_seed_skips_an_account_registered_meanwhile(api, settings, accounts_file) -> None:
    await api.register("MEMBER.DEMO@example.com")

    created = await cli.seed(settings, accounts_file)

    assert created == ["Staff.Demo@example.com"]


def use_environment(monkeypatch, database_url: str, signing_key_pem: str) -> None:
    monkeypatch.setenv("USERS_ENVIRONMENT", "test")
    monkeypatch.setenv("USERS_DATABASE_URL", database_url)
    monkeypatch.setenv("USERS_JWT_PRIVATE_KEY", signing_key_pem)


def test_main_migrate_and_seed_from_the_environment(
    database_url, signing_key_pem, accounts_file, monkeypatch, capsys
) -> None:
    use_environment(monkeypatch, database_url, signing_key_pem)
    monkeypatch.setenv("USERS_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("USERS_ARGON2_MEMORY_COST_KIB", "32")

    assert cli.main(["migrate"]) == 0  # already at head: nothing to do, no error
    assert cli.main(["seed", "--accounts-file", str(accounts_file)]) == 0
    assert cli.main(["seed", "--accounts-file", str(accounts_file)]) == 0

    err = capsys.readouterr().err
    assert "migrations at head" in err
    assert "2 demo account(s) created" in err
    assert "0 demo account(s) created" in err


def test_migrations_build_what_the_models_declare(database_url) -> None:
    engine = blocking_engine(database_url)
    try:
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()


def test_wait_for_migrations_passes_on_a_database_at_head(
    database_url, signing_key_pem, monkeypatch, capsys
) -> None:
    use_environment(monkeypatch, database_url, signing_key_pem)
    assert cli.main(["wait-for-migrations", "--timeout", "5"]) == 0
    assert "users-fastapi: ready (database: " in capsys.readouterr().err


def test_wait_for_migrations_gives_up_on_an_unmigrated_database(
    empty_database_url, signing_key_pem, monkeypatch, capsys
) -> None:
    use_environment(monkeypatch, empty_database_url, signing_key_pem)

    assert cli.main(["wait-for-migrations", "--timeout", "0"]) == 1

    err = capsys.readouterr().err
    assert "users-fastapi: not ready after 0s (database: database at revision none" in err


def test_wait_for_migrations_returns_once_they_are_applied(
    empty_database_url, signing_key_pem, monkeypatch, capsys
) -> None:
    """What the outbox dispatcher's init container does while the migration Job runs."""
    settings = UsersSettings(
        environment="test", database_url=empty_database_url, jwt_private_key=signing_key_pem
    )
    # In a thread of its own: alembic's env.py runs its own event loop.
    migrating = threading.Timer(1.0, cli.migrate, args=(settings,))
    migrating.start()
    try:
        use_environment(monkeypatch, empty_database_url, signing_key_pem)
        assert cli.main(["wait-for-migrations", "--timeout", "60"]) == 0
    finally:
        migrating.join()
    err = capsys.readouterr().err
    assert "users-fastapi: waiting (database: database at revision none" in err
    assert "users-fastapi: ready (database: " in err
