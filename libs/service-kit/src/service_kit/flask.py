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
from flask.json.provider import DefaultJSONProvider
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from pydantic import ValidationError
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from service_kit import exposition, health
from service_kit.cycle import (
    BODY_METHODS,
    RequestCycle,
    body_read_errors,
    enqueued_at,
    openapi_route,
    problem_for,
    retries_read,
    sqlalchemy_unavailable,
    too_large_read,
    utf8_query_string,
)
from service_kit.limits import InputLimitError, InputLimits, check_json
from service_kit.limits import loads as json_loads
from service_kit.metrics import UNMATCHED_ROUTE
from service_kit.problems import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    field_errors,
    framework_error,
    incomplete_body,
    malformed_body,
    validation_problem,
)
from service_kit.telemetry import Telemetry
from service_kit.tracing import UNTRACED_URLS, tracer_provider

_DEFAULT_LIMITS = InputLimits()


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
    cycle = RequestCycle(
        _telemetry(),
        request.method,
        request.path,
        request.headers.get,
        started=enqueued_at(request.environ),
    )
    g.kit_cycle = cycle
    streamed = _streamed()
    has_body = bool(request.content_length or streamed)
    refusal = cycle.refusal(
        has_body=has_body,
        content_type=request.mimetype,
        limits=_limits(),
        query=request.query_string,
        headers=request.headers.items(),
    )
    if refusal is not None:
        return problem_response(refusal)
    if request.method in BODY_METHODS and has_body:
        try:
            if streamed:
                _buffer_streamed_body()
            # The one parse (the kit's JSON provider: limits first), cached for the view.
            parsed = request.get_json(cache=True)
            if isinstance(parsed, str):
                # flask-openapi3 parses a body that is a JSON string once more, as the JSON
                # of its model (model_validate_json): that document gets the limits too.
                check_json(parsed, _limits())
        except InputLimitError as exc:
            cycle.rejected(exc.limit)
            return problem_response(exc.problem)
        except BadRequest:
            return problem_response(malformed_body())
        except body_read_errors():
            # The server's read of the body failed (gunicorn's NoMoreData, InvalidChunkSize:
            # the client closed mid-body or broke its chunks): the client's fault, a 400.
            return problem_response(incomplete_body())
    return None


def _limits() -> InputLimits:
    found: InputLimits = current_app.extensions["polyframe.limits"]
    return found


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON with the kit's parse of request bodies (``request.get_json``): the
    structural limits scanned first (:func:`service_kit.limits.loads`)."""

    def __init__(self, app: Flask, limits: InputLimits) -> None:
        super().__init__(app)
        self.limits = limits

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return json_loads(s, self.limits)


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
    route = route_template()
    cycle.name_span(trace.get_current_span(), route)  # OpenTelemetry's span ends after this
    cycle.finish(
        route=route,
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
        stream = request.environ.get("wsgi.input")
        return problem_response(too_large_read(stream, g.get("kit_cycle")))
    return problem_response(framework_error(status, exc.description, exc.get_headers()))


#: ``app.extensions`` key: what to drop before a read is run again (the request's session).
READ_RETRY_RESETS = "polyframe.read_retry_resets"


def on_read_retry(app: Flask, reset: Callable[[], None]) -> None:
    """Call ``reset`` before a read that met a dropped connection is run again (to close
    the request's session, whose connection is gone): see :func:`_on_error`."""
    app.extensions.setdefault(READ_RETRY_RESETS, []).append(reset)


def _on_error(exc: Exception) -> Any:
    if isinstance(exc, HTTPException):  # registered for Exception, so check subclasses first
        return _on_http_error(exc)
    # Only the view is run again: a before_request hook (an access check) that met the dropped
    # connection makes it a 503, for its hooks (OpenTelemetry's too) cannot run twice.
    if g.get("kit_view_reached") and retries_read(
        request.method, exc, retried=g.get("kit_read_retried", False)
    ):
        g.kit_read_retried = True
        for reset in current_app.extensions.get(READ_RETRY_RESETS, ()):
            reset()
        try:
            return current_app.dispatch_request()  # Flask makes the response, as for the view
        except Exception as again:  # answered as any error of the view (a 503 if the same)
            return _on_error(again)
    return problem_response(
        problem_for(exc, request.method, request.path, sqlalchemy_unavailable())
    )


def install(
    app: Flask,
    *,
    max_body_bytes: int = 1_048_576,
    telemetry: Telemetry | None = None,
    limits: InputLimits | None = None,
) -> None:
    """Give ``app`` the kit's error shape, request ids, body limits and access log.

    Every request is checked against ``limits`` (default: the kit's defaults) before it is
    parsed (:mod:`service_kit.limits`); ``request.get_json`` is the kit's parse.

    With ``telemetry`` on: OpenTelemetry's Flask instrumentation (server spans; its
    hooks run before the kit's, so its span is current in them), the metrics of every
    request, and ``/metrics``.
    """
    if telemetry is not None and telemetry.tracing:
        FlaskInstrumentor().instrument_app(  # type: ignore[no-untyped-call]
            app, excluded_urls=UNTRACED_URLS, tracer_provider=tracer_provider()
        )
    app.extensions["polyframe.telemetry"] = telemetry
    app.extensions["polyframe.limits"] = limits = limits or _DEFAULT_LIMITS
    app.json = JSONProvider(app, limits)
    app.add_url_rule("/metrics", "kit_metrics", _metrics)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    # Werkzeug answers HTML by default and Flask would re-raise in debug/testing modes;
    # the handlers below answer every error as problem+json instead.
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.config["TRAP_BAD_REQUEST_ERRORS"] = False
    app.wsgi_app = _utf8_query_first(app.wsgi_app)  # type: ignore[method-assign]
    app.dispatch_request = _noting_the_view(app.dispatch_request)  # type: ignore[method-assign]
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.teardown_request(_teardown_request)
    app.register_error_handler(HTTPException, _on_http_error)
    app.register_error_handler(Exception, _on_error)


def _noting_the_view(dispatch: Callable[[], Any]) -> Callable[[], Any]:
    """Flask's dispatch to the view, noting in ``g`` that the request got that far (past
    every ``before_request`` hook): see :func:`_on_error`."""

    def dispatch_request() -> Any:
        g.kit_view_reached = True
        return dispatch()

    return dispatch_request


def _utf8_query_first(wsgi_app: Callable[..., Any]) -> Callable[..., Any]:
    """The WSGI app with a query string made UTF-8 first (:func:`utf8_query_string`):
    Werkzeug's ``request.args`` decodes it as UTF-8 and raised, a 500 (found by
    polyframe-fuzz). WSGI hands the query on as a latin-1 string of its bytes."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        query = environ.get("QUERY_STRING", "")
        encoded = utf8_query_string(query.encode("latin-1", "replace"))
        if encoded is not None:
            environ["QUERY_STRING"] = encoded.decode("ascii")
        return wsgi_app(environ, start_response)

    return app


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
