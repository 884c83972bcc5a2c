"""Django floor (``polyframe_bench.floor.django_app:application``): persistent connections.

admin-django keeps its connections open between requests (``CONN_MAX_AGE`` 60, Django's
PostgreSQL backend over psycopg); so does its floor, reading with a raw cursor, no ORM.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.http import HttpRequest, HttpResponseBadRequest, JsonResponse
from django.urls import path

from polyframe_bench.bare import django_settings
from polyframe_bench.floor import AUDIT_SQL, audit_page, database_url, page_size


def audit_events(request: HttpRequest) -> JsonResponse | HttpResponseBadRequest:
    limit = page_size(request.GET.get("limit"))
    if limit is None:
        return HttpResponseBadRequest()
    with connection.cursor() as cursor:
        cursor.execute(AUDIT_SQL, (limit + 1,))
        rows = cursor.fetchall()
    return JsonResponse(audit_page(rows, limit))


def readyz(_request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


urlpatterns = [path("audit/events", audit_events), path("readyz", readyz)]

if not settings.configured:
    url = urlsplit(database_url())
    settings.configure(
        **django_settings(__name__),
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": unquote(url.path.lstrip("/")),
                "USER": unquote(url.username or ""),
                "PASSWORD": unquote(url.password or ""),
                "HOST": url.hostname or "",
                "PORT": str(url.port or ""),
                "CONN_MAX_AGE": 60,
            }
        },
        TIME_ZONE="UTC",
        # A failed request's traceback on stderr (the bench's log of the floor), as the
        # other floors' servers write theirs.
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"stderr": {"class": "logging.StreamHandler"}},
            "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}},
        },
    )
django.setup()
application = WSGIHandler()
