"""Each service imports with only the dependencies it declares (its venv synced from uv.lock,
as its image is): the shared development venv would hide an import it never declared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from polyframe_testing.isolation import import_alone

ROOT = Path(__file__).resolve().parents[3]
#: Alembic runs its env.py inside its migration context (the versions are imported).
ALEMBIC_ENV = "migrations.env"
SERVICES: dict[str, tuple[str, set[str], dict[str, Any]]] = {
    "users-fastapi": (
        "users_fastapi",
        {"users_fastapi.main", "users_fastapi.cli", "users_fastapi.migrations.versions"},
        {"skip": (f"users_fastapi.{ALEMBIC_ENV}",)},
    ),
    "legacy-flask": (
        "legacy_flask",
        {"legacy_flask.app", "legacy_flask.cli", "legacy_flask.migrations.versions"},
        {"skip": (f"legacy_flask.{ALEMBIC_ENV}",)},
    ),
    "admin-django": (
        "admin_django",
        {"admin_django.wsgi", "admin_django.urls", "admin_django.audit.migrations"},
        # Django set up first, as manage.py and the WSGI entry point do (models need it).
        {
            "prelude": "import django; django.setup()",
            "env": {
                "DJANGO_SETTINGS_MODULE": "admin_django.settings",
                "ADMIN_ENVIRONMENT": "development",
            },
        },
    ),
}


@pytest.mark.parametrize("member", SERVICES)
def test_every_module_imports_with_only_the_declared_dependencies(member: str) -> None:
    package, expected, options = SERVICES[member]
    modules = import_alone(ROOT, member, package, **options)
    assert len(modules) > 15, modules
    for name in expected:  # a module, or a package with modules below it
        assert any(module == name or module.startswith(f"{name}.") for module in modules), name


def test_a_package_the_member_does_not_declare_is_missing() -> None:
    """pytest is in the development venv, not among what users-fastapi depends on."""
    with pytest.raises(AssertionError, match="No module named 'pytest'"):
        import_alone(ROOT, "users-fastapi", "users_fastapi", prelude="import pytest")
