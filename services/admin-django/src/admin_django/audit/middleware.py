"""Every mutating request to admin-django is itself an audit event."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from admin_django.audit.services import audit_event_record
from service_kit.django import route_template

log = logging.getLogger("admin_django.audit")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Producers' batches are recorded as the events they carry, not as requests.
NOT_RECORDED = ("/api/audit/events",)


class AuditMutationsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method not in MUTATING or request.path in NOT_RECORDED:
            return self.get_response(request)
        # Who sent it: the staff member logged in when the request arrived (a logout ends
        # that), else the one it logged in, else nobody.
        before = _staff_name(request)
        response = self.get_response(request)
        actor = before or _staff_name(request)
        try:
            audit_event_record(
                action=f"http.{request.method.lower()}",
                subject_type="route",
                subject_id=route_template(request)[:100],
                actor_type="staff" if actor else "user",
                actor_id=actor or "anonymous",
                payload={"path": request.path[:300], "status": response.status_code},
            )
        except Exception:
            # Never turn a served request into an error; the failure is visible in the log.
            log.exception("could not record a mutating request")
        return response


def _staff_name(request: HttpRequest) -> str | None:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    name: str = user.get_username()
    return name
