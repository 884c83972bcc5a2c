"""The transactional outbox, on a real SQLite file and a real PostgreSQL database.

admin-django is replaced by :class:`AdminAudit`, an ``httpx.MockTransport`` handler that
records batches idempotently by event id, as the real ingestion does (``tests/e2e``
exercises the real one). It can be told to fail: refuse the connection, answer 503, or
answer 422. Time is the fixture ``clock`` (``service_kit.outbox.schema.utcnow``), so backoff is
stepped through without sleeping.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, Table, create_engine, event, insert, select
from sqlalchemy.orm import DeclarativeBase

from polyframe_testing.databases import fresh_postgres_database
from service_kit.client import ClientConfig, ServiceClient
from service_kit.outbox import Actor, OutboxMixin, outbox_values, schema
from service_kit.outbox.command import serve_dispatcher, serve_probes
from service_kit.outbox.dispatcher import (
    AUDIT_EVENTS_PATH,
    POLL_SECONDS,
    BatchResult,
    Liveness,
    OutboxDispatcher,
    default_stall_seconds,
)
from service_kit.sqla import SQLITE_BUSY_SECONDS
from service_kit.telemetry import Telemetry
from service_kit.tracecontext import trace_id_var

PRODUCER = "users-fastapi"
SECRET = "outbox-test-secret"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
#: How long a test waits for something another thread does before failing (never reached
#: when the code works; not a performance threshold).
PATIENCE = 15.0


class Base(DeclarativeBase):
    pass


class OutboxEvent(OutboxMixin, Base):
    __tablename__ = "outbox"


TABLE = cast(Table, OutboxEvent.__table__)


# --- admin-django, mocked -----------------------------------------------------------------

#: What :class:`AdminAudit` answers: ``"connect"`` refuses the connection, an int is a status.
Failure = str | int


class AdminAudit:
    """Stands in for admin-django's ``POST /api/audit/events`` (``tests/e2e`` uses the real one).

    Records each event once by id, like the real ingestion (``bulk_create`` with
    ``ignore_conflicts``), answering ``{"recorded", "duplicates"}`` with 201 or 200.
    ``fail_next`` scripts failures for the next requests; ``outage`` fails every request
    until cleared. Thread-safe: several dispatchers may post at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.outage: Failure | None = None
        self._scripted: list[Failure] = []
        #: Every request, in arrival order (failed ones included).
        self.requests: list[httpx.Request] = []
        #: Every batch accepted (2xx), in arrival order.
        self.batches: list[list[dict[str, Any]]] = []
        #: Event id → the event, recorded once.
        self.recorded: dict[str, dict[str, Any]] = {}
        #: Event id → how many times it arrived in an accepted batch.
        self.deliveries: Counter[str] = Counter()
        #: Called with each request before it is answered (test hooks).
        self.on_request: Callable[[httpx.Request], None] | None = None

    def fail_next(self, *failures: Failure) -> None:
        with self._lock:
            self._scripted.extend(failures)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.on_request is not None:
            self.on_request(request)
        with self._lock:
            self.requests.append(request)
            failure = self._scripted.pop(0) if self._scripted else self.outage
            if failure == "connect":
                raise httpx.ConnectError("connection refused", request=request)
            if isinstance(failure, int):
                return httpx.Response(
                    failure,
                    json={"status": failure, "title": "scripted failure"},
                    headers={"Content-Type": "application/problem+json"},
                )
            events: list[dict[str, Any]] = json.loads(request.content)["events"]
            return self._accept(events)

    def _accept(self, events: list[dict[str, Any]]) -> httpx.Response:
        self.batches.append(events)
        recorded = 0
        for item in events:
            self.deliveries[item["id"]] += 1
            if item["id"] not in self.recorded:
                self.recorded[item["id"]] = item
                recorded += 1
        self._lock.notify_all()
        return httpx.Response(
            201 if recorded else 200,
            json={"recorded": recorded, "duplicates": len(events) - recorded},
        )

    def accept(self, events: list[dict[str, Any]]) -> None:
        """Record a batch received by other means (a dispatcher in another process)."""
        with self._lock:
            self._accept(events)

    def wait_for_recorded(self, count: int) -> None:
        with self._lock:
            assert self._lock.wait_for(lambda: len(self.recorded) >= count, PATIENCE), (
                f"admin recorded {len(self.recorded)} of {count} events"
            )

    @property
    def sent_ids(self) -> list[str]:
        """Ids of the accepted batches in arrival order (a resent id appears again)."""
        return [item["id"] for batch in self.batches for item in batch]


# --- time -------------------------------------------------------------------------------


class Clock:
    """``service_kit.outbox.schema.utcnow`` under the test's control."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(schema, "utcnow", clock)
    return clock


# --- databases ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this module (skipped locally without one, fails in CI)."""
    with fresh_postgres_database("outbox_test") as url:
        yield url.replace("postgresql://", "postgresql+psycopg://", 1)


def sqlite_engine(path: Path, **kwargs: Any) -> Engine:
    return create_engine(f"sqlite:///{path}", **kwargs)


@contextmanager
def outbox_database(kind: str, request: pytest.FixtureRequest, path: Path) -> Iterator[Engine]:
    if kind == "sqlite":
        engine = sqlite_engine(path)
    else:
        engine = create_engine(request.getfixturevalue("postgres_url"))
    Base.metadata.create_all(engine)
    try:
        yield engine
    finally:
        if kind == "postgres":
            Base.metadata.drop_all(engine)
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty outbox table: in a new SQLite file, or in the module's PostgreSQL database."""
    with outbox_database(request.param, request, tmp_path / "outbox.db") as engine:
        yield engine


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """An SQLite file with an empty outbox table, for the SQLite-only tests."""
    path = tmp_path / "outbox.db"
    engine = sqlite_engine(path)
    Base.metadata.create_all(engine)
    engine.dispose()
    return path


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_engine(postgres_url)
    Base.metadata.create_all(engine)
    try:
        yield engine
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()


# --- dispatchers --------------------------------------------------------------------------


