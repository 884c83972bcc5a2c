"""Bare Django: one settings module and two views (``polyframe_bench.bare.django_app:application``).

Django's defaults for a JSON API: no database, no sessions, no templates; the
common and security middleware stay, as a real project keeps them.
"""

from __future__ import annotations

import os

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, JsonResponse
from django.urls import path

from polyframe_bench.bare import HELLO


def hello(_request: HttpRequest) -> JsonResponse:
    return JsonResponse(HELLO)


def readyz(_request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [path("hello", hello), path("readyz", readyz)]

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.environ.get("BARE_DJANGO_SECRET_KEY", "bare-benchmark-app-not-a-secret"),
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "django.middleware.common.CommonMiddleware",
        ],
        USE_TZ=True,
    )
django.setup()
application = WSGIHandler()
