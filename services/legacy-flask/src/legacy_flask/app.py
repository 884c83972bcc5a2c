"""The orders service application: ``create_app(settings)``.

Served by gunicorn (``gunicorn -c python:legacy_flask.gunicorn_conf``), which
calls the factory once per worker after the fork, so engines, connection
pools and clients are never shared across processes.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import redirect
from flask_openapi3.models.info import Info
from flask_openapi3.openapi import OpenAPI
from werkzeug.wrappers import Response

from legacy_flask import drills
from legacy_flask.db import MIGRATIONS
from legacy_flask.extensions import db, users
from legacy_flask.orders import bp as orders_bp
from legacy_flask.orders.views import PREFIX
from legacy_flask.settings import OrdersSettings, attach_settings
from service_kit import flask as kit
from service_kit import telemetry
from service_kit.health import SyncCheck
from service_kit.logs import configure_logging
from service_kit.migrations import require_heads, script_heads


def create_app(settings: OrdersSettings | None = None) -> OpenAPI:
    settings = settings or OrdersSettings()
    configure_logging(settings.service_name, settings.log_level)
    app = OpenAPI(
        __name__,
        info=Info(
            title="Polyframe orders",
            version="0.1.0",
            description="The legacy orders system: place, cancel and refund orders.",
        ),
        security_schemes={
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "service": {"type": "http", "scheme": "basic"},
        },
        # The problem+json error responses are declared on the orders blueprint: an app's
        # ``responses`` reach only routes added to the app itself, none of which is documented.
        doc_prefix=PREFIX,
        doc_url="/openapi.json",
        validation_error_status=422,
        validation_error_callback=kit.validation_error_response,
    )
    attach_settings(app, settings)
    kit.install(
        app,
        max_body_bytes=settings.max_body_bytes,
        telemetry=telemetry.for_service(settings, "flask"),
        limits=settings.input_limits,
    )
    db.init_app(app)
    users.init_app(app)
    app.register_api(orders_bp)
    if settings.drills:
        app.register_blueprint(drills.bp)

    @app.get(f"{PREFIX}/docs", doc_ui=False)
    def docs() -> Response:
        return redirect(f"{PREFIX}/swagger")

    heads = script_heads(MIGRATIONS)

    def readiness() -> Mapping[str, SyncCheck]:
        def database() -> str:
            with db.engine.connect() as connection:
                return require_heads(connection, heads)

        return {"database": database}

    kit.add_health_routes(app, settings.service_name, readiness)
    return app
