"""``legacy-flask``: operational commands (migrations, outbox).

The server is gunicorn: ``gunicorn -c python:legacy_flask.gunicorn_conf``.
"""

from __future__ import annotations

import argparse

from legacy_flask.db import MIGRATIONS
from legacy_flask.models import OutboxEvent
from legacy_flask.settings import OrdersSettings
from service_kit import migrations
from service_kit.outbox.command import add_producer_commands, run_producer_command


def migrate(settings: OrdersSettings) -> None:
    """Bring the database to the newest schema (idempotent)."""
    migrations.migrate(MIGRATIONS, settings.database_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="legacy-flask",
        description="Operational commands of the orders service. Settings come from ORDERS_* "
        "environment variables (ORDERS_DATABASE_URL, …).",
    )
    add_producer_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_producer_command(
        args,
        OrdersSettings(),
        migrations=MIGRATIONS,
        outbox=OutboxEvent.__table__,  # type: ignore[arg-type]
    )


if __name__ == "__main__":
    raise SystemExit(main())
