"""gunicorn settings of the orders service: ``gunicorn -c python:legacy_flask.gunicorn_conf``.

``gthread`` (the kit's instrumented one), ``ORDERS_WORKERS`` x ``ORDERS_THREADS`` (8); why 8,
measured: docs/benchmarks.md ("Thread counts of the gunicorn services", "Server settings").
"""

from __future__ import annotations

from service_kit.gunicorn import settings

globals().update(
    settings(
        prefix="ORDERS",
        service="legacy-flask",
        framework="flask",
        wsgi_app="legacy_flask.app:create_app()",
        default_port=8102,
        default_threads=8,
        # Imported by the master before it forks: Flask, SQLAlchemy, pydantic and the app's
        # modules are loaded once and shared copy-on-write (docs/benchmarks.md, "Cold start
        # and memory"); the app itself is made in each worker.
        import_before_fork=("legacy_flask.app",),
    )
)
