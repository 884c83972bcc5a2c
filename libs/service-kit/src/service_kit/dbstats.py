"""Database work per request: how many queries, how long, and repeated shapes (N+1).

Design: docs/architecture.md, "Runtime signals", "Database work per request".
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

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
