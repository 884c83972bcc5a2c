"""gunicorn settings of the admin service: ``gunicorn -c python:admin_django.gunicorn_conf``.

``gthread`` (the kit's instrumented one): the support console's pages wait on
the users and orders services, so threads let one process serve other pages
meanwhile. Low traffic (staff and audit batches): 2 processes x 4 threads by
default (``ADMIN_WORKERS``, ``ADMIN_THREADS``).
"""

from __future__ import annotations

from service_kit.gunicorn import settings

globals().update(
    settings(
        prefix="ADMIN",
        service="admin-django",
        framework="django",
        wsgi_app="admin_django.wsgi:application",
        default_port=8103,
        default_threads=4,
    )
)
