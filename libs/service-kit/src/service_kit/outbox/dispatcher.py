"""The dispatcher: delivers a producer's pending outbox rows to admin-django in batches.

At-least-once delivery (a row is marked after a 2xx), exactly-once recording (admin-django is
idempotent by event id); the design is in docs/architecture.md, "The outbox".

The loop is observed from outside two ways, because ``/metrics`` is served by a thread of its
own and answers whether or not the loop runs: its gauges (the oldest pending event's time, the
last successful round) are timestamps, whose age keeps growing when the loop stops refreshing
them; and :class:`Liveness` tells ``/livez`` when the loop last completed a round.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.trace import Span, SpanKind, StatusCode
from prometheus_client import Counter
from sqlalchemy import Engine, Table, func, select, update

from service_kit import metrics
from service_kit.client import ClientConfig, ServiceClient, ServiceUnavailableError
from service_kit.outbox import schema
from service_kit.sqla import SQLITE_BUSY_SECONDS
from service_kit.telemetry import Telemetry
from service_kit.tracecontext import start_span_in

log = logging.getLogger("service_kit.outbox")

AUDIT_EVENTS_PATH = "/api/audit/events"
#: Seconds the loop waits for new rows after a round that found less than a full batch.
POLL_SECONDS = 0.5


#: The longest a round legitimately waits for its database: SQLite's busy timeout for its one
#: write (WAL: reads do not wait); PostgreSQL's connect and pool waits are 5 s each.
DATABASE_WAIT_SECONDS = float(SQLITE_BUSY_SECONDS)


def stall_bound(*, poll_seconds: float, call_seconds: float) -> float:
    """Seconds without a completed round after which the loop counts as stuck.

    A round is at most one batch: the poll wait, the database's waits and one call to
    admin-django (``call_seconds``: every attempt's timeout and the client's backoffs between
    them). Failed rows wait for their backoff in the table, never in the loop, so the
    dispatcher's own backoff does not lengthen a round. Three such rounds.
    """
    return 3 * (poll_seconds + DATABASE_WAIT_SECONDS + call_seconds)


def default_stall_seconds(config: ClientConfig) -> float:
    """The stall bound of a dispatcher polling every :data:`POLL_SECONDS` through ``config``."""
    attempts = config.max_attempts
    call = attempts * config.timeout_seconds + (attempts - 1) * config.backoff_max_seconds
    return stall_bound(poll_seconds=POLL_SECONDS, call_seconds=call)


class Liveness:
    """When the loop last completed a round, successful or not (``/livez``).

    A loop that runs but fails is alive: it counts its errors and the alerts see them. A loop
    that completes no round within ``bound`` seconds is stuck (a statement waiting on a lock,
    a call that never returns): only a restart helps, so ``/livez`` fails.
    """

    def __init__(self, bound: float) -> None:
        if bound <= 0:
            raise ValueError(f"the stall bound must be positive, not {bound}")
        self.bound = bound
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def since_last_round(self) -> float:
        """Seconds since the last completed round (or since the loop started)."""
        return time.monotonic() - self._last

    @property
    def alive(self) -> bool:
        return self.since_last_round() <= self.bound


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
        stall_seconds: float | None = None,
    ) -> None:
        self.engine = engine
        self.table = table
        self.client = client
        self.producer = producer
        self.batch_size = batch_size
        self.max_backoff = max_backoff_seconds
        self.telemetry = telemetry if telemetry is not None and telemetry.enabled else None
        self.liveness = Liveness(stall_seconds or default_stall_seconds(client.config))
        if self.telemetry is not None:  # charted from 0, not from the first failure
            for counter in (
                metrics.OUTBOX_DELIVERED,
                metrics.OUTBOX_FAILED,
                metrics.OUTBOX_LOOP_ERRORS,
            ):
                counter.labels(*self.telemetry.labels)
            # 0 until the first successful round: a dispatcher that never succeeds is stale.
            metrics.OUTBOX_LAST_SUCCESS.labels(*self.telemetry.labels).set(0)

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

    def oldest_pending(self) -> tuple[int, datetime | None]:
        """Undelivered events and the creation time of the oldest (``None`` without any).

        A query of its own, outside any batch's transaction: it answers while deliveries fail.
        """
        with self.engine.connect() as connection:
            count, oldest = connection.execute(
                select(func.count(), func.min(self.table.c.occurred_at))
                .select_from(self.table)
                .where(self.table.c.delivered_at.is_(None))
            ).one()
        if oldest is not None and oldest.tzinfo is None:  # SQLite keeps naive UTC (UTCDateTime)
            oldest = oldest.replace(tzinfo=UTC)
        return int(count), oldest

    def backlog(self) -> tuple[int, float]:
        """Undelivered events, and the age in seconds of the oldest (0 without any)."""
        count, oldest = self.oldest_pending()
        if oldest is None:
            return count, 0.0
        return count, max(0.0, (schema.utcnow() - oldest).total_seconds())

    def _report_backlog(self) -> None:
        if self.telemetry is None:
            return
        count, oldest = self.oldest_pending()
        labels = self.telemetry.labels
        metrics.OUTBOX_PENDING.labels(*labels).set(count)
        if oldest is None:
            metrics.OUTBOX_OLDEST_PENDING_TIMESTAMP.labels(*labels).set(math.inf)
            metrics.OUTBOX_OLDEST_PENDING_AGE.labels(*labels).set(0)
            return
        metrics.OUTBOX_OLDEST_PENDING_TIMESTAMP.labels(*labels).set(oldest.timestamp())
        age = max(0.0, (schema.utcnow() - oldest).total_seconds())
        metrics.OUTBOX_OLDEST_PENDING_AGE.labels(*labels).set(age)

    def run(
        self,
        stop: threading.Event,
        *,
        idle_seconds: float = POLL_SECONDS,
        report_seconds: float = 5.0,
    ) -> None:
        """Deliver until ``stop`` is set; a full batch is followed at once by the next.

        Every round ends by refreshing the backlog gauges, whether or not it delivered; only
        back-to-back full batches (a backlog draining) refresh at most every
        ``report_seconds``, sparing the count of a large backlog after each batch.
        """
        log.info("outbox dispatcher started", extra={"producer": self.producer})
        self.liveness.beat()
        reported = 0.0
        while not stop.is_set():
            failed = False
            try:
                result = self.dispatch_once()
            except Exception:
                # The producer's database may be briefly unavailable: keep going.
                log.exception("outbox dispatch failed")
                result = BatchResult(0, 1)
                failed = True
            busy = result.delivered >= self.batch_size
            if not busy or time.monotonic() - reported >= report_seconds:
                try:
                    self._report_backlog()
                    reported = time.monotonic()
                except Exception:
                    log.exception("outbox backlog query failed")
                    failed = True
            self._finish_round(failed=failed)
            if not busy:
                stop.wait(idle_seconds)
        log.info("outbox dispatcher stopped", extra={"producer": self.producer})

    def _finish_round(self, *, failed: bool) -> None:
        """A round completed: a heartbeat if nothing in it raised; the loop is alive.

        The heartbeat first, so it is never later than the liveness beat.
        """
        if self.telemetry is not None:
            if failed:
                metrics.OUTBOX_LOOP_ERRORS.labels(*self.telemetry.labels).inc()
            else:
                metrics.OUTBOX_LAST_SUCCESS.labels(*self.telemetry.labels).set(time.time())
        self.liveness.beat()
