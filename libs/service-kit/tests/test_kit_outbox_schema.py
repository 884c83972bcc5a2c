"""The outbox table: what ``OutboxMixin`` declares, and the migrations that build it exactly."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, Engine, create_engine, inspect, select
from sqlalchemy.orm import DeclarativeBase, Session

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


def test_mixin_declares_the_outbox_columns() -> None:
    nullable = {column.name: column.nullable for column in OutboxEvent.__table__.columns}
    assert nullable == {
        "id": False,
        "occurred_at": False,
        "action": False,
        "subject_type": False,
        "subject_id": False,
        "actor_type": False,
        "actor_id": False,
        "acting_for": True,
        "trace_id": True,
        "span_id": True,
        "payload": False,
        "delivered_at": True,
        "attempts": False,
        "next_attempt_at": False,
        "last_error": True,
    }
    assert [column.name for column in OutboxEvent.__table__.primary_key.columns] == ["id"]


def test_orm_defaults(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add(
            OutboxEvent(
                action="user.created",
                subject_type="user",
                subject_id="1",
                actor_type="user",
                actor_id="1",
            )
        )
    with Session(engine) as session:
        row = session.scalars(select(OutboxEvent)).one()
    assert isinstance(row.id, uuid.UUID)
    assert row.attempts == 0
    assert row.payload == {}
    assert row.delivered_at is None
    assert row.last_error is None
    assert row.occurred_at.tzinfo is UTC
    assert row.next_attempt_at.tzinfo is UTC
