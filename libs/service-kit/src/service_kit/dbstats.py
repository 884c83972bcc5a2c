"""Database work per request: how many queries, how long, and repeated shapes (N+1); and
the connection pool: connections in use and idle, waits, timeouts, refused connections.

Design: docs/architecture.md, "Runtime signals", "Database work per request", "The
database connection pool".
"""

from __future__ import annotations

import math
import re
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from service_kit import metrics

#: Default of ``<PREFIX>_DB_REPEATED_QUERY_THRESHOLD``: more runs of one shape than this
#: within one request is reported as an N+1 pattern.
DEFAULT_REPEATED_QUERY_THRESHOLD = 10

_WHITESPACE = re.compile(r"\s+")
_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")
_IN_LIST = re.compile(r"\bIN\s*\((?:\s*(?:\?|%s|:\w+|\$\d+)\s*,?)+\)", re.IGNORECASE)
#: Placeholders of the drivers in use: qmark (sqlite), format (psycopg), numeric (asyncpg).
_PLACEHOLDER = re.compile(r"%s|\?|\$\d+|:\w+")


@lru_cache(maxsize=2048)
def shape(sql: str) -> str:
    """``SELECT … WHERE id IN (?, ?, ?) AND n = 5`` -> ``SELECT … WHERE id IN (…) AND n = ?``.

    Remembered per statement text: an ORM sends the same few texts again and again.
    """
    text = _WHITESPACE.sub(" ", sql).strip()
    text = _STRING.sub("?", text)
    text = _PLACEHOLDER.sub("?", text)
    text = _NUMBER.sub("?", text)
    # Last: a list of literals (``IN (1, 2)``) is a list of ``?`` by now.
    return _IN_LIST.sub("IN (…)", text)


@dataclass
class QueryStats:
    queries: int = 0
    seconds: float = 0.0
    shapes: Counter[str] = field(default_factory=Counter)

    def most_repeated(self) -> tuple[str, int] | None:
        if not self.shapes:
            return None
        ((text, count),) = self.shapes.most_common(1)
        return text, count


_current: ContextVar[QueryStats | None] = ContextVar("polyframe_query_stats", default=None)


def record(sql: str, seconds: float) -> None:
    """One statement ran (called by the database hooks)."""
    stats = _current.get()
    if stats is None:
        return
    stats.queries += 1
    stats.seconds += seconds
    stats.shapes[shape(sql)] += 1


def begin() -> tuple[QueryStats, Callable[[], None]]:
    """Start counting; returns the stats and the function that stops (for hook-based adapters)."""
    stats = QueryStats()
    token = _current.set(stats)

    def end() -> None:
        # A hook may run in another context than the one that began (Flask's teardown
        # does not, but be safe): then only forget the stats.
        try:
            _current.reset(token)
        except ValueError:
            _current.set(None)

    return stats, end


_tracer = trace.get_tracer("service_kit.db")


def statement_span(sql: str, system: str) -> Span:
    """A client span for one statement (started, not current; the caller ends it).

    Named ``<OPERATION> <system>`` with the statement's text, which holds placeholders,
    never the values (OpenTelemetry database conventions).
    """
    words = sql.split(None, 1)
    operation = words[0].upper() if words else "SQL"
    return _tracer.start_span(
        f"{operation} {system}",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system.name": system,
            "db.operation.name": operation,
            "db.query.text": sql[:2000],
        },
    )


def watch_sqlalchemy(engine: Any) -> None:
    """Trace and count the statements of a (sync) SQLAlchemy engine (or ``.sync_engine``)."""
    from sqlalchemy import event

    if getattr(engine, "_polyframe_dbstats", False):
        return
    engine._polyframe_dbstats = True  # a marker: a second call adds nothing
    system = engine.dialect.name

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        running = (time.perf_counter(), statement_span(sql, system))
        conn.info.setdefault("polyframe_statements", []).append(running)

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        _done(conn.info.get("polyframe_statements"), sql, None)

    @event.listens_for(engine, "handle_error")
    def _failed(context: Any) -> None:
        running = (
            context.connection.info.get("polyframe_statements") if context.connection else None
        )
        _done(running, context.statement or "", context.original_exception)


def _done(running: list[tuple[float, Span]] | None, sql: str, error: BaseException | None) -> None:
    if not running:
        return
    started, span = running.pop()
    if error is not None:
        span.record_exception(error)
        span.set_status(StatusCode.ERROR, type(error).__name__)
    span.end()
    record(sql, time.perf_counter() - started)


