"""Database work per request: SQL shapes, counting within a request, SQLAlchemy, N+1."""

from __future__ import annotations

import contextvars
import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import create_async_engine

from polyframe_testing.telemetry import metric_value
from service_kit import dbstats
from service_kit.dbstats import QueryStats, begin, record, shape, statement_span, watch_sqlalchemy
from service_kit.sqla import engine_options, instrument
from service_kit.telemetry import Telemetry

MakeTelemetry = Callable[..., Telemetry]
#: How long a test waits for a thread that should finish at once (not a performance threshold).
PATIENCE = 30.0


# --- shape -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE id = 5", "SELECT * FROM t WHERE id = ?"),
        ("SELECT * FROM t WHERE price > 12.50", "SELECT * FROM t WHERE price > ?"),
        ("SELECT * FROM t WHERE name = 'O''Brien'", "SELECT * FROM t WHERE name = ?"),
        (
            "SELECT * FROM t WHERE name = 'a' AND b = 'x y'",
            "SELECT * FROM t WHERE name = ? AND b = ?",
        ),
        # Placeholders of each driver in use.
        ("SELECT * FROM t WHERE id = ?", "SELECT * FROM t WHERE id = ?"),  # sqlite (qmark)
        ("SELECT * FROM t WHERE id = %s", "SELECT * FROM t WHERE id = ?"),  # psycopg (format)
        ("SELECT * FROM t WHERE id = $1", "SELECT * FROM t WHERE id = ?"),  # asyncpg (numeric)
        ("SELECT * FROM t WHERE id = :id", "SELECT * FROM t WHERE id = ?"),  # named
        # IN lists of any length are one shape.
        ("SELECT * FROM t WHERE id IN (?)", "SELECT * FROM t WHERE id IN (…)"),
        ("SELECT * FROM t WHERE id IN (?, ?, ?)", "SELECT * FROM t WHERE id IN (…)"),
        ("SELECT * FROM t WHERE id in (%s,%s)", "SELECT * FROM t WHERE id IN (…)"),
        ("SELECT * FROM t WHERE id IN ($1, $2, $3, $4)", "SELECT * FROM t WHERE id IN (…)"),
        ("SELECT * FROM t WHERE id IN (:a, :b)", "SELECT * FROM t WHERE id IN (…)"),
        ("SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM t WHERE id IN (…)"),
        (
            "SELECT * FROM t WHERE k IN ('a','b') AND n = 1",
            "SELECT * FROM t WHERE k IN (…) AND n = ?",
        ),
        # Whitespace does not make a shape of its own.
        ("SELECT *\n  FROM t\n WHERE id = 1  ", "SELECT * FROM t WHERE id = ?"),
        # Identifiers with digits stay.
        ("SELECT col1 FROM table2", "SELECT col1 FROM table2"),
    ],
)
def test_shape(sql: str, expected: str) -> None:
    assert shape(sql) == expected


def test_shapes_of_one_pattern_are_equal_whatever_the_values() -> None:
    statements = [
        "SELECT id, name FROM audit_event WHERE id = 1 LIMIT 1",
        "SELECT id, name FROM audit_event WHERE id = 22 LIMIT 1",
        "SELECT id, name FROM audit_event WHERE id = %s LIMIT 1",
    ]
    assert len({shape(sql) for sql in statements}) == 1
    assert shape("SELECT a FROM t WHERE id IN (%s, %s)") == shape(
        "SELECT a FROM t WHERE id IN (%s, %s, %s, %s, %s)"
    )


# --- counting within a request ---------------------------------------------------------------


def test_statements_outside_a_request_are_not_counted() -> None:
    record("SELECT 1", 0.5)  # no error, nothing to count into
    stats, end = begin()
    end()
    record("SELECT 1", 0.5)
    assert stats == QueryStats()


def test_statements_of_a_request_are_counted() -> None:
    stats, end = begin()
    try:
        record("SELECT * FROM t WHERE id = 1", 0.25)
        record("SELECT * FROM t WHERE id = 2", 0.5)
        record("UPDATE t SET n = 3", 0.125)
    finally:
        end()
    assert stats.queries == 3
    assert stats.seconds == 0.875
    assert stats.most_repeated() == ("SELECT * FROM t WHERE id = ?", 2)
    assert QueryStats().most_repeated() is None


