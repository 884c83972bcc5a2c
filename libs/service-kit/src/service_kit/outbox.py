"""The transactional outbox: audit events that cannot be lost.

A producer (users-fastapi, legacy-flask) writes an outbox row in the same
database transaction as the change it describes, so the event exists if and
only if the change does. A dispatcher — its own process, one per producer —
delivers pending rows to admin-django in batches and marks them delivered
after a 2xx. admin-django records events idempotently by event id, so
at-least-once delivery becomes exactly-once recording: a batch resent after
a crash, a timeout or a restart is recorded once.

Why a separate process and not a thread in the web server: the servers run
several workers (uvicorn ``--workers``, gunicorn processes), which would each
run a dispatcher; a process of its own is one dispatcher per producer, restarts
on its own, and becomes its own Deployment in Kubernetes. Several dispatchers
are still safe on PostgreSQL: rows are claimed with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.trace import Span, SpanKind, StatusCode
from prometheus_client import Counter, start_http_server
from sqlalchemy import (
    JSON,
    Engine,
    Integer,
    String,
    Table,
    Text,
    Uuid,
    create_engine,
    func,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Mapped, mapped_column

from service_kit import metrics
from service_kit.client import ClientConfig, ServiceClient, ServiceUnavailableError
from service_kit.logs import configure_logging
from service_kit.settings import ProducerSettings
from service_kit.sqla import UTCDateTime, engine_options, prepare
from service_kit.telemetry import Telemetry, flush, setup
from service_kit.tracecontext import current_trace_id, sampled_span_id, start_span_in

log = logging.getLogger("service_kit.outbox")

AUDIT_EVENTS_PATH = "/api/audit/events"


def utcnow() -> datetime:
    return datetime.now(UTC)


class OutboxMixin:
    """Columns of a producer's ``outbox`` table; the producer declares the class.

    Its migration adds an index on ``(delivered_at, next_attempt_at)`` for the dispatcher.
    """

    #: The event id, chosen here by the producer; admin-django is idempotent on it.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    action: Mapped[str] = mapped_column(String(100))
    subject_type: Mapped[str] = mapped_column(String(50))
    subject_id: Mapped[str] = mapped_column(String(100))
    #: ``user``, ``staff`` or ``service``.
    actor_type: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str] = mapped_column(String(150))
    #: For a service actor: the staff member it acted for.
    acting_for: Mapped[str | None] = mapped_column(String(150), default=None)
    trace_id: Mapped[str | None] = mapped_column(String(32), default=None)
    #: The span that wrote the event: its delivery and recording join that trace.
    span_id: Mapped[str | None] = mapped_column(String(16), default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)


@dataclass(frozen=True, slots=True)
class Actor:
    type: str
    id: str
    acting_for: str | None = None


def outbox_values(
    *,
    action: str,
    subject_type: str,
    subject_id: str,
    actor: Actor,
    payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Column values of one event; the trace id is the current request's."""
    return {
        "id": uuid.uuid4(),
        "occurred_at": utcnow(),
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "acting_for": actor.acting_for,
        "trace_id": current_trace_id(),
        "span_id": sampled_span_id(),
        "payload": dict(payload or {}),
        "attempts": 0,
        "next_attempt_at": utcnow(),
    }


def sync_database_url(url: str) -> str:
    """The blocking-driver twin of an async URL (the dispatcher is synchronous)."""
    parsed = make_url(url)
    drivers = {"sqlite+aiosqlite": "sqlite", "postgresql+asyncpg": "postgresql+psycopg"}
    name = drivers.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=name).render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class BatchResult:
    delivered: int
    failed: int

    @property
    def idle(self) -> bool:
        return self.delivered == 0 and self.failed == 0


