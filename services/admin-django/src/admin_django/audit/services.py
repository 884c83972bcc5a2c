"""Writes to the audit trail (HackSoft style: typed, keyword-only, ``<entity>_<action>``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from admin_django.audit.models import AuditEvent
from service_kit.tracecontext import current_trace_id


@dataclass(frozen=True, slots=True)
class IngestResult:
    recorded: int
    duplicates: int


def audit_event_record_many(*, events: Iterable[Mapping[str, Any]]) -> IngestResult:
    """Record a batch idempotently: an event id seen before is skipped, not duplicated.

    The unique constraint on ``event_id`` is the guarantee (concurrent redeliveries
    included); ``ignore_conflicts`` turns a duplicate into a no-op instead of an error.
    """
    rows = [AuditEvent(**dict(event)) for event in events]
    # An id repeated within the batch is a duplicate too (its first occurrence is kept).
    unique: dict[uuid.UUID, AuditEvent] = {}
    for row in rows:
        unique.setdefault(row.event_id, row)
    with transaction.atomic():
        existing = set(
            AuditEvent.objects.filter(event_id__in=list(unique)).values_list("event_id", flat=True)
        )
        fresh = [row for row in unique.values() if row.event_id not in existing]
        AuditEvent.objects.bulk_create(fresh, ignore_conflicts=True, batch_size=500)
    return IngestResult(recorded=len(fresh), duplicates=len(rows) - len(fresh))


def audit_event_record(
    *,
    action: str,
    subject_type: str,
    subject_id: str,
    actor_type: str,
    actor_id: str,
    acting_for: str = "",
    payload: Mapping[str, Any] | None = None,
    occurred_at: datetime | None = None,
    event_id: uuid.UUID | None = None,
) -> AuditEvent:
    """Record one of admin-django's own changes (same database: no outbox needed)."""
    return AuditEvent.objects.create(
        event_id=event_id or uuid.uuid4(),
        occurred_at=occurred_at or timezone.now(),
        service="admin-django",
        actor_type=actor_type,
        actor_id=actor_id,
        acting_for=acting_for,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        trace_id=current_trace_id() or "",
        payload=dict(payload or {}),
    )
