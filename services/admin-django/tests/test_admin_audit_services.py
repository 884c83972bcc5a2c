"""Writes to the audit trail: ``audit_event_record_many`` (idempotent), ``audit_event_record``."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections

from admin_django.audit.models import AuditEvent
from admin_django.audit.services import (
    IngestResult,
    audit_batch_check,
    audit_event_record,
    audit_event_record_many,
    audit_producer_check,
)
from service_kit.problems import FORBIDDEN, VALIDATION, ProblemError
from service_kit.tracecontext import trace_id_var

pytestmark = pytest.mark.usefixtures("db")

Row = Callable[..., dict[str, Any]]


def test_record_many_stores_every_field(event_row: Row) -> None:
    row = event_row(
        actor_type="service",
        actor_id="admin-django",
        acting_for="sam",
        trace_id="ab" * 16,
        payload={"reason": "fraud", "amount": 12},
    )

    assert audit_event_record_many(events=[row]) == IngestResult(recorded=1, duplicates=0)

    stored = AuditEvent.objects.get()
    for name, value in row.items():
        assert getattr(stored, name) == value, name
    assert stored.recorded_at is not None


def test_redelivered_batch_records_nothing_new(event_row: Row) -> None:
    batch = [event_row() for _ in range(3)]
    assert audit_event_record_many(events=batch) == IngestResult(recorded=3, duplicates=0)

    assert audit_event_record_many(events=batch) == IngestResult(recorded=0, duplicates=3)
    assert AuditEvent.objects.count() == 3


def test_partly_redelivered_batch_records_only_the_new_events(event_row: Row) -> None:
    seen = [event_row(), event_row()]
    audit_event_record_many(events=seen)
    new = [event_row(), event_row(), event_row()]

    result = audit_event_record_many(events=[*seen, *new])

    assert result == IngestResult(recorded=3, duplicates=2)
    assert set(AuditEvent.objects.values_list("event_id", flat=True)) == {
        row["event_id"] for row in (*seen, *new)
    }


def test_an_event_repeated_within_one_batch_is_recorded_once(event_row: Row) -> None:
    row = event_row()

    result = audit_event_record_many(events=[row, dict(row), event_row()])

    assert result == IngestResult(recorded=2, duplicates=1)
    assert AuditEvent.objects.count() == 2


def test_a_redelivered_event_keeps_its_first_content(event_row: Row) -> None:
    row = event_row(action="user.registered")
    audit_event_record_many(events=[row])

    audit_event_record_many(events=[{**row, "action": "user.deleted"}])

    assert AuditEvent.objects.get().action == "user.registered"


def test_record_writes_admin_djangos_own_event_with_the_current_trace() -> None:
    token = trace_id_var.set("cd" * 16)
    try:
        event = audit_event_record(
            action="http.post",
            subject_type="route",
            subject_id="/admin/login/",
            actor_type="staff",
            actor_id="sam",
            payload={"status": 302},
        )
    finally:
        trace_id_var.reset(token)

    stored = AuditEvent.objects.get()
    assert stored == event
    assert stored.service == "admin-django"
    assert stored.trace_id == "cd" * 16
    assert stored.payload == {"status": 302}
    assert stored.occurred_at is not None
    assert stored.acting_for == ""


@pytest.mark.parametrize(
    "backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_concurrent_redeliveries_record_each_event_once(
    transactional_db: None, backend: str, event_row: Row
) -> None:
    """Producers redeliver after a timeout: the same batch may arrive on several workers at
    once. Each thread has its own connection; the unique event id decides."""
    assert connections["default"].vendor == "postgresql"
    batch = [event_row() for _ in range(20)]
    workers = 6
    start = threading.Barrier(workers, timeout=30)
    results: list[IngestResult] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def deliver() -> None:
        try:
            start.wait()
            result = audit_event_record_many(events=[dict(row) for row in batch])
            with lock:
                results.append(result)
        except BaseException as exc:
            with lock:
                failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver, name=f"deliver-{i}") for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not failures, failures
    assert len(results) == workers
    assert all(r.recorded + r.duplicates == len(batch) for r in results)
    per_id = Counter(AuditEvent.objects.values_list("event_id", flat=True))
    assert per_id == Counter({row["event_id"]: 1 for row in batch})


def test_event_ids_are_unique_in_the_database(event_row: Row) -> None:
    from django.db import IntegrityError, transaction

    event_id = uuid.uuid4()
    AuditEvent.objects.create(**event_row(event_id=event_id))

    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEvent.objects.create(**event_row(event_id=event_id))


# -- the producers' rules ----------------------------------------------------------------------


def test_only_the_configured_producers_may_write() -> None:
    from django.conf import settings

    for producer in settings.CONFIG.audit_producers:
        audit_producer_check(producer=producer)
    with pytest.raises(ProblemError) as caught:
        audit_producer_check(producer="admin-django")
    assert (caught.value.problem.status, caught.value.problem.type) == (403, FORBIDDEN)


def test_a_batch_holds_only_the_senders_events_up_to_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.conf import settings

    monkeypatch.setattr(settings.CONFIG, "audit_max_batch", 2)
    audit_batch_check(producer="legacy-flask", event_services=["legacy-flask"] * 2)

    for services, field in [
        (["legacy-flask"] * 3, "events"),
        (["legacy-flask", "users-fastapi"], "events.1.service"),
    ]:
        with pytest.raises(ProblemError) as caught:
            audit_batch_check(producer="legacy-flask", event_services=services)
        problem = caught.value.problem
        assert (problem.status, problem.type) == (422, VALIDATION)
        assert [error["field"] for error in problem.as_dict()["errors"]] == [field]
