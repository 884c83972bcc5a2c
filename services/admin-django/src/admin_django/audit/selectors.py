"""Reads of the audit trail."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q, QuerySet

from admin_django.audit.models import AuditEvent
from service_kit.pagination import decode_cursor, encode_cursor


def audit_event_list(
    *,
    subject_type: str | None = None,
    subject_id: str | None = None,
    actor_id: str | None = None,
    action: str | None = None,
    service: str | None = None,
    trace_id: str | None = None,
    occurred_after: datetime | None = None,
    occurred_before: datetime | None = None,
) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.all()
    if subject_type:
        events = events.filter(subject_type=subject_type)
    if subject_id:
        events = events.filter(subject_id=subject_id)
    if actor_id:
        # The actor, or the staff member a service acted for.
        events = events.filter(Q(actor_id=actor_id) | Q(acting_for=actor_id))
    if action:
        events = events.filter(action=action)
    if service:
        events = events.filter(service=service)
    if trace_id:
        events = events.filter(trace_id=trace_id)
    if occurred_after:
        events = events.filter(occurred_at__gte=occurred_after)
    if occurred_before:
        events = events.filter(occurred_at__lt=occurred_before)
    return events


def audit_event_page(
    events: QuerySet[AuditEvent], *, limit: int, cursor: str | None
) -> tuple[list[AuditEvent], str | None]:
    """Keyset pagination over (occurred_at, event_id), like every list in the platform."""
    events = events.order_by("occurred_at", "event_id")
    if cursor:
        after_at, after_id = decode_cursor(cursor)
        events = events.filter(
            Q(occurred_at__gt=after_at) | Q(occurred_at=after_at, event_id__gt=after_id)
        )
    rows = list(events[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last.occurred_at, last.event_id)