@pytest.fixture
def admin() -> AdminAudit:
    return AdminAudit()


MakeDispatcher = Callable[..., OutboxDispatcher]


def client_config(**overrides: Any) -> ClientConfig:
    values: dict[str, Any] = {
        "peer": "admin-django",
        "base_url": "http://admin.test",
        "caller": PRODUCER,
        "secret": SECRET,
        "timeout_seconds": 2.0,
        "max_attempts": 1,
        "backoff_base_seconds": 0.001,
        "backoff_max_seconds": 0.002,
    }
    values.update(overrides)
    return ClientConfig(**values)


@pytest.fixture
def make_dispatcher(admin: AdminAudit) -> Iterator[MakeDispatcher]:
    """Dispatchers posting to ``admin``; each has a client of its own, closed afterwards."""
    clients: list[ServiceClient] = []

    def make(
        engine: Engine, *, client: ClientConfig | None = None, **kwargs: Any
    ) -> OutboxDispatcher:
        service_client = ServiceClient(
            client or client_config(), transport=httpx.MockTransport(admin)
        )
        clients.append(service_client)
        return OutboxDispatcher(engine, TABLE, service_client, producer=PRODUCER, **kwargs)

    yield make
    for service_client in clients:
        service_client.close()


# --- helpers ------------------------------------------------------------------------------


def event_values(index: int, **overrides: Any) -> dict[str, Any]:
    values = outbox_values(
        action="user.created",
        subject_type="user",
        subject_id=f"subject-{index}",
        actor=Actor("user", f"user-{index}"),
        payload={"index": index},
    )
    values.update(overrides)
    return values


def add_events(engine: Engine, count: int, **overrides: Any) -> list[str]:
    """Insert ``count`` due events; their ids as admin-django sees them (strings)."""
    rows = [event_values(index, **overrides) for index in range(count)]
    with engine.begin() as connection:
        connection.execute(insert(TABLE), rows)
    return [str(row["id"]) for row in rows]


