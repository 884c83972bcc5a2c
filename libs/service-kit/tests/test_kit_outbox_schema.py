"""The outbox migrations build exactly the table ``OutboxMixin`` declares (both backends)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, Engine, create_engine, inspect
from sqlalchemy.orm import DeclarativeBase

from service_kit.outbox import OutboxMixin, schema
from service_kit.testing import fresh_postgres_database

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class Base(DeclarativeBase):
    pass


class OutboxEvent(OutboxMixin, Base):
    __tablename__ = "outbox"


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
        yield engine
        engine.dispose()
        return
    with fresh_postgres_database("outbox_schema") as url:
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        yield engine
        engine.dispose()


def run(engine: Engine, *steps: Callable[[], None]) -> None:
    """Run migration functions as Alembic runs a revision's ``upgrade``/``downgrade``."""
    with engine.begin() as connection, Operations.context(MigrationContext.configure(connection)):
        for step in steps:
            step()


def differences(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def test_the_revisions_build_the_declared_table(engine: Engine) -> None:
    run(engine, schema.create_outbox, schema.add_span_id)
    with engine.connect() as connection:
        assert differences(connection) == []
        indexes = inspect(connection).get_indexes("outbox")
    assert [(i["name"], i["column_names"]) for i in indexes] == [
        ("ix_outbox_pending", ["delivered_at", "next_attempt_at"])
    ]


def test_the_first_revision_has_no_span_id(engine: Engine) -> None:
    run(engine, schema.create_outbox)
    with engine.connect() as connection:
        (missing,) = differences(connection)
    assert missing[0] == "add_column"  # type: ignore[index]
    assert missing[3].name == "span_id"  # type: ignore[index]


def test_the_revisions_undo_themselves(engine: Engine) -> None:
    run(engine, schema.create_outbox, schema.add_span_id, schema.drop_span_id)
    columns = {column["name"] for column in inspect(engine).get_columns("outbox")}
    assert "span_id" not in columns
    assert "trace_id" in columns
    run(engine, schema.drop_outbox)
    assert not inspect(engine).has_table("outbox")
    run(engine, schema.create_outbox, schema.add_span_id)  # and apply again
    with engine.connect() as connection:
        assert differences(connection) == []
