"""``/api/audit/events``: producers post batches (POST), staff and services read (GET)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from opentelemetry.trace import SpanKind
from pydantic import (
    BaseModel,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)

from admin_django.audit import selectors, services
from admin_django.audit.models import ActorType, AuditEvent
from admin_django.conf import AdminSettings
from admin_django.support import roles
from service_kit.credentials import ServiceCaller, authenticate_service, is_basic
from service_kit.django import json_body, json_response, validation_error
from service_kit.inputs import DateTimeText, JsonObject, StrictInput
from service_kit.pagination import DEFAULT_PAGE_SIZE, MAX_CURSOR_LENGTH, MAX_PAGE_SIZE
from service_kit.problems import forbidden, invalid_field, unauthenticated
from service_kit.tracecontext import start_span_in

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


def _config() -> AdminSettings:
    from django.conf import settings

    config: AdminSettings = settings.CONFIG
    return config


def _service_caller(request: HttpRequest) -> ServiceCaller:
    return authenticate_service(
        request.headers.get("Authorization"),
        request.headers.get("X-Acting-For"),
        trusted=_config().trusted_services,
        may_act=frozenset({"admin-django"}),
    )


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


@method_decorator(
    csrf_exempt, name="dispatch"
)  # services authenticate with credentials, not cookies
class AuditEventsApi(View):
    http_method_names = ["get", "post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        """Ingest a batch from a producer service; idempotent by event id."""
        caller = _service_caller(request)
        if caller.name not in _config().audit_producers:
            raise forbidden(f"Service {caller.name!r} may not write audit events")
        batch = json_body(request, EventBatch)
        if len(batch.events) > _config().audit_max_batch:
            raise invalid_field("events", f"At most {_config().audit_max_batch} events per batch")
        for index, event in enumerate(batch.events):
            if event.service != caller.name:
                raise invalid_field(
                    f"events.{index}.service", f"Must be the sending service ({caller.name})"
                )
        spans = [
            start_span_in(
                event.trace_id,
                event.span_id,
                f"audit.record {event.action}",
                kind=SpanKind.CONSUMER,
                attributes={"audit.event_id": str(event.id), "audit.service": event.service},
            )
            for event in batch.events
            if event.trace_id and event.span_id
        ]
        try:
            result = self._record(batch)
        finally:
            for span in spans:
                span.end()
        answer = BatchRecorded(recorded=result.recorded, duplicates=result.duplicates)
        return json_response(answer.model_dump(mode="json"), status=201 if result.recorded else 200)

    @staticmethod
    def _record(batch: EventBatch) -> services.IngestResult:
        return services.audit_event_record_many(
            events=[
                {
                    "event_id": event.id,
                    "occurred_at": event.occurred_at,
                    "service": event.service,
                    "actor_type": event.actor.type,
                    "actor_id": event.actor.id,
                    "acting_for": event.actor.acting_for or "",
                    "action": event.action,
                    "subject_type": event.subject.type,
                    "subject_id": event.subject.id,
                    "trace_id": event.trace_id or "",
                    "payload": event.payload,
                }
                for event in batch.events
            ]
        )

    def get(self, request: HttpRequest) -> HttpResponse:
        """Filter the trail (staff by session, or any trusted service), cursor-paginated."""
        if is_basic(request.headers.get("Authorization")):
            _service_caller(request)
        elif not request.user.is_authenticated:
            # The one HTTP authentication scheme this route accepts is a service's Basic.
            raise unauthenticated("Log in as staff, or send a service credential", scheme="Basic")
        elif not roles.can_view(request.user):
            # The console's rule: staff outside both support groups see nothing there either.
            raise forbidden("Only support staff (read-only or acting) may read the audit trail")
        try:
            query = EventListQuery.model_validate(dict(request.GET.items()))
        except ValidationError as exc:
            raise validation_error(exc, location="query") from None
        events = selectors.audit_event_list(
            subject_type=query.subject_type,
            subject_id=query.subject_id,
            actor_id=query.actor,
            action=query.action,
            service=query.service,
            trace_id=query.trace_id,
            occurred_after=query.after,
            occurred_before=query.before,
        )
        page, next_cursor = selectors.audit_event_page(
            events, limit=query.limit, cursor=query.cursor
        )
        answer = EventPage(items=[event_public(e) for e in page], next_cursor=next_cursor)
        return json_response(answer.model_dump(mode="json"))
