"""``--postgres`` and ``--postgres-for``: which server keeps each service's database."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyframe_dev import plan
from polyframe_dev.localsecrets import LocalSecrets
from polyframe_dev.services import Context, database_name

SHARED = "postgresql://postgres@127.0.0.1:5432/postgres"
OWN = "postgresql://postgres@127.0.0.1:5433/postgres"


def _ctx(tmp_path: Path, postgres: str | None, **postgres_for: str) -> Context:
    return Context(
        data_dir=tmp_path,
        secrets=LocalSecrets(tmp_path / "secrets"),
        ports={},
        workers=1,
        postgres=postgres,
        postgres_for={name.replace("_", "-"): url for name, url in postgres_for.items()},
    )


def test_one_service_on_its_own_server_the_others_on_sqlite(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, None, legacy_flask=OWN)
    orders = ctx.database_url("legacy-flask", "postgresql+psycopg")
    assert orders == (
        f"postgresql+psycopg://postgres@127.0.0.1:5433/{database_name(tmp_path, 'legacy-flask')}"
    )
    assert ctx.database_url("admin-django", "postgresql") == f"sqlite:///{tmp_path}/admin-django.db"


def test_one_service_on_its_own_server_the_others_on_the_shared_one(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, SHARED, legacy_flask=OWN)
    assert ctx.postgres_server("legacy-flask") == OWN
    assert ctx.postgres_server("admin-django") == SHARED
    assert "127.0.0.1:5432/" in ctx.database_url("admin-django", "postgresql")


def test_postgres_for_items_are_checked() -> None:
    assert plan.postgres_for([f"legacy-flask={OWN}"]) == {"legacy-flask": OWN}
    for item in ("legacy-flask", f"nope={OWN}", "legacy-flask=sqlite:///x.db"):
        with pytest.raises(Exception, match="--postgres-for"):
            plan.postgres_for([item])
