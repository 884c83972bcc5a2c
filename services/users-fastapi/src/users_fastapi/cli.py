"""``users-fastapi``: operational commands (migrations, outbox, demo data).

The server itself is started by uvicorn: ``uvicorn --factory users_fastapi.main:create_app``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from service_kit import migrations
from service_kit.outbox import Actor
from service_kit.outbox.command import add_producer_commands, run_producer_command
from users_fastapi import accounts
from users_fastapi.db import MIGRATIONS, create_engine, session_factory
from users_fastapi.models import OutboxEvent, Role
from users_fastapi.security import Passwords
from users_fastapi.settings import UsersSettings

SEED_ACTOR = Actor("service", "users-fastapi", acting_for="demo-seed")


def migrate(settings: UsersSettings) -> None:
    """Bring the database to the newest schema (idempotent)."""
    migrations.migrate(MIGRATIONS, settings.database_url)


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
    add_producer_commands(sub)
    seed_parser = sub.add_parser("seed", help="create demo accounts that do not exist yet")
    seed_parser.add_argument(
        "--accounts-file",
        type=Path,
        required=True,
        help='JSON list of {"email", "password", "full_name", "role"}',
    )
    args = parser.parse_args(argv)
    settings = UsersSettings()
    if args.command != "seed":
        return run_producer_command(
            args,
            settings,
            migrations=MIGRATIONS,
            outbox=OutboxEvent.__table__,  # type: ignore[arg-type]
        )
    created = asyncio.run(seed(settings, args.accounts_file))
    print(f"users-fastapi: {len(created)} demo account(s) created", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