class OutboxDispatcher:
    """Delivers pending rows of one producer's outbox table to admin-django."""

    def __init__(
        self,
        engine: Engine,
        table: Table,
        client: ServiceClient,
        *,
        producer: str,
        batch_size: int = 100,
        max_backoff_seconds: float = 60,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.engine = engine
        self.table = table
        self.client = client
        self.producer = producer
        self.batch_size = batch_size
        self.max_backoff = max_backoff_seconds
        self.telemetry = telemetry if telemetry is not None and telemetry.enabled else None
        if self.telemetry is not None:  # charted from 0, not from the first failure
            for counter in (metrics.OUTBOX_DELIVERED, metrics.OUTBOX_FAILED):
                counter.labels(*self.telemetry.labels)

    def _event(self, row: Any) -> dict[str, Any]:
        return {
            "id": str(row.id),
            "occurred_at": row.occurred_at.isoformat(),
            "service": self.producer,
            "actor": {"type": row.actor_type, "id": row.actor_id, "acting_for": row.acting_for},
            "action": row.action,
            "subject": {"type": row.subject_type, "id": row.subject_id},
            "trace_id": row.trace_id,
            "payload": row.payload,
        }

    def dispatch_once(self) -> BatchResult:
        """Claim one batch of due rows, send it, and record the outcome."""
        table = self.table
        now = utcnow()
        with self.engine.begin() as connection:
            rows = connection.execute(
                select(table)
                .where(table.c.delivered_at.is_(None), table.c.next_attempt_at <= now)
                .order_by(table.c.occurred_at, table.c.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return BatchResult(0, 0)
            ids = [row.id for row in rows]
            events = [self._event(row) for row in rows]
            spans = self._delivery_spans(rows, events)
            error: str | None = "the dispatcher failed while sending"
            try:
                error = self._send(events)
            finally:
                for span in spans:
                    if error is not None:
                        span.set_status(StatusCode.ERROR, error[:200])
                    span.end()
            self._count(metrics.OUTBOX_FAILED if error else metrics.OUTBOX_DELIVERED, len(ids))
            if error is None:
                connection.execute(
                    update(table).where(table.c.id.in_(ids)).values(delivered_at=utcnow())
                )
                log.info("audit events delivered", extra={"count": len(ids)})
                return BatchResult(len(ids), 0)
            attempts = max(row.attempts for row in rows) + 1
            # The exponent is bounded: 2 ** 1024 no longer fits a float (an outage of a day).
            delay = min(self.max_backoff, 0.5 * 2 ** min(attempts - 1, 62))
            connection.execute(
                update(table)
                .where(table.c.id.in_(ids))
                .values(
                    attempts=table.c.attempts + 1,
                    next_attempt_at=utcnow() + timedelta(seconds=delay),
                    last_error=error[:1000],
                )
            )
            log.warning(
                "audit delivery failed; will retry",
                extra={"count": len(ids), "retry_in_s": delay, "reason": error[:200]},
            )
            return BatchResult(0, len(ids))

    def _delivery_spans(self, rows: Sequence[Any], events: list[dict[str, Any]]) -> list[Span]:
        """One span per event, in the trace of the request that wrote it.

        Each event carries its span's id, so admin-django records it as a child: the
        request that changed something and the recording of that change are one trace.
        """
        spans: list[Span] = []
        for row, event in zip(rows, events, strict=True):
            if not (row.trace_id and row.span_id):
                continue
            span = start_span_in(
                row.trace_id,
                row.span_id,
                f"audit.deliver {row.action}",
                kind=SpanKind.PRODUCER,
                attributes={"audit.event_id": str(row.id), "audit.attempt": row.attempts + 1},
            )
            context = span.get_span_context()
            if context.is_valid:
                event["span_id"] = format(context.span_id, "016x")
            spans.append(span)
        return spans

    def _count(self, counter: Counter, count: int) -> None:
        if self.telemetry is not None:
            counter.labels(*self.telemetry.labels).inc(count)

    def _send(self, events: list[dict[str, Any]]) -> str | None:
        """``None`` on success, else why it failed."""
        try:
            response = self.client.request(
                "POST",
                AUDIT_EVENTS_PATH,
                json={"events": events},
                # The batch is safe to resend (ingestion is idempotent by event id).
                headers={"Idempotency-Key": str(events[0]["id"])},
            )
        except ServiceUnavailableError as exc:
            return f"admin-django unavailable: {exc.reason}"
        if 200 <= response.status_code < 300:
            return None
        return f"admin-django answered HTTP {response.status_code}: {response.text[:300]}"

    def pending(self) -> int:
        with self.engine.connect() as connection:
            count = connection.execute(
                select(func.count())
                .select_from(self.table)
                .where(self.table.c.delivered_at.is_(None))
            ).scalar_one()
        return int(count)

    def backlog(self) -> tuple[int, float]:
        """Undelivered events, and the age in seconds of the oldest (0 without any)."""
        with self.engine.connect() as connection:
            count, oldest = connection.execute(
                select(func.count(), func.min(self.table.c.occurred_at))
                .select_from(self.table)
                .where(self.table.c.delivered_at.is_(None))
            ).one()
        if oldest is None:
            return int(count), 0.0
        if oldest.tzinfo is None:  # SQLite keeps naive UTC (see UTCDateTime)
            oldest = oldest.replace(tzinfo=UTC)
        return int(count), max(0.0, (utcnow() - oldest).total_seconds())

    def _report_backlog(self) -> None:
        if self.telemetry is None:
            return
        count, age = self.backlog()
        metrics.OUTBOX_PENDING.labels(*self.telemetry.labels).set(count)
        metrics.OUTBOX_OLDEST_PENDING_AGE.labels(*self.telemetry.labels).set(age)

    def run(
        self, stop: threading.Event, *, idle_seconds: float = 0.5, report_seconds: float = 5.0
    ) -> None:
        """Deliver until ``stop`` is set; a full batch is followed at once by the next."""
        log.info("outbox dispatcher started", extra={"producer": self.producer})
        reported = 0.0
        while not stop.is_set():
            try:
                result = self.dispatch_once()
                if time.monotonic() - reported >= report_seconds:
                    self._report_backlog()
                    reported = time.monotonic()
            except Exception:
                # The producer's database may be briefly unavailable: keep going.
                log.exception("outbox dispatch failed")
                result = BatchResult(0, 1)
            if result.delivered < self.batch_size:
                stop.wait(idle_seconds)
        log.info("outbox dispatcher stopped", extra={"producer": self.producer})


def serve_dispatcher(
    *,
    producer: str,
    database_url: str,
    table: Table,
    client: ServiceClient,
    batch_size: int = 100,
    telemetry: Telemetry | None = None,
    metrics_bind: str | None = None,
) -> int:
    """Entry point of a producer's ``dispatch-outbox`` command: runs until SIGTERM/SIGINT.

    ``metrics_bind`` (``host:port``) serves this process's ``/metrics`` for Prometheus:
    the backlog, deliveries and the calls to admin-django.
    """
    import signal

    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    url, options = engine_options(sync_database_url(database_url), pool_size=1)
    engine = create_engine(url, **options)
    prepare(engine)
    if metrics_bind:
        host, _, port = metrics_bind.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1", registry=metrics.REGISTRY)
    dispatcher = OutboxDispatcher(
        engine, table, client, producer=producer, batch_size=batch_size, telemetry=telemetry
    )
    try:
        dispatcher.run(stop)
    finally:
        client.close()
        engine.dispose()
        flush()
    return 0


def dispatch_command(settings: ProducerSettings, table: Table) -> int:
    """A producer's ``dispatch-outbox`` command, from its settings: runs until SIGTERM."""
    configure_logging(settings.service_name, settings.log_level)
    instruments = setup(settings.service_name, "dispatcher", enabled=settings.instrumentation)
    return serve_dispatcher(
        producer=settings.service_name,
        database_url=settings.database_url,
        table=table,
        client=ServiceClient(
            ClientConfig.for_service(settings, "admin-django", settings.admin_url),
            telemetry=instruments,
        ),
        telemetry=instruments,
        metrics_bind=settings.outbox_metrics_bind,
    )
