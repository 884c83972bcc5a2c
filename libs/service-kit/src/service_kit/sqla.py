"""What the SQLAlchemy services share: engine options, column types, keyset pages."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import DateTime, Engine, Select, and_, create_engine, event, or_
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.types import TypeDecorator

from service_kit import dbstats
from service_kit.pagination import decode_cursor, encode_cursor
from service_kit.telemetry import Telemetry

log = logging.getLogger("service_kit.sqla")

#: What SQLAlchemy raises when the database cannot be used right now (down, unreachable,
#: connection lost, pool exhausted): a 503 for the client, never a 500.
UNAVAILABLE: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
)


def disconnected(exc: BaseException) -> bool:
    """``exc`` is SQLAlchemy's word that the connection was lost (and it invalidated it and
    the pool's older connections): the statement never ran on a live connection."""
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


@contextmanager
def lost_connection_ignored() -> Iterator[None]:
    """Around the closing of a request's session: the connection may have been dropped after
    the answer was made (its ROLLBACK fails); SQLAlchemy has discarded it by then and there
    is nothing left to undo, so the request is not failed for it."""
    try:
        yield
    except sa_exc.DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.info("connection lost before the session closed", extra={"error": type(exc).__name__})


#: Seconds a SQLite writer waits for the lock before failing (the busy timeout).
SQLITE_BUSY_SECONDS = 15


def engine_options(database_url: str, *, pool_size: int = 5) -> tuple[URL, dict[str, Any]]:
    """The URL and ``create_engine`` keyword arguments for ``database_url``, sync or async.

    SQLite: the file's folder is created and the driver waits on a locked database
    (pass the engine to :func:`prepare` for WAL and the other pragmas). PostgreSQL: a
    pool of ``pool_size`` plus as many overflow connections, checked before use, with
    bounded waits for a connection from the pool and for the server.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        return url, {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}}
    if url.get_driver_name() == "asyncpg":
        connect_args: dict[str, Any] = {"timeout": 5, "command_timeout": 10}
    else:
        connect_args = {"connect_timeout": 5}
    return url, {
        "pool_size": pool_size,
        "max_overflow": pool_size,
        "pool_timeout": 5,
        "connect_args": connect_args,
    }


def sync_database_url(url: str) -> str:
    """The blocking-driver twin of an async URL (for the synchronous commands)."""
    parsed = make_url(url)
    drivers = {"sqlite+aiosqlite": "sqlite", "postgresql+asyncpg": "postgresql+psycopg"}
    name = drivers.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=name).render_as_string(hide_password=False)


def blocking_engine(database_url: str, *, pool_size: int = 1) -> Engine:
    """A prepared synchronous engine for a service's URL, async or not (commands, workers)."""
    url, options = engine_options(sync_database_url(database_url), pool_size=pool_size)
    engine = create_engine(url, **options)
    prepare(engine)
    return engine


def prepare(engine: Engine) -> None:
    """Per-connection settings of a (sync, or an async engine's ``sync_engine``) engine."""
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers proceed during a write; busy_timeout waits instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def instrument(engine: Engine, telemetry: Telemetry) -> None:
    """Trace the engine's statements and count them per request, and count its pool's
    connections, waits, timeouts and refused connections (when telemetry is on)."""
    if telemetry.enabled:
        dbstats.watch_sqlalchemy(engine)
        dbstats.watch_sqlalchemy_pool(engine, telemetry.labels)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so values are
    stored as naive UTC and made aware again on the way out. Naive input is
    refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware (UTC) value")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def keyset_page(
    query: Select[Any],
    created_at: InstrumentedAttribute[datetime],
    item_id: InstrumentedAttribute[uuid.UUID],
    *,
    limit: int,
    cursor: str | None,
) -> Select[Any]:
    """Order ``query`` by (created_at, id), start after ``cursor``, fetch one row extra."""
    query = query.order_by(created_at, item_id).limit(limit + 1)
    if cursor:
        after_created, after_id = decode_cursor(cursor)
        query = query.where(
            or_(created_at > after_created, and_(created_at == after_created, item_id > after_id))
        )
    return query


class _Keyed(Protocol):
    created_at: datetime
    id: uuid.UUID


RowT = TypeVar("RowT", bound=_Keyed)


def split_page(rows: Sequence[RowT], limit: int) -> tuple[list[RowT], str | None]:
    """The page and the cursor of the next one (``None`` on the last page)."""
    if len(rows) <= limit:
        return list(rows), None
    last = rows[limit - 1]
    return list(rows[:limit]), encode_cursor(last.created_at, last.id)
