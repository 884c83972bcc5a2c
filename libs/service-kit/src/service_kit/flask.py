"""Flask/WSGI adapter: request context, problem+json errors, health routes.

Like the FastAPI adapter it only translates Flask's and Werkzeug's habits
(HTML error pages, ``BadRequest`` for broken JSON, 413 from
``MAX_CONTENT_LENGTH``) into the kit's conventions.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, current_app, g, request
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from service_kit import exposition, health
from service_kit.cycle import (
    BODY_METHODS,
    RequestCycle,
    openapi_route,
    problem_for,
    sqlalchemy_unavailable,
    too_large_read,
)
from service_kit.metrics import UNMATCHED_ROUTE
from service_kit.problems import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    field_errors,
    framework_error,
    malformed_body,
    validation_problem,
)
from service_kit.telemetry import Telemetry
from service_kit.tracing import UNTRACED_URLS, tracer_provider


def route_template() -> str:
    """The matched rule in the OpenAPI style every service uses: ``/api/orders/{order_id}``."""
    rule = request.url_rule
    if rule is None:
        return UNMATCHED_ROUTE
    return openapi_route(rule.rule)


def problem_response(problem: Problem) -> Response:
    if problem.instance is None:
        problem.instance = request.path
    response = Response(
        json.dumps(problem.as_dict()), status=problem.status, content_type=PROBLEM_CONTENT_TYPE
    )
    for name, value in problem.headers.items():
        response.headers[name] = value
    return response


def _location_of(model_title: str) -> str:
    """flask-openapi3 validates each part with its own model; our models' names say which part."""
    for suffix, location in (("Query", "query"), ("Path", "path"), ("Headers", "header")):
        if model_title.endswith(suffix):
            return location
    return "body"


def validation_error_response(exc: ValidationError) -> Response:
    """flask-openapi3 ``validation_error_callback``: pydantic errors as a 422 problem."""
    errors = field_errors(exc.errors(include_url=False), _location_of(exc.title))
    return problem_response(validation_problem(errors))


def _telemetry() -> Telemetry | None:
    telemetry: Telemetry | None = current_app.extensions.get("polyframe.telemetry")
    return telemetry


def _before_request() -> Response | None:
    cycle = RequestCycle(_telemetry(), request.method, request.path, request.headers.get)
    g.kit_cycle = cycle
    streamed = _streamed()
    has_body = bool(request.content_length or streamed)
    refusal = cycle.refusal(has_body=has_body, content_type=request.mimetype)
    if refusal is not None:
        return problem_response(refusal)
    if request.method in BODY_METHODS and has_body:
        if streamed:
            _buffer_streamed_body()
        try:
            json.loads(request.get_data(cache=True))
        except ValueError:
            return problem_response(malformed_body())
    return None


def _streamed() -> bool:
    """A body sent in chunks, without a Content-Length."""
    return request.content_length is None and "chunked" in (
        request.headers.get("Transfer-Encoding", "").lower()
    )


def _buffer_streamed_body() -> None:
    """Read a chunked body here, up to the limit (413 past it), and hand it on as an
    ordinary one with its Content-Length, so it is checked like any other.

    Werkzeug would cut such a stream at ``MAX_CONTENT_LENGTH`` without a word, and the
    view would see a truncated body (a 422 for a body that is merely too large).
    """
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    data = request.environ["wsgi.input"].read(limit + 1)
    if len(data) > limit:
        raise RequestEntityTooLarge()
    request.environ["wsgi.input"] = io.BytesIO(data)
    request.environ["CONTENT_LENGTH"] = str(len(data))


def _after_request(response: Response) -> Response:
    cycle: RequestCycle | None = g.get("kit_cycle")
    if cycle is None:
        return response
    response.headers.update(cycle.response_headers(response.content_type, response.headers.keys()))
    cycle.finish(
        route=route_template(),
        status=response.status_code,
        request_bytes=request.content_length,
        response_bytes=response.calculate_content_length(),
    )
    return response


def _teardown_request(_exc: BaseException | None) -> None:
    cycle: RequestCycle | None = g.pop("kit_cycle", None)
    if cycle is None:
        return
    # Only if no response was made (after_request finishes otherwise).
    cycle.finish(
        route=route_template(),
        status=500,
        request_bytes=request.content_length,
        response_bytes=None,
        answered=False,
    )
    cycle.close()


def _on_http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 413:
        return problem_response(too_large_read(request.environ.get("wsgi.input")))
    return problem_response(framework_error(status, exc.description, exc.get_headers()))


def _on_error(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):  # registered for Exception, so check subclasses first
        return _on_http_error(exc)
    return problem_response(
        problem_for(exc, request.method, request.path, sqlalchemy_unavailable())
    )


def install(
    app: Flask, *, max_body_bytes: int = 1_048_576, telemetry: Telemetry | None = None
) -> None:
    """Give ``app`` the kit's error shape, request ids, body limits and access log.

    With ``telemetry`` on: OpenTelemetry's Flask instrumentation (server spans; its
    hooks run before the kit's, so its span is current in them), the metrics of every
    request, and ``/metrics``.
    """
    if telemetry is not None and telemetry.tracing:
        FlaskInstrumentor().instrument_app(  # type: ignore[no-untyped-call]
            app, excluded_urls=UNTRACED_URLS, tracer_provider=tracer_provider()
        )
    app.extensions["polyframe.telemetry"] = telemetry
    app.add_url_rule("/metrics", "kit_metrics", _metrics)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    # Werkzeug answers HTML by default and Flask would re-raise in debug/testing modes;
    # the handlers below answer every error as problem+json instead.
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.config["TRAP_BAD_REQUEST_ERRORS"] = False
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.teardown_request(_teardown_request)
    app.register_error_handler(HTTPException, _on_http_error)
    app.register_error_handler(Exception, _on_error)


def _metrics() -> Response:
    body, content_type = exposition.render(request.headers.get("Accept"))
    return Response(body, content_type=content_type)


def add_health_routes(
    app: Flask, service: str, readiness: Callable[[], Mapping[str, health.SyncCheck]]
) -> None:
    """``/healthz`` and ``/readyz``; ``readiness`` returns the checks for this app.

    The first ``/readyz`` that passes records the cold start (with telemetry on).
    """

    def healthz() -> tuple[dict[str, Any], int]:
        status, body = health.liveness(service)
        return body, status

    def readyz() -> tuple[dict[str, Any], int, dict[str, str]]:
        status, body = health.report(service, health.run_sync_checks(readiness()))
        telemetry = _telemetry()
        if status == 200 and telemetry is not None:
            telemetry.mark_ready()
        return body, status, {"Cache-Control": "no-store"}

    app.add_url_rule("/healthz", "kit_healthz", healthz)
    app.add_url_rule("/readyz", "kit_readyz", readyz)
