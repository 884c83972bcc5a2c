"""``admin-django``: Django's management commands (migrate, seed_staff, collectstatic, …)."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "admin_django.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["admin-django", *(argv if argv is not None else sys.argv[1:])])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