def test_requests_are_counted_apart() -> None:
    outer, end_outer = begin()
    record("SELECT 1", 0)
    inner, end_inner = begin()
    record("SELECT 2", 0)
    end_inner()
    record("SELECT 3", 0)
    end_outer()
    assert (outer.queries, inner.queries) == (2, 1)


def test_counting_follows_the_request_into_threads_that_carry_its_context() -> None:
    stats, end = begin()
    try:
        carried = threading.Thread(
            target=contextvars.copy_context().run, args=(record, "SELECT 1", 0)
        )
        carried.start()
        carried.join()
        foreign = threading.Thread(target=record, args=("SELECT 2", 0))  # another request's thread
        foreign.start()
        foreign.join()
    finally:
        end()
    assert stats.shapes == {"SELECT ?": 1}


def test_end_from_another_context_only_forgets() -> None:
    stats, end = begin()
    contextvars.Context().run(end)  # a hook that runs elsewhere must not raise
    record("SELECT 1", 0)
    end()
    assert stats.queries == 1


# --- spans -----------------------------------------------------------------------------------


def test_statement_span(spans: Any) -> None:
    span = statement_span("select * from t where id = ?", "sqlite")
    span.end()
    (finished,) = spans.get_finished_spans()
    assert finished.name == "SELECT sqlite"
    assert finished.kind is SpanKind.CLIENT
    assert dict(finished.attributes) == {
        "db.system.name": "sqlite",
        "db.operation.name": "SELECT",
        "db.query.text": "select * from t where id = ?",
    }


def test_statement_span_of_empty_text(spans: Any) -> None:
    statement_span("   ", "postgresql").end()
    assert spans.get_finished_spans()[0].name == "SQL postgresql"


# --- SQLAlchemy --------------------------------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    watch_sqlalchemy(engine)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)"))
    yield engine
    engine.dispose()


def test_sqlalchemy_statements_traced_and_counted(engine: Engine, spans: Any) -> None:
    spans.clear()
    with trace.get_tracer("tests").start_as_current_span("request") as parent:
        stats, end = begin()
        try:
            with engine.begin() as connection:
                for n in range(4):
                    connection.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
                connection.execute(text("SELECT n FROM t WHERE id IN (1, 2)"))
        finally:
            end()
    assert stats.queries == 5
    assert stats.shapes == {"INSERT INTO t (n) VALUES (?)": 4, "SELECT n FROM t WHERE id IN (…)": 1}
    assert stats.seconds > 0
    statements = [span for span in spans.get_finished_spans() if span.name != "request"]
    assert [span.name for span in statements] == ["INSERT sqlite"] * 4 + ["SELECT sqlite"]
    assert statements[0].attributes["db.query.text"] == "INSERT INTO t (n) VALUES (?)"
    assert all(span.parent.span_id == parent.get_span_context().span_id for span in statements)


def test_sqlalchemy_watched_once(engine: Engine, spans: Any) -> None:
    watch_sqlalchemy(engine)  # again: nothing more
    spans.clear()
    stats, end = begin()
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    end()
    assert stats.queries == 1
    assert len(spans.get_finished_spans()) == 1


def test_sqlalchemy_failed_statement_flagged_and_counted(engine: Engine, spans: Any) -> None:
    spans.clear()
    stats, end = begin()
    with engine.connect() as connection, pytest.raises(OperationalError):
        connection.execute(text("SELECT nope FROM missing"))
    end()
    assert stats.queries == 1
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "OperationalError"
    assert [event.name for event in span.events] == ["exception"]


def test_sqlalchemy_statements_outside_a_request_traced_not_counted(
    engine: Engine, spans: Any
) -> None:
    spans.clear()
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert len(spans.get_finished_spans()) == 1  # migrations and the dispatcher are traced


