"""``legacy-flask``: operational commands (migrations).

The server is gunicorn: ``gunicorn -c python:legacy_flask.gunicorn_conf``.
"""

from __future__ import annotations

import argparse
import sys

from alembic import command

from legacy_flask.db import MIGRATIONS
from legacy_flask.models import OutboxEvent
from legacy_flask.settings import OrdersSettings
from service_kit.migrations import alembic_config
from service_kit.outbox import dispatch_command


def migrate(settings: OrdersSettings) -> None:
    """Bring the database to the newest schema (idempotent)."""
    command.upgrade(alembic_config(MIGRATIONS, settings.database_url), "head")


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
    args = parser.parse_args(argv)
    settings = OrdersSettings()
    if args.command == "migrate":
        migrate(settings)
        print("legacy-flask: migrations at head", file=sys.stderr)
    elif args.command == "dispatch-outbox":
        return dispatch_command(settings, OutboxEvent.__table__)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
