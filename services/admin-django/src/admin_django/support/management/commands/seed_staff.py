"""``admin-django seed_staff --accounts-file F``: demo staff accounts, created once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandParser

from admin_django.support.apps import ensure_support_groups


class Command(BaseCommand):
    help = (
        'Create staff accounts from a JSON list of {"username", "password", "group"} (idempotent).'
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--accounts-file", type=Path, required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        ensure_support_groups()
        accounts = json.loads(options["accounts_file"].read_text(encoding="utf-8"))
        users = get_user_model()
        created = 0
        for account in accounts:
            if users.objects.filter(username=account["username"]).exists():
                continue
            user = users.objects.create_user(
                username=account["username"], password=account["password"], is_staff=True
            )
            user.groups.add(Group.objects.get(name=account["group"]))
            created += 1
        self.stderr.write(f"admin-django: {created} demo staff account(s) created")