def rows_by_id(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        return {str(row.id): row for row in connection.execute(select(TABLE)).all()}


def expected_order(engine: Engine) -> list[str]:
    """Ids in the order the dispatcher must deliver them: (occurred_at, id)."""
    rows = rows_by_id(engine).values()
    return [str(row.id) for row in sorted(rows, key=lambda row: (row.occurred_at, row.id))]


def pending(dispatcher: OutboxDispatcher) -> int:
    """Undelivered events, as the dispatcher reports them (its backlog gauge)."""
    count, _age = dispatcher.backlog()
    return count


def drain(dispatcher: OutboxDispatcher) -> None:
    """Dispatch until nothing is pending (other holders of row locks may delay it)."""
    deadline = time.monotonic() + PATIENCE
    while pending(dispatcher):
        assert time.monotonic() < deadline, f"{pending(dispatcher)} events still pending"
        if dispatcher.dispatch_once().idle:
            time.sleep(0.01)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


class Records(logging.Handler):
    """Collects the dispatcher's log records; lets a test wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def messages(self) -> list[str]:
        with self._changed:
            return [record.getMessage() for record in self.records]

    def wait_for(self, message: str) -> logging.LogRecord:
        with self._changed:
            assert self._changed.wait_for(
                lambda: any(r.getMessage() == message for r in self.records), PATIENCE
            ), f"no {message!r} in {[r.getMessage() for r in self.records]}"
            return next(r for r in self.records if r.getMessage() == message)


@pytest.fixture
def outbox_log() -> Iterator[Records]:
    logger = logging.getLogger("service_kit.outbox")
    handler = Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def running(
    dispatcher: OutboxDispatcher, *, idle_seconds: float
) -> Iterator[tuple[threading.Event, threading.Thread]]:
    """``dispatcher.run`` in a thread; stopped (and checked to stop) on exit."""
    stop = threading.Event()
    thread = threading.Thread(
        target=dispatcher.run, args=(stop,), kwargs={"idle_seconds": idle_seconds}, daemon=True
    )
    thread.start()
    try:
        yield stop, thread
    finally:
        stop.set()
        thread.join(PATIENCE)
        assert not thread.is_alive(), "the dispatcher did not stop"


# --- the dispatcher ------------------------------------------------------------------------


def test_batch_result_idle() -> None:
    assert BatchResult(0, 0).idle
    assert not BatchResult(1, 0).idle
    assert not BatchResult(0, 1).idle


# --- delivery ------------------------------------------------------------------------------


def test_batches_of_batch_size_in_order(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher, clock: Clock
) -> None:
    start = clock.now
    rows = [event_values(index) for index in range(250)]
    for index, row in enumerate(rows):
        # Distinct instants, plus groups of equal ones (ordered by id).
        row["occurred_at"] = start + timedelta(milliseconds=index // 3)
    random.Random(7).shuffle(rows)  # the insertion order must not matter
    with engine.begin() as connection:
        connection.execute(insert(TABLE), rows)
    order = expected_order(engine)
    dispatcher = make_dispatcher(engine, batch_size=100)

    assert pending(dispatcher) == 250
    assert dispatcher.dispatch_once() == BatchResult(100, 0)
    assert pending(dispatcher) == 150
    assert dispatcher.dispatch_once() == BatchResult(100, 0)
    assert dispatcher.dispatch_once() == BatchResult(50, 0)
    assert dispatcher.dispatch_once() == BatchResult(0, 0)
    assert pending(dispatcher) == 0

    assert [len(batch) for batch in admin.batches] == [100, 100, 50]
    assert admin.sent_ids == order
    for row in rows_by_id(engine).values():
        assert row.delivered_at == clock.now
        assert row.attempts == 0
        assert row.last_error is None


def test_event_body_and_request(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher, clock: Clock
) -> None:
    token = trace_id_var.set(TRACE_ID)
    try:
        values = outbox_values(
            action="user.role_changed",
            subject_type="user",
            subject_id="42",
            actor=Actor("service", "admin-django", acting_for="staff-7"),
            payload={"from": "member", "to": "staff", "nested": {"n": [1, 2]}},
        )
    finally:
        trace_id_var.reset(token)
    with engine.begin() as connection:
        connection.execute(insert(TABLE).values(**values))

    assert make_dispatcher(engine).dispatch_once() == BatchResult(1, 0)

    (request,) = admin.requests
    assert request.method == "POST"
    assert request.url == httpx.URL(f"http://admin.test{AUDIT_EVENTS_PATH}")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == str(values["id"])
    scheme, _, token_text = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(token_text).decode() == f"{PRODUCER}:{SECRET}"
    ((sent,),) = admin.batches
    assert sent == {
        "id": str(values["id"]),
        "occurred_at": sent["occurred_at"],
        "service": PRODUCER,
        "actor": {"type": "service", "id": "admin-django", "acting_for": "staff-7"},
        "action": "user.role_changed",
        "subject": {"type": "user", "id": "42"},
        "trace_id": TRACE_ID,
        "payload": {"from": "member", "to": "staff", "nested": {"n": [1, 2]}},
    }
    occurred = datetime.fromisoformat(sent["occurred_at"])
    assert occurred == clock.now
    assert occurred.utcoffset() == timedelta(0)  # aware: admin-django refuses naive times


def test_empty_outbox_sends_nothing(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher
) -> None:
    dispatcher = make_dispatcher(engine)
    assert dispatcher.dispatch_once() == BatchResult(0, 0)
    assert pending(dispatcher) == 0
    assert admin.requests == []


def test_delivered_rows_are_not_resent(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher, clock: Clock
) -> None:
    first = add_events(engine, 30)
    dispatcher = make_dispatcher(engine, batch_size=100)
    assert dispatcher.dispatch_once() == BatchResult(30, 0)
    clock.advance(3600)
    assert dispatcher.dispatch_once() == BatchResult(0, 0)
    # Neither by a new dispatcher (a restart).
    assert make_dispatcher(engine).dispatch_once() == BatchResult(0, 0)

    second = add_events(engine, 5)
    assert dispatcher.dispatch_once() == BatchResult(5, 0)
    assert len(admin.requests) == 2
    assert admin.sent_ids == sorted(first) + sorted(second)
    assert set(admin.deliveries.values()) == {1}


def test_rows_not_yet_due_wait(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher, clock: Clock
) -> None:
    due = add_events(engine, 2)
    later = add_events(engine, 3, next_attempt_at=clock.now + timedelta(seconds=10))
    dispatcher = make_dispatcher(engine)
    assert dispatcher.dispatch_once() == BatchResult(2, 0)
    assert pending(dispatcher) == 3  # pending counts rows waiting for a retry too
    clock.advance(9.999)
    assert dispatcher.dispatch_once() == BatchResult(0, 0)
    clock.advance(0.001)
    assert dispatcher.dispatch_once() == BatchResult(3, 0)
    assert sorted(admin.sent_ids) == sorted(due + later)


# --- failures and backoff --------------------------------------------------------------------

FAILURES = [
    pytest.param("connect", "admin-django unavailable: ConnectError", id="connection-refused"),
    pytest.param(503, "admin-django unavailable: HTTP 503", id="503"),
    pytest.param(422, "admin-django answered HTTP 422: ", id="422"),
]


@pytest.mark.parametrize(("failure", "error"), FAILURES)
def test_failed_batch_is_retried_after_its_backoff(
    engine: Engine,
    admin: AdminAudit,
    make_dispatcher: MakeDispatcher,
    clock: Clock,
    outbox_log: Records,
    failure: Failure,
    error: str,
) -> None:
    ids = add_events(engine, 7)
    dispatcher = make_dispatcher(engine, batch_size=10, max_backoff_seconds=60)
    admin.outage = failure

    for attempt, delay in enumerate([0.5, 1.0, 2.0, 4.0], start=1):
        failed_at = clock.now
        assert dispatcher.dispatch_once() == BatchResult(0, 7)
        assert len(admin.requests) == attempt
        for row in rows_by_id(engine).values():
            assert row.attempts == attempt
            assert row.next_attempt_at == failed_at + timedelta(seconds=delay)
            assert row.delivered_at is None
            assert row.last_error.startswith(error)
        assert pending(dispatcher) == 7
        # Not due yet: nothing is sent, however often the dispatcher looks.
        assert dispatcher.dispatch_once() == BatchResult(0, 0)
        clock.advance(delay - 0.001)
        assert dispatcher.dispatch_once() == BatchResult(0, 0)
        assert len(admin.requests) == attempt
        clock.advance(0.001)

    if failure == 422:
        assert "scripted failure" in rows_by_id(engine)[ids[0]].last_error  # the answer's body
    warning = outbox_log.wait_for("audit delivery failed; will retry")
    assert warning.levelno == logging.WARNING
    assert warning.__dict__["count"] == 7

    admin.outage = None  # admin-django is back
    assert dispatcher.dispatch_once() == BatchResult(7, 0)
    assert pending(dispatcher) == 0
    assert sorted(admin.recorded) == sorted(ids)
    assert set(admin.deliveries.values()) == {1}
    for row in rows_by_id(engine).values():
        assert row.delivered_at == clock.now
        assert row.attempts == 4


def test_backoff_is_capped(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher, clock: Clock
) -> None:
    add_events(engine, 1)
    dispatcher = make_dispatcher(engine, max_backoff_seconds=3)
    admin.outage = 503
    delays = []
    for _ in range(6):
        failed_at = clock.now
        assert dispatcher.dispatch_once() == BatchResult(0, 1)
        (row,) = rows_by_id(engine).values()
        delays.append((row.next_attempt_at - failed_at).total_seconds())
        clock.advance(delays[-1])
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_backoff_stays_capped_after_very_many_attempts(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher, clock: Clock
) -> None:
    # An outage of a day at a 60 s cap is ~1,440 attempts; 2 ** attempts overflows a float.
    ids = add_events(engine, 2, attempts=5000)
    dispatcher = make_dispatcher(engine, max_backoff_seconds=60)
    admin.outage = "connect"
    assert dispatcher.dispatch_once() == BatchResult(0, 2)
    for row in rows_by_id(engine).values():
        assert row.attempts == 5001
        assert row.next_attempt_at == clock.now + timedelta(seconds=60)
    admin.outage = None
    clock.advance(60)
    assert dispatcher.dispatch_once() == BatchResult(2, 0)
    assert sorted(admin.recorded) == sorted(ids)


def test_a_failed_batch_holds_back_the_later_rows(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher, clock: Clock
) -> None:
    first = add_events(engine, 3)
    clock.advance(1)
    later = add_events(engine, 3)
    dispatcher = make_dispatcher(engine, batch_size=3)
    admin.fail_next(503)
    assert dispatcher.dispatch_once() == BatchResult(0, 3)  # the first three, backed off
    # While they wait, the later rows go out; order is per batch, not global.
    assert dispatcher.dispatch_once() == BatchResult(3, 0)
    assert sorted(admin.sent_ids) == sorted(later)
    clock.advance(0.5)
    assert dispatcher.dispatch_once() == BatchResult(3, 0)
    assert sorted(admin.sent_ids[3:]) == sorted(first)


def test_client_retries_a_transient_failure_within_one_dispatch(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher
) -> None:
    ids = add_events(engine, 4)
    first = expected_order(engine)[0]
    dispatcher = make_dispatcher(engine, client=client_config(max_attempts=3))
    admin.fail_next("connect", 503)
    assert dispatcher.dispatch_once() == BatchResult(4, 0)
    assert len(admin.requests) == 3
    # The batch carries an Idempotency-Key, so the client may resend the POST.
    assert {request.headers["idempotency-key"] for request in admin.requests} == {first}
    assert sorted(admin.recorded) == sorted(ids)


# --- crashes: at-least-once delivery, exactly-once recording ---------------------------------


def test_crash_between_sending_and_marking(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher
) -> None:
    ids = add_events(engine, 12)
    crashed = make_dispatcher(engine, batch_size=5)

    def die_on_mark(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            raise RuntimeError("the process died after admin-django accepted the batch")

    event.listen(engine, "before_cursor_execute", die_on_mark)
    try:
        with pytest.raises(RuntimeError, match="process died"):
            crashed.dispatch_once()
    finally:
        event.remove(engine, "before_cursor_execute", die_on_mark)

    # admin-django has the first batch; the outbox still says it is pending.
    assert len(admin.recorded) == 5
    assert pending(crashed) == 12
    assert all(row.delivered_at is None for row in rows_by_id(engine).values())

    restarted = make_dispatcher(engine, batch_size=5)
    drain(restarted)
    assert sorted(admin.recorded) == sorted(ids)  # nothing lost
    resent = {item for item, count in admin.deliveries.items() if count == 2}
    assert resent == {item["id"] for item in admin.batches[0]}  # the first batch, once more
    assert set(admin.deliveries.values()) == {1, 2}
    assert len(admin.recorded) == len(set(admin.sent_ids)) == 12  # recorded once each
    assert pending(restarted) == 0


#: A dispatcher process whose "admin-django" accepts the first batch, writes it down and
#: then kills the process with SIGKILL: no answer, no UPDATE, no rollback of its own.
DYING_DISPATCHER = """
import json, os, signal, sys

import httpx
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase

from polyframe_testing.databases import fresh_postgres_database
from service_kit.client import ClientConfig, ServiceClient
from service_kit.outbox import OutboxMixin
from service_kit.outbox.dispatcher import OutboxDispatcher


class Base(DeclarativeBase):
    pass


class OutboxEvent(OutboxMixin, Base):
    __tablename__ = "outbox"


url, received, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])


