"""The dispatcher: delivers a producer's pending outbox rows to admin-django in batches.

At-least-once delivery (a row is marked after a 2xx), exactly-once recording (admin-django is
idempotent by event id); the design is in docs/architecture.md, "The outbox".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

from opentelemetry.trace import Span, SpanKind, StatusCode
from prometheus_client import Counter
from sqlalchemy import Engine, Table, func, select, update

from service_kit import metrics
from service_kit.client import ServiceClient, ServiceUnavailableError
from service_kit.outbox import schema
from service_kit.telemetry import Telemetry
from service_kit.tracecontext import start_span_in

log = logging.getLogger("service_kit.outbox")

AUDIT_EVENTS_PATH = "/api/audit/events"


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
        now = schema.utcnow()
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
                    update(table).where(table.c.id.in_(ids)).values(delivered_at=schema.utcnow())
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
                    next_attempt_at=schema.utcnow() + timedelta(seconds=delay),
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
        return int(count), max(0.0, (schema.utcnow() - oldest).total_seconds())

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
