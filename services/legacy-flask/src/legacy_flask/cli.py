"""``legacy-flask``: operational commands (migrations, outbox).

The server is gunicorn: ``gunicorn -c python:legacy_flask.gunicorn_conf``.
"""

from __future__ import annotations

import argparse
import sys

from alembic import command

from legacy_flask.db import MIGRATIONS, make_engine
from legacy_flask.models import OutboxEvent
from legacy_flask.settings import OrdersSettings
from service_kit import health
from service_kit.migrations import alembic_config, require_heads, script_heads
from service_kit.outbox import dispatch_command


def migrate(settings: OrdersSettings) -> None:
    """Bring the database to the newest schema (idempotent)."""
    command.upgrade(alembic_config(MIGRATIONS, settings.database_url), "head")


def wait_for_migrations(settings: OrdersSettings, timeout_seconds: float) -> bool:
    """Wait until the database is at the migrations' head (what /readyz checks), at most
    ``timeout_seconds``: what must not run on an older schema (the outbox dispatcher) waits."""
    heads = script_heads(MIGRATIONS)
    engine = make_engine(settings.database_url, pool_size=1)

    def database() -> str:
        with engine.connect() as connection:
            return require_heads(connection, heads)

    try:
        return health.wait_until_ready(
            settings.service_name, {"database": database}, timeout_seconds=timeout_seconds
        )
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="legacy-flask",
        description="Operational commands of the orders service. Settings come from ORDERS_* "
        "environment variables (ORDERS_DATABASE_URL, …).",
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
    args = parser.parse_args(argv)
    settings = OrdersSettings()
    if args.command == "migrate":
        migrate(settings)
        print("legacy-flask: migrations at head", file=sys.stderr)
    elif args.command == "wait-for-migrations":
        return 0 if wait_for_migrations(settings, args.timeout) else 1
    elif args.command == "dispatch-outbox":
        return dispatch_command(settings, OutboxEvent.__table__)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