async def test_async_engine_statements_counted_in_the_request(spans: Any) -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    watch_sqlalchemy(engine.sync_engine)
    try:
        spans.clear()
        stats, end = begin()
        try:
            async with engine.connect() as connection:
                for n in range(3):
                    await connection.execute(text("SELECT :n"), {"n": n})
        finally:
            end()
    finally:
        await engine.dispose()
    assert stats.queries == 3
    assert stats.shapes == {"SELECT ?": 3}
    assert [span.name for span in spans.get_finished_spans()] == ["SELECT sqlite"] * 3


# --- N+1 detection -------------------------------------------------------------------------------


@pytest.fixture
def warnings_of_telemetry(
    caplog: pytest.LogCaptureFixture,
) -> Callable[[], list[logging.LogRecord]]:
    caplog.set_level(logging.WARNING, logger="service_kit.telemetry")
    return lambda: [r for r in caplog.records if r.name == "service_kit.telemetry"]


def item_queries(count: int) -> list[str]:
    """One query per item of an order: the N+1 pattern, ``count`` times one shape."""
    return [f"SELECT * FROM item WHERE order_id = {n}" for n in range(count)]  # noqa: S608


def run_request(telemetry: Telemetry, statements: list[str], route: str = "/api/things") -> Any:
    """One request that runs ``statements``; its span (finished)."""
    with trace.get_tracer("tests").start_as_current_span("request") as span:
        state = telemetry.start_request("GET")
        for sql in statements:
            record(sql, 0.001)
        telemetry.finish_request(state, route=route, status=200, request_bytes=0, response_bytes=0)
    return span


def test_repeated_shape_over_the_threshold_is_flagged(
    make_telemetry: MakeTelemetry,
    samples: Any,
    spans: Any,
    warnings_of_telemetry: Callable[[], list[logging.LogRecord]],
) -> None:
    telemetry = make_telemetry(repeated_query_threshold=3)
    statements = [*item_queries(4), "SELECT 1"]
    run_request(telemetry, statements, route="/api/orders")
    service = {"service_name": telemetry.service, "http_route": "/api/orders"}
    assert samples.value("polyframe_db_repeated_queries_total", **service) == 1
    assert samples.value("polyframe_db_queries_per_request_sum", **service) == 5
    assert samples.value("polyframe_db_queries_per_request_count", **service) == 1
    assert samples.value("polyframe_db_time_per_request_seconds_sum", **service) == pytest.approx(
        0.005
    )
    (span,) = [s for s in spans.get_finished_spans() if s.name == "request"]
    (event,) = span.events
    assert event.name == "db.repeated_query"
    assert dict(event.attributes) == {
        "db.repeated_query.count": 4,
        "db.repeated_query.shape": "SELECT * FROM item WHERE order_id = ?",
        "db.query.count": 5,
    }
    assert span.attributes["db.repeated_query.count"] == 4
    (warning,) = warnings_of_telemetry()
    assert warning.getMessage() == "repeated query (N+1?)"
    assert (warning.route, warning.count, warning.queries) == ("/api/orders", 4, 5)  # type: ignore[attr-defined]


def test_repeated_shape_at_the_threshold_is_not_flagged(
    make_telemetry: MakeTelemetry,
    samples: Any,
    spans: Any,
    warnings_of_telemetry: Callable[[], list[logging.LogRecord]],
) -> None:
    telemetry = make_telemetry(repeated_query_threshold=3)
    run_request(telemetry, item_queries(3))
    assert samples.value("polyframe_db_repeated_queries_total", service_name=telemetry.service) == 0
    assert (
        samples.value("polyframe_db_queries_per_request_sum", service_name=telemetry.service) == 3
    )
    (span,) = [s for s in spans.get_finished_spans() if s.name == "request"]
    assert span.events == ()
    assert "db.repeated_query.count" not in span.attributes
    assert warnings_of_telemetry() == []


def test_a_request_without_statements_observes_zero(
    make_telemetry: MakeTelemetry, samples: Any
) -> None:
    telemetry = make_telemetry()
    run_request(telemetry, [])
    assert (
        samples.value("polyframe_db_queries_per_request_count", service_name=telemetry.service) == 1
    )
    assert (
        samples.value(
            "polyframe_db_queries_per_request_bucket", service_name=telemetry.service, le="0.0"
        )
        == 1
    )


