"""Bare Django: one settings module and two views (``polyframe_bench.bare.django_app:application``).

Django's defaults for a JSON API: no database, no sessions, no templates; the
common and security middleware stay, as a real project keeps them.
"""

from __future__ import annotations

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, JsonResponse
from django.urls import path

from polyframe_bench.bare import HELLO, django_settings


def hello(_request: HttpRequest) -> JsonResponse:
    return JsonResponse(HELLO)


def readyz(_request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [path("hello", hello), path("readyz", readyz)]

if not settings.configured:
    settings.configure(**django_settings(__name__))
django.setup()
application = WSGIHandler()