def accept_then_die(request):
    with open(received, "w") as file:
        file.write(request.content.decode())
        file.flush()
        os.fsync(file.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


client = ServiceClient(
    ClientConfig(peer="admin-django", base_url="http://admin.test", caller="users-fastapi"),
    transport=httpx.MockTransport(accept_then_die),
)
engine = create_engine(url)
OutboxDispatcher(
    engine, OutboxEvent.__table__, client, producer="users-fastapi", batch_size=batch_size
).dispatch_once()
print("still alive")
"""


def test_process_killed_after_admin_accepted_the_batch(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher, tmp_path: Path
) -> None:
    ids = add_events(engine, 9)
    order = expected_order(engine)
    received = tmp_path / "received.json"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            DYING_DISPATCHER,
            engine.url.render_as_string(hide_password=False),
            str(received),
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert "still alive" not in result.stdout
    first_batch = json.loads(received.read_text())["events"]
    admin.accept(first_batch)  # what admin-django recorded before the producer died
    assert [item["id"] for item in first_batch] == order[:4]

    restarted = make_dispatcher(engine, batch_size=4)
    assert pending(restarted) == 9
    drain(restarted)  # on PostgreSQL, waits for the server to drop the dead session's locks
    assert sorted(admin.recorded) == sorted(ids)
    assert {item for item, count in admin.deliveries.items() if count > 1} == {
        item["id"] for item in first_batch
    }
    assert max(admin.deliveries.values()) == 2
    assert pending(restarted) == 0


# --- several dispatchers on PostgreSQL -------------------------------------------------------


@pytest.mark.postgres
def test_concurrent_dispatchers_share_the_work_on_postgres(
    pg_engine: Engine, postgres_url: str, admin: AdminAudit, make_dispatcher: MakeDispatcher
) -> None:
    ids = add_events(pg_engine, 600)
    # Each dispatcher's first batch waits at the barrier for the other's: both hold a claimed
    # batch at once, which works only if the second skips the rows the first has locked.
    barrier = threading.Barrier(2, timeout=PATIENCE)
    first_seen: dict[int, list[str]] = {}
    lock = threading.Lock()

    def meet_first(request: httpx.Request) -> None:
        thread = threading.get_ident()
        with lock:
            is_first = thread not in first_seen
            if is_first:
                first_seen[thread] = [e["id"] for e in json.loads(request.content)["events"]]
        if is_first:
            barrier.wait()

    admin.on_request = meet_first
    engines = [create_engine(postgres_url) for _ in range(2)]
    dispatchers = [make_dispatcher(each, batch_size=25) for each in engines]
    errors: list[BaseException] = []

    def work(dispatcher: OutboxDispatcher) -> None:
        try:
            drain(dispatcher)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(d,), daemon=True) for d in dispatchers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(PATIENCE * 2)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        for each in engines:
            each.dispose()
    assert errors == []
    assert len(first_seen) == 2
    first, second = first_seen.values()
    assert not set(first) & set(second)

    assert sorted(admin.recorded) == sorted(ids)  # every row delivered
    assert len(admin.sent_ids) == len(set(admin.sent_ids)) == 600  # none sent twice
    assert all(len(batch) <= 25 for batch in admin.batches)
    assert all(row.delivered_at is not None for row in rows_by_id(pg_engine).values())


# --- the run loop --------------------------------------------------------------------------


def test_run_stops_promptly(
    engine: Engine, make_dispatcher: MakeDispatcher, outbox_log: Records
) -> None:
    dispatcher = make_dispatcher(engine)
    looked = threading.Event()
    dispatch_once = dispatcher.dispatch_once

    def observed() -> BatchResult:
        result = dispatch_once()
        looked.set()
        return result

    dispatcher.dispatch_once = observed  # type: ignore[method-assign]
    # An hour of idling: the loop ends within the test only if ``stop`` interrupts it.
    with running(dispatcher, idle_seconds=3600) as (stop, thread):
        assert looked.wait(PATIENCE)
        stop.set()
        thread.join(PATIENCE)
        assert not thread.is_alive()
    assert outbox_log.messages() == ["outbox dispatcher started", "outbox dispatcher stopped"]


def test_run_does_not_start_when_already_stopped(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher
) -> None:
    add_events(engine, 3)
    stop = threading.Event()
    stop.set()
    make_dispatcher(engine).run(stop, idle_seconds=3600)
    assert admin.requests == []


def test_run_sends_full_batches_back_to_back(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher
) -> None:
    ids = add_events(engine, 250)
    dispatcher = make_dispatcher(engine, batch_size=100)
    # Were the loop to idle after a full batch, it would wait an hour before the next one.
    with running(dispatcher, idle_seconds=3600):
        admin.wait_for_recorded(250)
    assert [len(batch) for batch in admin.batches] == [100, 100, 50]
    assert sorted(admin.recorded) == sorted(ids)


def test_run_picks_up_new_rows_and_retries(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher, clock: Clock
) -> None:
    dispatcher = make_dispatcher(engine, batch_size=10)
    admin.fail_next("connect")
    with running(dispatcher, idle_seconds=0.01):
        ids = add_events(engine, 3)
        wait_until(lambda: bool(admin.requests))  # the failed attempt
        clock.advance(0.5)  # its backoff elapses
        admin.wait_for_recorded(3)
        more = add_events(engine, 2)
        admin.wait_for_recorded(5)
    assert sorted(admin.recorded) == sorted(ids + more)
    assert pending(dispatcher) == 0


def test_run_survives_a_transient_database_error(
    sqlite_path: Path, admin: AdminAudit, make_dispatcher: MakeDispatcher, outbox_log: Records
) -> None:
    # A short busy timeout: the locked database fails the dispatcher's query at once.
    engine = sqlite_engine(sqlite_path, connect_args={"timeout": 0.05})
    try:
        ids = add_events(engine, 5)
        dispatcher = make_dispatcher(engine)
        holder = sqlite3.connect(sqlite_path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")  # another writer holds the database
            with running(dispatcher, idle_seconds=0.01):
                failure = outbox_log.wait_for("outbox dispatch failed")
                assert admin.requests == []
                holder.execute("ROLLBACK")  # the database is available again
                admin.wait_for_recorded(5)
        finally:
            holder.close()
        assert failure.levelno == logging.ERROR
        assert failure.exc_info is not None
        assert "database is locked" in str(failure.exc_info[1])
        assert sorted(admin.recorded) == sorted(ids)
        assert pending(dispatcher) == 0
    finally:
        engine.dispose()


def test_run_survives_an_unexpected_error(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher, outbox_log: Records
) -> None:
    ids = add_events(engine, 2)
    dispatcher = make_dispatcher(engine)
    dispatch_once = dispatcher.dispatch_once
    calls = 0

    def flaky() -> BatchResult:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionResetError("server closed the connection unexpectedly")
        return dispatch_once()

    dispatcher.dispatch_once = flaky  # type: ignore[method-assign]
    with running(dispatcher, idle_seconds=0.01):
        admin.wait_for_recorded(2)
    assert outbox_log.messages().count("outbox dispatch failed") == 2
    assert sorted(admin.recorded) == sorted(ids)


# --- serve_dispatcher -------------------------------------------------------------------------


def test_serve_dispatcher_delivers_until_sigterm(
    sqlite_path: Path, admin: AdminAudit, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = sqlite_engine(sqlite_path)
    ids = add_events(seed, 7)
    seed.dispose()
    handlers: dict[int, Callable[[int, object], None]] = {}
    monkeypatch.setattr(
        signal, "signal", lambda signum, handler: handlers.__setitem__(signum, handler)
    )
    client = ServiceClient(client_config(), transport=httpx.MockTransport(admin))

    def terminate_once_delivered() -> None:
        admin.wait_for_recorded(7)
        handlers[signal.SIGTERM](signal.SIGTERM, None)

    terminator = threading.Thread(target=terminate_once_delivered, daemon=True)
    terminator.start()
    try:
        code = serve_dispatcher(
            producer=PRODUCER,
            database_url=f"sqlite+aiosqlite:///{sqlite_path}",  # the service's async URL
            table=TABLE,
            client=client,
            batch_size=5,
        )
    finally:
        terminator.join(PATIENCE)
    assert code == 0
    assert set(handlers) == {signal.SIGTERM, signal.SIGINT}
    assert [len(batch) for batch in admin.batches] == [5, 2]
    assert sorted(admin.recorded) == sorted(ids)
    with pytest.raises(RuntimeError):  # closed on the way out
        client.request("GET", "/")
    check = sqlite_engine(sqlite_path)
    try:
        assert all(row.delivered_at is not None for row in rows_by_id(check).values())
    finally:
        check.dispose()


# --- drain measurement (printed, not asserted) -------------------------------------------------


def test_drain_backlog_measurement(
    sqlite_path: Path,
    admin: AdminAudit,
    make_dispatcher: MakeDispatcher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = sqlite_engine(sqlite_path)
    try:
        ids = add_events(engine, 1000)
        dispatcher = make_dispatcher(engine, batch_size=100)
        started = time.perf_counter()
        batches = 0
        while not dispatcher.dispatch_once().idle:
            batches += 1
        elapsed = time.perf_counter() - started
        assert batches == 10
        assert pending(dispatcher) == 0
        assert sorted(admin.recorded) == sorted(ids)
    finally:
        engine.dispose()
    with capsys.disabled():
        print(
            f"\n[outbox drain] 1,000 rows, batch_size 100, SQLite file + MockTransport: "
            f"{elapsed * 1000:.0f} ms ({1000 / elapsed:,.0f} events/s, {batches} batches)"
        )


def test_update_of_delivered_rows_matches_the_batch_only(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher, clock: Clock
) -> None:
    """Rows added while a batch is in flight are not marked delivered with it."""
    add_events(engine, 3)
    dispatcher = make_dispatcher(engine, batch_size=10)
    late: list[str] = []

    def add_while_sending(_request: httpx.Request) -> None:
        if not late:
            with engine.begin() as connection:
                values = event_values(99)
                connection.execute(insert(TABLE).values(**values))
                late.append(str(values["id"]))

    admin.on_request = add_while_sending
    assert dispatcher.dispatch_once() == BatchResult(3, 0)
    assert rows_by_id(engine)[late[0]].delivered_at is None
    assert pending(dispatcher) == 1
    admin.on_request = None
    assert dispatcher.dispatch_once() == BatchResult(1, 0)
    assert all(row.delivered_at is not None for row in rows_by_id(engine).values())


# --- telemetry: delivery spans in the writer's trace, backlog, dispatcher metrics ---------------


def write_in_a_trace(engine: Engine, count: int, *, sampled: bool = True) -> tuple[Any, list[str]]:
    """``count`` events written inside a request's span (the producer's view): the span."""
    tracer = trace.get_tracer("tests")
    if sampled:
        with tracer.start_as_current_span("POST /api/orders") as span:
            rows = [event_values(index) for index in range(count)]
    else:
        remote = SpanContext(int(TRACE_ID, 16), 0x00F067AA0BA902B7, True, TraceFlags(0))
        with trace.use_span(NonRecordingSpan(remote)) as span:
            rows = [event_values(index) for index in range(count)]
    with engine.begin() as connection:
        connection.execute(insert(TABLE), rows)
    return span, [str(row["id"]) for row in rows]


def deliveries(spans: Any) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.name.startswith("audit.deliver")]


def test_delivery_spans_join_the_writer_s_trace(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher, spans: Any
) -> None:
    writer, traced = write_in_a_trace(engine, 2)
    untraced = add_events(engine, 1)
    spans.clear()
    assert make_dispatcher(engine).dispatch_once() == BatchResult(3, 0)

    context = writer.get_span_context()
    found = {span.attributes["audit.event_id"]: span for span in deliveries(spans)}
    assert set(found) == set(traced)
    for span in found.values():
        assert span.name == "audit.deliver user.created"
        assert span.kind is SpanKind.PRODUCER
        assert span.context.trace_id == context.trace_id
        assert span.parent is not None
        assert span.parent.span_id == context.span_id
        assert span.parent.is_remote
        assert span.attributes["audit.attempt"] == 1
        assert span.status.status_code is StatusCode.UNSET
    events = {event["id"]: event for event in admin.batches[0]}
    for event_id in traced:
        # admin-django records the event as a child of its delivery span.
        assert events[event_id]["span_id"] == format(found[event_id].context.span_id, "016x")
        assert events[event_id]["trace_id"] == format(context.trace_id, "032x")
    assert "span_id" not in events[untraced[0]]
    assert events[untraced[0]]["trace_id"] is None


def test_failed_delivery_spans_say_so_and_the_retry_is_a_new_attempt(
    engine: Engine,
    admin: AdminAudit,
    make_dispatcher: MakeDispatcher,
    clock: Clock,
    spans: Any,
) -> None:
    _, (event_id,) = write_in_a_trace(engine, 1)
    dispatcher = make_dispatcher(engine)
    admin.fail_next(503)
    spans.clear()
    assert dispatcher.dispatch_once() == BatchResult(0, 1)
    (failed,) = deliveries(spans)
    assert failed.status.status_code is StatusCode.ERROR
    assert "503" in (failed.status.description or "")
    clock.advance(60)
    spans.clear()
    assert dispatcher.dispatch_once() == BatchResult(1, 0)
    (delivered,) = deliveries(spans)
    assert delivered.attributes["audit.attempt"] == 2
    assert delivered.status.status_code is StatusCode.UNSET
    assert delivered.context.trace_id == failed.context.trace_id
    assert admin.recorded[event_id]["span_id"] == format(delivered.context.span_id, "016x")


def test_an_unsampled_trace_gets_no_delivery_span(
    engine: Engine, admin: AdminAudit, make_dispatcher: MakeDispatcher, spans: Any
) -> None:
    _, (event_id,) = write_in_a_trace(engine, 1, sampled=False)
    spans.clear()
    make_dispatcher(engine).dispatch_once()
    assert deliveries(spans) == []
    assert admin.recorded[event_id]["trace_id"] == TRACE_ID  # the id still travels
    assert "span_id" not in admin.recorded[event_id]


def test_backlog_counts_and_ages(
    engine: Engine, make_dispatcher: MakeDispatcher, clock: Clock
) -> None:
    dispatcher = make_dispatcher(engine)
    assert dispatcher.backlog() == (0, 0.0)
    add_events(engine, 2)
    clock.advance(30)
    add_events(engine, 1)
    clock.advance(15)
    assert dispatcher.backlog() == (3, 45.0)
    drain(dispatcher)
    assert dispatcher.backlog() == (0, 0.0)


def test_dispatcher_metrics(
    engine: Engine,
    admin: AdminAudit,
    make_dispatcher: MakeDispatcher,
    clock: Clock,
    make_telemetry: Callable[..., Telemetry],
    samples: Any,
) -> None:
    telemetry = make_telemetry("dispatcher")
    service = {"service_name": telemetry.service}
    dispatcher = make_dispatcher(engine, telemetry=telemetry, batch_size=3)
    add_events(engine, 4)
    admin.fail_next(503)
    dispatcher.dispatch_once()  # 3 failed
    assert samples.value("polyframe_outbox_failed_total", **service) == 3
    clock.advance(120)
    drain(dispatcher)
    assert samples.value("polyframe_outbox_delivered_total", **service) == 4
    assert samples.value("polyframe_outbox_failed_total", **service) == 3


def test_dispatcher_reports_its_backlog_while_running(
    engine: Engine,
    admin: AdminAudit,
    make_dispatcher: MakeDispatcher,
    clock: Clock,
    make_telemetry: Callable[..., Telemetry],
    samples: Any,
) -> None:
    telemetry = make_telemetry("dispatcher")
    service = {"service_name": telemetry.service}
    written = clock.now
    add_events(engine, 2)
    clock.advance(90)
    admin.outage = 503  # nothing gets through: the backlog stays
    dispatcher = make_dispatcher(engine, telemetry=telemetry)
    with running(dispatcher, idle_seconds=0.01):
        wait_until(lambda: samples.value("polyframe_outbox_pending", **service) == 2)
    assert samples.value("polyframe_outbox_oldest_pending_age_seconds", **service) == 90
    assert samples.value("polyframe_outbox_oldest_pending_timestamp_seconds", **service) == (
        written.timestamp()
    )
    # Refused deliveries are failures, not loop errors: the rounds themselves completed.
    assert samples.value("polyframe_outbox_failed_total", **service) >= 2
    assert samples.value("polyframe_outbox_loop_errors_total", **service) == 0
    assert samples.value("polyframe_outbox_last_success_timestamp_seconds", **service) > 0


def test_dispatcher_without_telemetry_records_nothing(
    engine: Engine,
    make_dispatcher: MakeDispatcher,
    make_telemetry: Callable[..., Telemetry],
    samples: Any,
) -> None:
    telemetry = make_telemetry("dispatcher", enabled=False)
    add_events(engine, 2)
    drain(make_dispatcher(engine, telemetry=telemetry))
    assert samples.series("polyframe_outbox_delivered_total", service_name=telemetry.service) == []


# --- the loop observed from outside: heartbeat, loop errors, /livez ---------------------------


def test_the_stall_bound_comes_from_the_poll_and_the_call() -> None:
    # Three rounds of: the poll wait, SQLite's busy timeout for the round's write, and the call
    # (the settings' defaults: 2 attempts of 2 s, 1 s of backoff between them).
    defaults = client_config(max_attempts=2, timeout_seconds=2.0, backoff_max_seconds=1.0)
    assert default_stall_seconds(defaults) == 3 * (POLL_SECONDS + SQLITE_BUSY_SECONDS + 5.0)
    assert default_stall_seconds(defaults) == 61.5
    slow = client_config(max_attempts=3, timeout_seconds=20.0, backoff_max_seconds=1.0)
    assert default_stall_seconds(slow) == 3 * (POLL_SECONDS + SQLITE_BUSY_SECONDS + 62.0)
    # A dispatcher without a bound of its own takes its client's.
    service_client = ServiceClient(defaults)
    try:
        dispatcher = OutboxDispatcher(
            create_engine("sqlite://"), TABLE, service_client, producer=PRODUCER
        )
        assert dispatcher.liveness.bound == 61.5
    finally:
        service_client.close()
    with pytest.raises(ValueError, match="positive"):
        Liveness(0)


@contextmanager
def probes(dispatcher: OutboxDispatcher) -> Iterator[str]:
    """The dispatcher's ``/metrics`` and ``/livez`` served on a free port: its base URL."""
    server = serve_probes("127.0.0.1:0", dispatcher.liveness)
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def livez(base: str) -> int:
    return httpx.get(f"{base}/livez", timeout=PATIENCE).status_code


