"""UTCDateTime on an in-memory SQLite database, and the blocking twin of a service's URL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import StatementError

from service_kit.sqla import UTCDateTime, sync_database_url

metadata = sa.MetaData()
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=True),
)


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def stored(engine: Engine, value: datetime | None) -> datetime | None:
    with engine.begin() as connection:
        connection.execute(events.insert().values(id=1, at=value))
        result: datetime | None = connection.execute(sa.select(events.c.at)).scalar_one()
        return result


def test_aware_utc_roundtrip(engine: Engine) -> None:
    value = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    result = stored(engine, value)
    assert result == value
    assert result is not None
    assert result.tzinfo is UTC


def test_other_offset_converted_to_utc(engine: Engine) -> None:
    value = datetime(2024, 5, 6, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    result = stored(engine, value)
    assert result == value  # same instant
    assert result is not None
    assert result.utcoffset() == timedelta(0)
    assert (result.hour, result.tzinfo) == (7, UTC)


def test_stored_naive_utc_on_sqlite(engine: Engine) -> None:
    stored(engine, datetime(2024, 5, 6, 9, 0, tzinfo=timezone(timedelta(hours=2))))
    with engine.connect() as connection:
        raw = connection.execute(sa.text("SELECT at FROM events")).scalar_one()
    assert raw.startswith("2024-05-06 07:00:00")


def test_none_roundtrip(engine: Engine) -> None:
    assert stored(engine, None) is None


def test_naive_input_refused(engine: Engine) -> None:
    with pytest.raises(StatementError, match="naive datetime"), engine.begin() as connection:
        connection.execute(events.insert().values(id=1, at=datetime(2024, 5, 6, 7, 8, 9)))
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 0


def test_naive_input_refused_in_where_clause(engine: Engine) -> None:
    with pytest.raises(StatementError, match="naive datetime"), engine.connect() as connection:
        connection.execute(sa.select(events).where(events.c.at < datetime(2024, 1, 1)))


def test_comparison_with_aware_value(engine: Engine) -> None:
    stored(engine, datetime(2024, 5, 6, 7, 0, tzinfo=UTC))
    with engine.connect() as connection:
        later = datetime(2024, 5, 6, 8, 0, tzinfo=timezone(timedelta(hours=2)))  # 06:00 UTC
        found = connection.execute(sa.select(events.c.id).where(events.c.at > later)).all()
    assert [row.id for row in found] == [1]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:///./.data/users.db", "sqlite:///./.data/users.db"),
        ("sqlite+aiosqlite:////var/lib/users.db", "sqlite:////var/lib/users.db"),
        ("sqlite+aiosqlite://", "sqlite://"),
        (
            "postgresql+asyncpg://users:s3cret@db.internal:5432/users",
            "postgresql+psycopg://users:s3cret@db.internal:5432/users",
        ),
        (
            "postgresql+asyncpg://users:s3cret@db/users?application_name=dispatcher",
            "postgresql+psycopg://users:s3cret@db/users?application_name=dispatcher",
        ),
        # Already blocking: unchanged.
        (
            "postgresql+psycopg://users:s3cret@db/users",
            "postgresql+psycopg://users:s3cret@db/users",
        ),
        ("postgresql://users:s3cret@db/users", "postgresql://users:s3cret@db/users"),
        ("sqlite:///users.db", "sqlite:///users.db"),
    ],
)
def test_sync_database_url(url: str, expected: str) -> None:
    assert sync_database_url(url) == expected


def test_sync_database_url_keeps_an_escaped_password() -> None:
    result = sync_database_url("postgresql+asyncpg://users:p%40ss%2Fw%3Ard@db/users")
    assert "***" not in result
    parsed = make_url(result)
    assert parsed.drivername == "postgresql+psycopg"
    assert parsed.password == "p@ss/w:rd"
    assert (parsed.username, parsed.host, parsed.database) == ("users", "db", "users")
