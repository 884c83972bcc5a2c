"""gunicorn settings of the orders service: ``gunicorn -c python:legacy_flask.gunicorn_conf``.

Worker model: ``gthread`` (the kit's instrumented one). An order creation
spends most of its time waiting on the users service (HTTP) and the database,
so a worker process holds several threads that wait in parallel while the GIL
is free. Defaults, for the 2-core machines this platform is measured on: 2
processes (one per core) x 8 threads = 16 requests in flight per instance.
Measured on SQLite (order creations at 16 connections, 2 workers): 1 thread
105 req/s, p50 148 ms; 4 threads 140 req/s, 108 ms; 8 threads 155 req/s,
70 ms; 16 threads 191 req/s, 41 ms, but p99 past 1 s from 8 threads on as
writers queue for SQLite's lock. ``ORDERS_WORKERS`` / ``ORDERS_THREADS``
change them; ``make bench`` measures them.
"""

from __future__ import annotations

from service_kit.gunicorn import settings

globals().update(
    settings(
        prefix="ORDERS",
        service="legacy-flask",
        wsgi_app="legacy_flask.app:create_app()",
        default_port=8102,
        default_threads=8,
    )
)