def scraped(base: str, name: str, **labels: str) -> float | None:
    """The sample ``name`` with ``labels`` on ``base``'s ``/metrics``, as Prometheus reads it."""
    response = httpx.get(f"{base}/metrics", timeout=PATIENCE)
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


def test_a_failing_round_counts_an_error_and_still_refreshes_the_oldest_pending(
    sqlite_path: Path,
    admin: AdminAudit,
    make_dispatcher: MakeDispatcher,
    clock: Clock,
    make_telemetry: Callable[..., Telemetry],
    samples: Any,
) -> None:
    telemetry = make_telemetry("dispatcher")
    service = {"service_name": telemetry.service}
    written = clock.now
    # A short busy timeout: the locked database fails the round's write at once.
    engine = sqlite_engine(sqlite_path, connect_args={"timeout": 0.05})
    holder = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        add_events(engine, 2)
        dispatcher = make_dispatcher(engine, telemetry=telemetry)
        # Another writer holds the write lock: reads go on, the batch cannot be marked, so
        # every round raises after admin-django accepted the batch (redelivery is harmless).
        holder.execute("BEGIN IMMEDIATE")
        with running(dispatcher, idle_seconds=0.01), probes(dispatcher) as base:
            wait_until(lambda: samples.value("polyframe_outbox_loop_errors_total", **service) >= 3)
            clock.advance(100)
            wait_until(
                lambda: (
                    samples.value("polyframe_outbox_oldest_pending_age_seconds", **service) == 100
                )
            )
            # Failing, but running: alive (a round just completed), counted, and no heartbeat.
            assert livez(base) == 200
            assert scraped(base, "polyframe_outbox_last_success_timestamp_seconds", **service) == 0
            assert (
                scraped(base, "polyframe_outbox_oldest_pending_timestamp_seconds", **service)
                == written.timestamp()
            )
            assert samples.value("polyframe_outbox_pending", **service) == 2
            assert admin.requests  # delivery itself went through each time
            holder.execute("ROLLBACK")  # the database takes writes again
            before = time.time()
            wait_until(
                lambda: (
                    samples.value("polyframe_outbox_last_success_timestamp_seconds", **service)
                    >= before
                )
            )
            wait_until(lambda: samples.value("polyframe_outbox_pending", **service) == 0)
        assert samples.value("polyframe_outbox_oldest_pending_timestamp_seconds", **service) == (
            math.inf
        )
        assert samples.value("polyframe_outbox_oldest_pending_age_seconds", **service) == 0
        assert sorted(admin.recorded) == sorted(rows_by_id(engine))
    finally:
        holder.close()
        engine.dispose()


