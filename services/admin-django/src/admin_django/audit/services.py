"""Writes to the audit trail (HackSoft style: typed, keyword-only, ``<entity>_<action>``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from admin_django.audit.models import AuditEvent
from admin_django.conf import AdminSettings
from service_kit.problems import forbidden, invalid_field
from service_kit.tracecontext import current_trace_id


@dataclass(frozen=True, slots=True)
class IngestResult:
    recorded: int
    duplicates: int


def _config() -> AdminSettings:
    config: AdminSettings = settings.CONFIG
    return config


def audit_producer_check(*, producer: str) -> None:
    """Only the services configured as producers write to the trail (403 for any other)."""
    if producer not in _config().audit_producers:
        raise forbidden(f"Service {producer!r} may not write audit events")


def audit_batch_check(*, producer: str, event_services: Sequence[str]) -> None:
    """A batch holds at most ``audit_max_batch`` events, each from the sending service (422)."""
    limit = _config().audit_max_batch
    if len(event_services) > limit:
        raise invalid_field("events", f"At most {limit} events per batch")
    for index, service in enumerate(event_services):
        if service != producer:
            raise invalid_field(
                f"events.{index}.service", f"Must be the sending service ({producer})"
            )


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
