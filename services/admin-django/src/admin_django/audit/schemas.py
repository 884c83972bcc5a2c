"""Bodies of ``/api/audit/events``: what producers send, what readers get (pydantic models
the views validate and answer with, and the OpenAPI document describes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PlainSerializer, WithJsonSchema

from admin_django.audit.models import ActorType, AuditEvent
from service_kit.inputs import DateTimeText, JsonObject, StrictInput
from service_kit.pagination import DEFAULT_PAGE_SIZE, MAX_CURSOR_LENGTH, MAX_PAGE_SIZE

Name = Annotated[str, Field(min_length=1, max_length=150)]


class _Strict(StrictInput):
    """Unknown fields refused, and no NUL in any text (PostgreSQL stores none: 422, not 500)."""


class ActorIn(_Strict):
    type: Literal["user", "staff", "service"]
    id: Name
    acting_for: Name | None = None


class SubjectIn(_Strict):
    type: Annotated[str, Field(min_length=1, max_length=50)]
    id: Annotated[str, Field(min_length=1, max_length=100)]


class EventIn(_Strict):
    id: uuid.UUID
    occurred_at: DateTimeText
    service: Annotated[str, Field(min_length=1, max_length=50)]
    actor: ActorIn
    action: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.]{0,99}$")]
    subject: SubjectIn
    trace_id: Annotated[str | None, Field(pattern=r"^[0-9a-f]{32}$")] = None
    #: The producer's span that delivered it: recording it joins the same trace.
    span_id: Annotated[str | None, Field(pattern=r"^[0-9a-f]{16}$")] = None
    payload: JsonObject = Field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The event as :func:`~admin_django.audit.services.audit_event_record_many` takes it."""
        return {
            "event_id": self.id,
            "occurred_at": self.occurred_at,
            "service": self.service,
            "actor_type": self.actor.type,
            "actor_id": self.actor.id,
            "acting_for": self.actor.acting_for or "",
            "action": self.action,
            "subject_type": self.subject.type,
            "subject_id": self.subject.id,
            "trace_id": self.trace_id or "",
            "payload": self.payload,
        }


class EventBatch(_Strict):
    events: list[EventIn] = Field(min_length=1)


class EventListQuery(_Strict):
    subject_type: str | None = Field(default=None, max_length=50)
    subject_id: str | None = Field(default=None, max_length=100)
    actor: str | None = Field(default=None, max_length=150)
    action: str | None = Field(default=None, max_length=100)
    service: str | None = Field(default=None, max_length=50)
    trace_id: str | None = Field(default=None, max_length=32)
    after: DateTimeText | None = None
    before: DateTimeText | None = None
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = Field(default=None, max_length=MAX_CURSOR_LENGTH)


# -- answers: the views build them through these models, the OpenAPI document describes them ----

#: As the trail has always written times: ``datetime.isoformat()`` (``…+00:00``).
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda value: value.isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class ActorOut(BaseModel):
    type: ActorType
    id: str
    #: For a service actor: the staff member it acted for.
    acting_for: str | None


class SubjectOut(BaseModel):
    type: str
    id: str


class EventPublic(BaseModel):
    id: uuid.UUID
    occurred_at: Timestamp
    recorded_at: Timestamp
    service: str
    actor: ActorOut
    action: str
    subject: SubjectOut
    trace_id: str | None
    payload: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventPublic]
    #: Opaque cursor of the next page; null on the last page.
    next_cursor: str | None


class BatchRecorded(BaseModel):
    #: Events new to the trail (201 if any, else 200: the whole batch was seen before).
    recorded: int
    #: Events already recorded (a redelivery), skipped.
    duplicates: int


def event_public(event: AuditEvent) -> EventPublic:
    return EventPublic(
        id=event.event_id,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
        service=event.service,
        actor=ActorOut(
            type=ActorType(event.actor_type),
            id=event.actor_id,
            acting_for=event.acting_for or None,
        ),
        action=event.action,
        subject=SubjectOut(type=event.subject_type, id=event.subject_id),
        trace_id=event.trace_id or None,
        payload=event.payload,
    )
