"""Fault drills (``ADMIN_DRILLS=true``, never in production): cause the failure on purpose.

What each causes: docs/architecture.md, "Runtime signals", "Fault drills".
"""

from __future__ import annotations

import time

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from admin_django.audit.models import AuditEvent
from service_kit.django import json_response
from service_kit.problems import invalid_field


@require_GET
def n_plus_one(request: HttpRequest) -> HttpResponse:
    raw = request.GET.get("n", "25")
    if not raw.isdigit() or not 1 <= int(raw) <= 500:
        raise invalid_field("n", "An integer from 1 to 500", location="query")
    n = int(raw)
    queries = 0
    # One query per id, the same SQL shape each time: what a list with a lazy relation does.
    for event_id in range(1, n + 1):
        AuditEvent.objects.filter(pk=event_id).exists()
        queries += 1
    return json_response({"queries": queries})


@require_GET
def slow(request: HttpRequest) -> HttpResponse:
    raw = request.GET.get("ms", "1000")
    # Up to two minutes: a request held over a minute is what PolyframeHungRequest is about.
    if not raw.isdigit() or not 1 <= int(raw) <= 120_000:
        raise invalid_field("ms", "An integer from 1 to 120000", location="query")
    time.sleep(int(raw) / 1000)
    return json_response({"slept_ms": int(raw)})
