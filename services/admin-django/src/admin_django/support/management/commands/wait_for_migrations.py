"""``admin-django wait_for_migrations --timeout S``: wait until every migration is applied.

What must not run on an older schema (the demo-staff seeding Job in a cluster) waits with it:
the check of ``/readyz`` (the database answers, no migration is left to apply), retried until
it passes or ``--timeout`` seconds have gone by (then exit status 1).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connections

from service_kit import django as kit
from service_kit import health


def _migrations_applied() -> str:
    try:
        return kit.migrations_applied()
    finally:
        # A connection that failed or broke is not reused: each attempt connects afresh.
        connections.close_all()


class Command(BaseCommand):
    help = "Wait until every migration is applied; exit 1 after --timeout seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, required=True, help="seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        ready = health.wait_until_ready(
            settings.POLYFRAME_SERVICE_NAME,
            {"database": _migrations_applied},
            timeout_seconds=options["timeout"],
        )
        if not ready:
            raise SystemExit(1)