def test_database_part_finished_once(make_telemetry: MakeTelemetry, samples: Any) -> None:
    """Django's adapter finishes it early (while the span records); finish_request then skips it."""
    telemetry = make_telemetry(repeated_query_threshold=2)
    state = telemetry.start_request("GET")
    assert state is not None
    for _ in range(3):
        record("SELECT * FROM t WHERE id = 1", 0)
    telemetry.finish_database(state, "/early")
    record("SELECT late", 0)  # after the early finish: no longer this request's
    telemetry.finish_request(state, route="/late", status=200, request_bytes=0, response_bytes=0)
    assert (
        samples.value("polyframe_db_queries_per_request_sum", service_name=telemetry.service) == 3
    )
    assert samples.series(
        "polyframe_db_queries_per_request_count", service_name=telemetry.service
    ) == [{"service_name": telemetry.service, "framework": "tests", "http_route": "/early"}]
    assert samples.value("polyframe_db_repeated_queries_total", service_name=telemetry.service) == 1
    assert dbstats._current.get() is None


# --- the connection pool -----------------------------------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def pool_of_one(tmp_path: Path, make_telemetry: MakeTelemetry) -> Iterator[tuple[Engine, Any]]:
    """A SQLite file engine with a pool of one connection (no overflow, 1 s timeout),
    instrumented as the services' are; and the values of its service's pool metrics."""
    telemetry = make_telemetry()
    url, options = engine_options(f"sqlite:///{tmp_path / 'pool.db'}")
    engine = create_engine(url, **options, pool_size=1, max_overflow=0, pool_timeout=1)
    instrument(engine, telemetry)
    service = {"service_name": telemetry.service, "framework": telemetry.framework}
    try:
        yield engine, lambda name, **labels: metric_value(name, **service, **labels)
    finally:
        engine.dispose()


def test_pool_held_by_one_request_makes_the_next_wait(pool_of_one: tuple[Engine, Any]) -> None:
    engine, value = pool_of_one
    assert value("polyframe_db_pool_max_connections") == 1
    waiting, got = threading.Event(), threading.Event()
    began: list[float] = []

    def second_request() -> None:
        waiting.set()
        began.append(time.perf_counter())
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            got.set()

    with engine.connect() as first:
        first.execute(text("SELECT 1"))
        assert value("polyframe_db_pool_connections", state="in_use") == 1
        assert value("polyframe_db_pool_connections", state="idle") == 0
        waits_before = value("polyframe_db_pool_wait_seconds_count")
        other = threading.Thread(target=second_request)
        other.start()
        assert waiting.wait(PATIENCE)
        assert not got.wait(0.2)  # the pool's one connection is this request's
        assert value("polyframe_db_pool_connections", state="in_use") == 1
        released = time.perf_counter()
    other.join(PATIENCE)
    assert got.is_set()
    # The second request's wait: counted once, and at least until the first let go.
    assert value("polyframe_db_pool_wait_seconds_count") == waits_before + 1
    waited = value("polyframe_db_pool_wait_seconds_sum")
    assert waited >= released - began[0]
    assert value("polyframe_db_pool_wait_seconds_bucket", le="0.1") <= waits_before
    assert value("polyframe_db_pool_connections", state="in_use") == 0
    assert value("polyframe_db_pool_connections", state="idle") == 1
    assert value("polyframe_db_pool_timeouts_total") == 0
    assert value("polyframe_db_connect_errors_total") == 0


def test_pool_timeout_is_counted(pool_of_one: tuple[Engine, Any]) -> None:
    engine, value = pool_of_one
    with engine.connect() as first:
        first.execute(text("SELECT 1"))
        with pytest.raises(PoolTimeoutError):
            engine.connect()
    assert value("polyframe_db_pool_timeouts_total") == 1
    assert value("polyframe_db_connect_errors_total") == 0
    # The pool's timeout (1 s) is a lower bound of that wait, not a measurement.
    assert value("polyframe_db_pool_wait_seconds_bucket", le="0.5") < value(
        "polyframe_db_pool_wait_seconds_count"
    )
    # The pool survives (dispose() recreates it with the same, counted, class).
    engine.dispose()
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert value("polyframe_db_pool_connections", state="idle") == 1


