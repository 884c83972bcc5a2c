"""SQLAlchemy column types shared by the SQLAlchemy services."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import DateTime, Select, and_, or_
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.types import TypeDecorator

from service_kit.pagination import decode_cursor, encode_cursor


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
