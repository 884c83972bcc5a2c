"""Keyset pagination: opaque cursors, and keyset_page/split_page on an in-memory SQLite."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from service_kit.pagination import decode_cursor, encode_cursor
from service_kit.problems import VALIDATION, ProblemError
from service_kit.sqla import UTCDateTime, keyset_page, split_page

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
ITEM_ID = uuid.UUID("6f1d4c2a-8b3e-4f5a-9c7d-0e1f2a3b4c5d")


def b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- cursors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "created_at",
    [
        T0,
        datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        datetime(2024, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_cursor_roundtrip(created_at: datetime) -> None:
    cursor = encode_cursor(created_at, ITEM_ID)
    decoded_at, decoded_id = decode_cursor(cursor)
    assert decoded_at == created_at
    assert decoded_at.utcoffset() == timedelta(0)  # the same instant, in UTC for the database
    assert decoded_id == ITEM_ID
    assert isinstance(decoded_id, uuid.UUID)


def test_a_cursor_with_an_offset_postgresql_refuses_is_read_in_utc() -> None:
    """Python takes offsets up to 24 h, PostgreSQL up to 15:59 (a 500 there before)."""
    decoded_at, _ = decode_cursor(b64(["6684-02-07T02:16:42-22:36", str(ITEM_ID)]))
    assert decoded_at == datetime(6684, 2, 8, 0, 52, 42, tzinfo=UTC)
    assert decoded_at.utcoffset() == timedelta(0)


def test_cursor_is_url_safe_and_unpadded() -> None:
    for n in range(20):  # lengths vary with the microseconds: every padding case
        cursor = encode_cursor(T0 + timedelta(microseconds=n * 7919), uuid.uuid4())
        assert "=" not in cursor
        assert set(cursor) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
        assert decode_cursor(cursor)[0] == T0 + timedelta(microseconds=n * 7919)


def test_different_positions_give_different_cursors() -> None:
    assert encode_cursor(T0, ITEM_ID) != encode_cursor(T0, uuid.uuid4())
    assert encode_cursor(T0, ITEM_ID) != encode_cursor(T0 + timedelta(microseconds=1), ITEM_ID)


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("", id="empty"),
        pytest.param("!!!", id="not-base64"),
        pytest.param("é", id="non-ascii"),
        pytest.param("a", id="bad-length"),
        pytest.param(b64(b"\xff\xfe\x00"), id="not-utf8"),
        pytest.param(b64(b"not json"), id="not-json"),
        pytest.param(b64(5), id="json-number"),
        pytest.param(b64({"a": 1, "b": 2}), id="json-object"),
        pytest.param(b64([T0.isoformat()]), id="one-element"),
        pytest.param(b64([T0.isoformat(), str(ITEM_ID), "x"]), id="three-elements"),
        pytest.param(b64(["yesterday", str(ITEM_ID)]), id="bad-timestamp"),
        pytest.param(b64(["2024-03-01T12:00:00", str(ITEM_ID)]), id="naive-timestamp"),
        pytest.param(b64([T0.isoformat(), "not-a-uuid"]), id="bad-uuid"),
        pytest.param(b64([T0.isoformat(), 5]), id="numeric-uuid"),
        pytest.param(b64([T0.isoformat(), ["x"]]), id="list-uuid"),
        pytest.param(b64([T0.isoformat(), None]), id="null-uuid"),
        pytest.param(b64([1709294400, str(ITEM_ID)]), id="numeric-timestamp"),
        pytest.param(encode_cursor(T0, ITEM_ID)[:-3], id="truncated"),
        # Before the year 1 once in UTC.
        pytest.param(b64(["0001-01-01T00:00:00+05:00", str(ITEM_ID)]), id="before-year-1"),
    ],
)
def test_bad_cursor_is_a_422_naming_cursor(cursor: str) -> None:
    with pytest.raises(ProblemError) as caught:
        decode_cursor(cursor)
    problem = caught.value.problem
    assert problem.status == 422
    assert problem.type == VALIDATION
    assert problem.as_dict()["errors"] == [
        {
            "field": "cursor",
            "location": "query",
            "detail": "The cursor is not one this service issued",
        }
    ]
    assert caught.value.__cause__ is None  # decoding internals are not chained


# --- keyset_page / split_page ---------------------------------------------------------


class Base(DeclarativeBase):
    pass


class Thing(Base):
    __tablename__ = "things"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    name: Mapped[str] = mapped_column(sa.String(20))


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


# Inserted out of order; three rows share one created_at, ordered among them by id.
ROWS = [
    (uid(0xB), T0 + timedelta(seconds=1), "b"),
    (uid(0xE), T0 + timedelta(seconds=2), "e"),
    (uid(0xA), T0 + timedelta(seconds=1), "a"),
    (uid(0xF), T0, "first"),
    (uid(0xC), T0 + timedelta(seconds=1), "c"),
]
EXPECTED = ["first", "a", "b", "c", "e"]


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add_all(Thing(id=i, created_at=at, name=name) for i, at, name in ROWS)
    try:
        yield engine
    finally:
        engine.dispose()


def page(
    session: Session, limit: int, cursor: str | None, query: sa.Select[Any] | None = None
) -> tuple[list[Thing], str | None]:
    statement = keyset_page(
        query if query is not None else sa.select(Thing),
        Thing.created_at,
        Thing.id,
        limit=limit,
        cursor=cursor,
    )
    return split_page(list(session.execute(statement).scalars()), limit)


def walk(session: Session, limit: int, query: sa.Select[Any] | None = None) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        things, cursor = page(session, limit, cursor, query)
        pages.append([thing.name for thing in things])
        if cursor is None:
            return pages
        assert len(pages) < 10, "pagination does not terminate"


def test_walk_pages_of_two(engine: Engine) -> None:
    with Session(engine) as session:
        pages = walk(session, 2)
    assert pages == [["first", "a"], ["b", "c"], ["e"]]
    assert [name for names in pages for name in names] == EXPECTED


@pytest.mark.parametrize("limit", [1, 2, 3, 4])
def test_every_row_exactly_once(engine: Engine, limit: int) -> None:
    with Session(engine) as session:
        pages = walk(session, limit)
    assert [name for names in pages for name in names] == EXPECTED
    assert all(len(names) == limit for names in pages[:-1])


@pytest.mark.parametrize("limit", [5, 6, 100])
def test_single_page_has_no_next_cursor(engine: Engine, limit: int) -> None:
    with Session(engine) as session:
        things, cursor = page(session, limit, None)
    assert [thing.name for thing in things] == EXPECTED
    assert cursor is None


def test_next_cursor_names_the_last_row_of_the_page(engine: Engine) -> None:
    with Session(engine) as session:
        things, cursor = page(session, 2, None)
    assert cursor == encode_cursor(things[-1].created_at, things[-1].id)
    assert decode_cursor(cursor) == (T0 + timedelta(seconds=1), uid(0xA))


def test_rows_inserted_before_the_cursor_do_not_shift_pages(engine: Engine) -> None:
    with Session(engine) as session:
        first, cursor = page(session, 2, None)
        session.add(Thing(id=uid(0x1), created_at=T0 - timedelta(days=1), name="older"))
        session.add(Thing(id=uid(0x2), created_at=T0 + timedelta(seconds=1), name="tied-low"))
        session.add(Thing(id=uid(0xD), created_at=T0 + timedelta(seconds=1), name="tied-high"))
        session.flush()
        rest, _ = page(session, 10, cursor)
    assert [thing.name for thing in first] == ["first", "a"]
    # Rows sorting before the cursor are not seen again; later ones are.
    assert [thing.name for thing in rest] == ["b", "c", "tied-high", "e"]


def test_the_query_filter_is_kept(engine: Engine) -> None:
    query = sa.select(Thing).where(Thing.name != "b")
    with Session(engine) as session:
        pages = walk(session, 2, query)
    assert pages == [["first", "a"], ["c", "e"]]


def test_empty_table(engine: Engine) -> None:
    with Session(engine) as session:
        session.execute(sa.delete(Thing))
        assert page(session, 2, None) == ([], None)


def test_bad_cursor_refused_before_querying(engine: Engine) -> None:
    with pytest.raises(ProblemError) as caught:
        keyset_page(sa.select(Thing), Thing.created_at, Thing.id, limit=2, cursor="garbage!")
    assert caught.value.problem.errors[0].field == "cursor"


def test_split_page_without_a_database() -> None:
    class Row:
        def __init__(self, n: int) -> None:
            self.created_at = T0 + timedelta(seconds=n)
            self.id = uid(n)

    rows = [Row(n) for n in range(3)]
    assert split_page(rows, 3) == (rows, None)
    items, cursor = split_page(rows, 2)
    assert items == rows[:2]
    assert cursor is not None
    assert decode_cursor(cursor) == (T0 + timedelta(seconds=1), uid(1))
