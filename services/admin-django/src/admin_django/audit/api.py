"""``/api/audit/events``: one API class per operation, ingest (producer services, POST) and
list (staff and services, GET), and the URL's view that offers both."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from admin_django.audit import selectors, services
from admin_django.audit.schemas import (
    BatchRecorded,
    EventBatch,
    EventListQuery,
    EventPage,
    event_public,
)
from admin_django.conf import AdminSettings
from admin_django.support import roles
from service_kit.credentials import ACTING_FOR_HEADER, authenticate_service, is_basic
from service_kit.django import json_body, json_response, validation_error
from service_kit.principal import Principal
from service_kit.problems import forbidden, unauthenticated
from service_kit.tracecontext import start_span_in


def _service_caller(request: HttpRequest) -> Principal:
    config: AdminSettings = settings.CONFIG
    return authenticate_service(
        request.headers.get("Authorization"),
        request.headers.get(ACTING_FOR_HEADER),
        trusted=config.trusted_services,
        may_act=frozenset({"admin-django"}),
    )


# Services authenticate with credentials, not cookies: no CSRF token to send.
@method_decorator(csrf_exempt, name="dispatch")
class AuditEventIngestApi(View):
    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        """Ingest a batch from a producer service; idempotent by event id."""
        producer = _service_caller(request).service
        assert producer is not None
        services.audit_producer_check(producer=producer)
        batch = json_body(request, EventBatch)
        services.audit_batch_check(
            producer=producer, event_services=[event.service for event in batch.events]
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
            result = services.audit_event_record_many(
                events=[event.row() for event in batch.events]
            )
        finally:
            for span in spans:
                span.end()
        answer = BatchRecorded(recorded=result.recorded, duplicates=result.duplicates)
        return json_response(answer.model_dump(mode="json"), status=201 if result.recorded else 200)


class AuditEventListApi(View):
    http_method_names = ["get"]

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


@method_decorator(csrf_exempt, name="dispatch")  # as the ingest API: its POST is that API's
class AuditEventsApi(AuditEventIngestApi, AuditEventListApi):
    """The URL ``/api/audit/events``: POST is :class:`AuditEventIngestApi`, GET is
    :class:`AuditEventListApi`; anything else is a 405 that lists both."""

    http_method_names = ["get", "post"]
