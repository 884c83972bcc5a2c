"""``users-fastapi``: operational commands (migrations, outbox, demo data).

The server itself is started by uvicorn: ``uvicorn --factory users_fastapi.main:create_app``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from alembic import command

from service_kit import health
from service_kit.migrations import alembic_config, require_heads, script_heads
from service_kit.outbox import Actor, dispatch_command
from users_fastapi import accounts
from users_fastapi.db import MIGRATIONS, create_engine, session_factory
from users_fastapi.models import OutboxEvent, Role
from users_fastapi.security import Passwords
from users_fastapi.settings import UsersSettings

SEED_ACTOR = Actor("service", "users-fastapi", acting_for="demo-seed")


def migrate(settings: UsersSettings) -> None:
    """Bring the database to the newest schema (idempotent)."""
    command.upgrade(alembic_config(MIGRATIONS, settings.database_url), "head")


async def _revision(settings: UsersSettings, heads: frozenset[str]) -> str:
    """The readiness check of the web pods: the database answers and is at ``heads``."""
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            revision: str = await connection.run_sync(require_heads, heads)
            return revision
    finally:
        await engine.dispose()


def wait_for_migrations(settings: UsersSettings, timeout_seconds: float) -> bool:
    """Wait until the database is at the migrations' head (what /readyz checks), at most
    ``timeout_seconds``: what must not run on an older schema (the outbox dispatcher) waits."""
    heads = script_heads(MIGRATIONS)
    return health.wait_until_ready(
        settings.service_name,
        {"database": lambda: asyncio.run(_revision(settings, heads))},
        timeout_seconds=timeout_seconds,
    )


async def seed(settings: UsersSettings, accounts_file: Path) -> list[str]:
    """Create the demo accounts that do not exist yet; return the e-mails created."""
    wanted = json.loads(accounts_file.read_text(encoding="utf-8"))  # noqa: ASYNC240 - CLI, no loop to block
    engine = create_engine(settings.database_url)
    created: list[str] = []
    passwords = Passwords(settings)
    try:
        async with session_factory(engine)() as session:
            for account in wanted:
                if await accounts.user_by_email(session, account["email"]) is not None:
                    continue
                await accounts.user_register(
                    session,
                    passwords,
                    email=account["email"],
                    password=account["password"],
                    full_name=account["full_name"],
                    role=Role(account.get("role", "member")),
                    actor=SEED_ACTOR,
                )
                created.append(account["email"])
    finally:
        await engine.dispose()
    return created


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="users-fastapi",
        description="Operational commands of the users service. Settings come from USERS_* "
        "environment variables (USERS_DATABASE_URL, …).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations up to head")
    sub.add_parser(
        "dispatch-outbox",
        help="deliver queued audit events to admin-django until SIGTERM (its own process)",
    )
    wait_parser = sub.add_parser(
        "wait-for-migrations",
        help="wait until the database is at the migrations' head; exit 1 after --timeout",
    )
    wait_parser.add_argument("--timeout", type=float, required=True, help="seconds")
    seed_parser = sub.add_parser("seed", help="create demo accounts that do not exist yet")
    seed_parser.add_argument(
        "--accounts-file",
        type=Path,
        required=True,
        help='JSON list of {"email", "password", "full_name", "role"}',
    )
    args = parser.parse_args(argv)
    settings = UsersSettings()
    if args.command == "migrate":
        migrate(settings)
        print("users-fastapi: migrations at head", file=sys.stderr)
    elif args.command == "wait-for-migrations":
        return 0 if wait_for_migrations(settings, args.timeout) else 1
    elif args.command == "dispatch-outbox":
        return dispatch_command(settings, OutboxEvent.__table__)  # type: ignore[arg-type]
    elif args.command == "seed":
        created = asyncio.run(seed(settings, args.accounts_file))
        print(f"users-fastapi: {len(created)} demo account(s) created", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
