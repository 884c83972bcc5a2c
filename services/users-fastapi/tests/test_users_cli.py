"""``users-fastapi`` operational commands: migrate and seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from users_fastapi import cli

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


def test_main_migrate_and_seed_from_the_environment(
    database_url, signing_key_pem, accounts_file, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("USERS_ENVIRONMENT", "test")
    monkeypatch.setenv("USERS_DATABASE_URL", database_url)
    monkeypatch.setenv("USERS_JWT_PRIVATE_KEY", signing_key_pem)
    monkeypatch.setenv("USERS_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("USERS_ARGON2_MEMORY_COST_KIB", "32")

    assert cli.main(["migrate"]) == 0  # already at head: nothing to do, no error
    assert cli.main(["seed", "--accounts-file", str(accounts_file)]) == 0
    assert cli.main(["seed", "--accounts-file", str(accounts_file)]) == 0

    err = capsys.readouterr().err
    assert "migrations at head" in err
    assert "2 demo account(s) created" in err
    assert "0 demo account(s) created" in err
