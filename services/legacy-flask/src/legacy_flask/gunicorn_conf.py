"""gunicorn settings of the orders service: ``gunicorn -c python:legacy_flask.gunicorn_conf``.

Worker model: ``gthread``. An order creation spends most of its time waiting
on the users service (HTTP) and the database, so a worker process holds
several threads that wait in parallel while the GIL is free. Defaults, for
the 2-core machines this platform is measured on: 2 processes (one per core)
times 8 threads = 16 requests in flight per instance. See the closing note of the
orders issue and ``make bench`` for the numbers behind them; set
``ORDERS_WORKERS`` / ``ORDERS_THREADS`` to change them.
"""

from __future__ import annotations

import os

from service_kit.logs import gunicorn_logconfig

wsgi_app = "legacy_flask.app:create_app()"
bind = os.environ.get("ORDERS_BIND", "127.0.0.1:8102")
worker_class = "gthread"
workers = int(os.environ.get("ORDERS_WORKERS", "2"))
threads = int(os.environ.get("ORDERS_THREADS", "8"))
# A request that takes longer than this is a bug or a hang: the worker is recycled.
timeout = 30
# On SIGTERM, in-flight requests get this long to finish (the chart's grace period is longer).
graceful_timeout = 15
keepalive = 5
# The app is imported in each worker after the fork (no preload): pools, clients and
# (later) telemetry exporters are created per process, never copied across a fork.
preload_app = False
accesslog = None
logconfig_dict = gunicorn_logconfig("legacy-flask", os.environ.get("ORDERS_LOG_LEVEL", "INFO"))
proc_name = "legacy-flask"