def test_pool_gauges_end_at_the_pools_last_state_when_threads_publish_at_once(
    make_telemetry: MakeTelemetry,
) -> None:
    """Two threads publish the pool's gauges at once (connections returned together): the
    gauges end at what the pool holds last, not at what the slower thread read earlier."""
    telemetry = make_telemetry()
    read_early, go_on = threading.Event(), threading.Event()

    class Pool:
        checked_out = 1
        _max_overflow = 0

        def size(self) -> int:
            return 1

        def checkedout(self) -> int:
            return self.checked_out

        def checkedin(self) -> int:
            if threading.current_thread().name == "early":  # it read in_use; it is held here
                read_early.set()
                go_on.wait(PATIENCE)
            return 1 - self.checked_out

    class FakeEngine:
        pool = Pool()

    engine = FakeEngine()
    with dbstats._engines_lock:
        dbstats._engines.setdefault(telemetry.labels, weakref.WeakSet()).add(engine)
    service = {"service_name": telemetry.service, "framework": telemetry.framework}
    early = threading.Thread(target=dbstats.publish_pools, args=(telemetry.labels,), name="early")
    early.start()
    try:
        assert read_early.wait(PATIENCE)
        engine.pool.checked_out = 0  # the connection came back meanwhile
        late = threading.Thread(target=dbstats.publish_pools, args=(telemetry.labels,))
        late.start()
        late.join(0.5)  # at once, unless publishing waits for the early thread (it should)
    finally:
        go_on.set()
    early.join(PATIENCE)
    late.join(PATIENCE)
    assert metric_value("polyframe_db_pool_connections", **service, state="in_use") == 0
    assert metric_value("polyframe_db_pool_connections", **service, state="idle") == 1


async def test_async_pool_timeout_is_counted(tmp_path: Path, make_telemetry: MakeTelemetry) -> None:
    telemetry = make_telemetry()
    url, options = engine_options(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}")
    engine = create_async_engine(url, **options, pool_size=1, max_overflow=0, pool_timeout=0.5)
    instrument(engine.sync_engine, telemetry)
    service = {"service_name": telemetry.service, "framework": telemetry.framework}
    try:
        async with engine.connect() as first:
            await first.execute(text("SELECT 1"))
            assert metric_value("polyframe_db_pool_connections", **service, state="in_use") == 1
            with pytest.raises(PoolTimeoutError):
                await engine.connect().start()
    finally:
        await engine.dispose()
    assert metric_value("polyframe_db_pool_timeouts_total", **service) == 1
    assert metric_value("polyframe_db_pool_wait_seconds_count", **service) == 2
    assert metric_value("polyframe_db_connect_errors_total", **service) == 0


@pytest.mark.parametrize("driver", ["postgresql+psycopg", "postgresql+asyncpg"])
async def test_database_down_is_a_connect_error_not_a_timeout(
    make_telemetry: MakeTelemetry, driver: str
) -> None:
    telemetry = make_telemetry()
    url, options = engine_options(f"{driver}://polyframe@127.0.0.1:{closed_port()}/test")
    service = {"service_name": telemetry.service, "framework": telemetry.framework}
    if driver.endswith("asyncpg"):
        engine = create_async_engine(url, **options)
        instrument(engine.sync_engine, telemetry)
        try:
            for _ in range(2):
                with pytest.raises((OSError, OperationalError)):
                    await engine.connect().start()
        finally:
            await engine.dispose()
    else:
        sync_engine = create_engine(url, **options)
        instrument(sync_engine, telemetry)
        try:
            for _ in range(2):
                with pytest.raises(OperationalError):
                    sync_engine.connect()
        finally:
            sync_engine.dispose()
    assert metric_value("polyframe_db_connect_errors_total", **service) == 2
    assert metric_value("polyframe_db_pool_timeouts_total", **service) == 0
    assert metric_value("polyframe_db_pool_connections", **service, state="in_use") == 0
