"""Flask/WSGI adapter: request context, problem+json errors, health routes.

Like the FastAPI adapter it only translates Flask's and Werkzeug's habits
(HTML error pages, ``BadRequest`` for broken JSON, 413 from
``MAX_CONTENT_LENGTH``) into the kit's conventions.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, current_app, g, request
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from service_kit import health, metrics
from service_kit.client import ServiceUnavailableError
from service_kit.context import REQUEST_ID_HEADER, accept_request_id, request_id_var
from service_kit.headers import missing as security_headers
from service_kit.inputs import discard_body
from service_kit.metrics import OPERATIONAL_PATHS, UNMATCHED_ROUTE
from service_kit.problems import (
    KEPT_ERROR_HEADERS,
    PROBLEM_CONTENT_TYPE,
    FieldError,
    Problem,
    ProblemError,
    database_unavailable,
    internal_error,
    malformed_body,
    unsupported_media_type,
    validation_problem,
)
from service_kit.telemetry import UNTRACED_URLS, Telemetry, tracer_provider
from service_kit.tracecontext import TRACEPARENT_HEADER, accept_trace_id, trace_id_var

access_log = logging.getLogger("service_kit.access")
error_log = logging.getLogger("service_kit.errors")

_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def route_template() -> str:
    """The matched rule in the OpenAPI style every service uses: ``/api/orders/{order_id}``."""
    rule = request.url_rule
    if rule is None:
        return UNMATCHED_ROUTE
    return _CONVERTER.sub(r"{\1}", rule.rule)


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
    location = _location_of(exc.title)
    errors = [
        FieldError(
            field=".".join(str(part) for part in error["loc"]),
            detail=error["msg"],
            location=location,
            code=error["type"],
        )
        for error in exc.errors(include_url=False)
    ]
    return problem_response(validation_problem(errors))


def _telemetry() -> Telemetry | None:
    telemetry: Telemetry | None = current_app.extensions.get("polyframe.telemetry")
    return telemetry


def _before_request() -> Response | None:
    g.kit_started = time.perf_counter()
    g.kit_request_id = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
    g.kit_context_token = request_id_var.set(g.kit_request_id)
    g.kit_trace_token = trace_id_var.set(accept_trace_id(request.headers.get(TRACEPARENT_HEADER)))
    telemetry = _telemetry()
    if telemetry is not None and request.path not in OPERATIONAL_PATHS:
        g.kit_state = telemetry.start_request(request.method)
    streamed = _streamed()
    if request.method in _BODY_METHODS and (request.content_length or streamed):
        if not request.is_json:
            return problem_response(unsupported_media_type(request.mimetype))
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
    request_id = g.get("kit_request_id")
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    response.headers.update(security_headers(response.content_type, response.headers.keys()))
    _finish(response.status_code, response.calculate_content_length())
    if request.path not in OPERATIONAL_PATHS:
        started = g.get("kit_started", time.perf_counter())
        access_log.info(
            "request",
            extra={
                "method": request.method,
                "route": route_template(),
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
    return response


def _finish(status: int, response_bytes: int | None) -> None:
    state = g.pop("kit_state", None)
    telemetry = _telemetry()
    if state is not None and telemetry is not None:
        telemetry.finish_request(
            state,
            route=route_template(),
            status=status,
            request_bytes=request.content_length,
            response_bytes=response_bytes,
        )


def _teardown_request(_exc: BaseException | None) -> None:
    _finish(500, None)  # only if no response was made (after_request finishes otherwise)
    trace_token = g.pop("kit_trace_token", None)
    if trace_token is not None:
        trace_id_var.reset(trace_token)
    token = g.pop("kit_context_token", None)
    if token is not None:
        request_id_var.reset(token)


def _on_http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    detail = exc.description if status != 413 else "The request body is too large"
    if status == 413:
        discard_body(request.environ.get("wsgi.input"))
    problem = Problem(status=status, detail=detail)
    for name, value in exc.get_headers():
        if name.lower() in KEPT_ERROR_HEADERS:
            problem.headers[name] = value
    return problem_response(problem)


def _on_problem(exc: ProblemError) -> Response:
    return problem_response(exc.problem)


def _on_database_unavailable(exc: Exception) -> Response:
    error_log.warning("database unavailable", extra={"error": type(exc).__name__})
    return problem_response(database_unavailable().problem)


def _on_unavailable(exc: ServiceUnavailableError) -> Response:
    error_log.warning("dependency unavailable", extra={"peer": exc.peer, "reason": exc.reason})
    return problem_response(exc.as_problem().problem)


def _on_unhandled(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):  # registered for Exception, so check subclasses first
        return _on_http_error(exc)
    error_log.error(
        "unhandled exception",
        exc_info=exc,
        extra={"method": request.method, "path": request.path},
    )
    return problem_response(internal_error())


def _database_errors() -> tuple[type[Exception], ...]:
    try:
        from service_kit.sqla import UNAVAILABLE
    except ImportError:  # a service without SQLAlchemy
        return ()
    return UNAVAILABLE


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
    app.register_error_handler(ProblemError, _on_problem)
    app.register_error_handler(ServiceUnavailableError, _on_unavailable)
    for database_error in _database_errors():
        app.register_error_handler(database_error, _on_database_unavailable)
    app.register_error_handler(Exception, _on_unhandled)


def _metrics() -> Response:
    body, content_type = metrics.exposition(request.headers.get("Accept"))
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
