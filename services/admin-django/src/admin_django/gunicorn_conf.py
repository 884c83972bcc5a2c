"""gunicorn settings of the admin service: ``gunicorn -c python:admin_django.gunicorn_conf``.

``gthread``: the support console's pages wait on the users and orders services,
so threads let one process serve other pages meanwhile. Low traffic (staff and
audit batches): 2 processes x 4 threads by default (``ADMIN_WORKERS``,
``ADMIN_THREADS``).
"""

from __future__ import annotations

import os

from service_kit.logs import gunicorn_logconfig

wsgi_app = "admin_django.wsgi:application"
bind = os.environ.get("ADMIN_BIND", "127.0.0.1:8103")
worker_class = "gthread"
workers = int(os.environ.get("ADMIN_WORKERS", "2"))
threads = int(os.environ.get("ADMIN_THREADS", "4"))
timeout = 30
graceful_timeout = 15
keepalive = 5
preload_app = False
accesslog = None
logconfig_dict = gunicorn_logconfig("admin-django", os.environ.get("ADMIN_LOG_LEVEL", "INFO"))
proc_name = "admin-django"