class Hang:
    """Makes admin-django's answer hang (a call that never returns) until released."""

    def __init__(self, admin: AdminAudit) -> None:
        self.entered = threading.Event()
        self._release = threading.Event()
        admin.on_request = self

    def __call__(self, _request: httpx.Request) -> None:
        self.entered.set()
        assert self._release.wait(PATIENCE * 4), "the hung call was never released"

    def release(self) -> None:
        self._release.set()


def test_livez_fails_while_a_delivery_hangs_and_metrics_still_answer(
    sqlite_path: Path,
    admin: AdminAudit,
    make_telemetry: Callable[..., Telemetry],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole command: ``serve_dispatcher``'s port, its loop frozen in a call."""
    telemetry = make_telemetry("dispatcher")
    handlers: dict[int, Callable[[int, object], None]] = {}
    monkeypatch.setattr(
        signal, "signal", lambda signum, handler: handlers.__setitem__(signum, handler)
    )
    with socket.socket() as probe:  # a port free now (serve_dispatcher binds it itself)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    client = ServiceClient(client_config(), transport=httpx.MockTransport(admin))
    outcome: list[int] = []
    serving = threading.Thread(
        target=lambda: outcome.append(
            serve_dispatcher(
                producer=PRODUCER,
                database_url=f"sqlite:///{sqlite_path}",
                table=TABLE,
                client=client,
                telemetry=telemetry,
                metrics_bind=f"127.0.0.1:{port}",
                stall_seconds=1.0,
            )
        ),
        daemon=True,
    )
    serving.start()
    hang = Hang(admin)
    try:

        def answers(status: int) -> bool:
            try:
                return livez(base) == status
            except httpx.TransportError:  # not listening yet
                return False

        wait_until(lambda: answers(200))
        service = {"service_name": telemetry.service}
        heartbeat = "polyframe_outbox_last_success_timestamp_seconds"
        wait_until(lambda: bool(scraped(base, heartbeat, **service)))
        seed = sqlite_engine(sqlite_path)
        add_events(seed, 1)
        seed.dispose()
        assert hang.entered.wait(PATIENCE)
        hung_at = time.time()
        wait_until(lambda: answers(503))
        body = httpx.get(f"{base}/livez", timeout=PATIENCE).json()
        assert body["status"] == "stalled"
        assert body["stall_seconds"] == 1.0
        assert body["since_last_round_seconds"] > 1.0
        # The scrape still answers: up stays 1, and only the heartbeat tells the loop is stuck.
        last_success = scraped(base, heartbeat, **service)
        assert last_success is not None
        assert 0 < last_success < hung_at
        hang.release()
        wait_until(lambda: answers(200))
        admin.wait_for_recorded(1)
    finally:
        hang.release()
        if signal.SIGTERM in handlers:
            handlers[signal.SIGTERM](signal.SIGTERM, None)
        serving.join(PATIENCE)
    assert outcome == [0]
    with pytest.raises(httpx.TransportError):  # the probe server stopped with the dispatcher
        httpx.get(f"{base}/livez", timeout=PATIENCE)


@pytest.mark.postgres
def test_livez_fails_while_a_table_lock_holds_the_loop_on_postgres(
    pg_engine: Engine,
    admin: AdminAudit,
    make_dispatcher: MakeDispatcher,
    make_telemetry: Callable[..., Telemetry],
    samples: Any,
) -> None:
    """A real freeze: another session's lock, which PostgreSQL waits for without a timeout."""
    telemetry = make_telemetry("dispatcher")
    service = {"service_name": telemetry.service}
    dispatcher = make_dispatcher(pg_engine, telemetry=telemetry, stall_seconds=1.0)
    with running(dispatcher, idle_seconds=0.01), probes(dispatcher) as base:
        wait_until(lambda: livez(base) == 200)
        with pg_engine.connect() as holder:
            holder.exec_driver_sql("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
            wait_until(lambda: livez(base) == 503)
            # No round for longer than the bound, so no heartbeat either (it precedes the beat).
            heartbeat = scraped(base, "polyframe_outbox_last_success_timestamp_seconds", **service)
            assert heartbeat is not None
            assert 0 < heartbeat < time.time() - dispatcher.liveness.bound
            locked_until = time.time()
            errors = samples.value("polyframe_outbox_loop_errors_total", **service)
            holder.rollback()  # the lock goes with the transaction
        wait_until(lambda: livez(base) == 200)
        wait_until(
            lambda: (
                samples.value("polyframe_outbox_last_success_timestamp_seconds", **service)
                > locked_until
            )
        )
    # Stuck is not failing: the waiting rounds raised nothing.
    assert samples.value("polyframe_outbox_loop_errors_total", **service) == errors == 0