# -- the connection pool (SQLAlchemy) --------------------------------------------------------------

#: The engines whose pools are counted, by the labels they are counted under: a process may
#: have several (the gauges are their sums).
_engines: dict[tuple[str, str], weakref.WeakSet[Any]] = {}
_engines_lock = threading.Lock()
#: Set while a pool's ``_do_get`` runs (it calls itself again when it loses a race).
_getting: ContextVar[bool] = ContextVar("polyframe_pool_getting", default=False)
_pool_classes: dict[tuple[type[Any], tuple[str, str]], type[Any]] = {}


def watch_sqlalchemy_pool(engine: Any, labels: tuple[str, str]) -> None:
    """Count the connections of a (sync) engine's pool (or an async engine's ``sync_engine``),
    the time to get one, the pool's timeouts, and the connections the database refused.

    A QueuePool (the default of every engine here) gets a subclass of its own class that
    times ``_do_get``, the pool's one place where a connection is taken or waited for
    (SQLAlchemy's events only say when one was checked out); ``recreate()`` (on
    ``dispose()``) keeps the class, hence the labels. Connect errors come from the
    ``do_connect`` event, which makes every new connection of the engine.
    """
    from sqlalchemy import event
    from sqlalchemy.pool import QueuePool

    if getattr(engine, "_polyframe_pool", False):
        return
    engine._polyframe_pool = True  # a marker: a second call adds nothing
    metrics.DB_CONNECT_ERRORS.labels(*labels)  # 0 from the start: "down" is told by its rise
    if isinstance(engine.pool, QueuePool):
        metrics.DB_POOL_TIMEOUTS.labels(*labels)
        with _engines_lock:
            _engines.setdefault(labels, weakref.WeakSet()).add(engine)
        engine.pool.__class__ = _timed_pool_class(type(engine.pool), labels)
        publish_pools(labels)

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception:
            metrics.DB_CONNECT_ERRORS.labels(*labels).inc()
            raise


#: Reading the pools and setting the gauges is one step: threads returning connections at
#: once would otherwise set them in any order, the last write being an earlier reading.
_publish_lock = threading.Lock()


def publish_pools(labels: tuple[str, str]) -> None:
    """The gauges of the pools counted under ``labels``: in use, idle, and the most."""
    with _engines_lock:
        pools = [engine.pool for engine in _engines.get(labels, ())]
    with _publish_lock:
        in_use = sum(pool.checkedout() for pool in pools)
        idle = sum(pool.checkedin() for pool in pools)
        limit = sum(
            pool.size() + pool._max_overflow if pool._max_overflow >= 0 else math.inf
            for pool in pools
        )
        metrics.DB_POOL_CONNECTIONS.labels(*labels, "in_use").set(in_use)
        metrics.DB_POOL_CONNECTIONS.labels(*labels, "idle").set(idle)
        metrics.DB_POOL_MAX_CONNECTIONS.labels(*labels).set(limit)


def _timed_pool_class(base: type[Any], labels: tuple[str, str]) -> type[Any]:
    key = (base, labels)
    if key not in _pool_classes:
        _pool_classes[key] = type(
            f"Counted{base.__name__}", (base,), {"_polyframe_labels": labels, **_TIMED}
        )
    return _pool_classes[key]


def _do_get(self: Any) -> Any:
    if _getting.get():  # the pool asking itself again: timed by the outermost call
        return super(type(self), self)._do_get()
    labels = self._polyframe_labels
    token = _getting.set(True)
    started = time.perf_counter()
    try:
        return super(type(self), self)._do_get()
    except Exception as exc:
        from sqlalchemy.exc import TimeoutError as PoolTimeoutError

        if isinstance(exc, PoolTimeoutError):
            metrics.DB_POOL_TIMEOUTS.labels(*labels).inc()
        raise
    finally:
        _getting.reset(token)
        metrics.DB_POOL_WAIT.labels(*labels).observe(time.perf_counter() - started)
        publish_pools(labels)


def _do_return_conn(self: Any, record: Any) -> None:
    try:
        super(type(self), self)._do_return_conn(record)
    finally:
        publish_pools(self._polyframe_labels)


_TIMED = {"_do_get": _do_get, "_do_return_conn": _do_return_conn}
