"""Django adapter: request context, problem+json for the API routes, health views.

Django's own pages (the admin) keep their HTML; every path under ``/api/``
answers errors as ``application/problem+json`` whatever raised them: a view's
:class:`ProblemError`, an unmatched URL, a disallowed method, a body that is
too large, or an unhandled exception.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.handlers.exception import get_exception_response
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.urls import get_resolver, get_urlconf
from opentelemetry import trace
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.trace import StatusCode
from pydantic import BaseModel, ValidationError

from service_kit import dbstats, exposition, health
from service_kit.context import REQUEST_ID_HEADER, accept_request_id
from service_kit.cycle import (
    RequestCycle,
    body_read_errors,
    enqueued_at,
    openapi_route,
    problem_for,
    retries_read,
    too_large_read,
)
from service_kit.limits import InputLimits
from service_kit.limits import loads as json_loads
from service_kit.metrics import UNMATCHED_ROUTE
from service_kit.problems import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    ProblemError,
    field_errors,
    framework_error,
    incomplete_body,
    malformed_body,
    unsupported_media_type,
    validation_problem,
)
from service_kit.settings import ServiceSettings
from service_kit.telemetry import Telemetry, for_service
from service_kit.tracing import UNTRACED_URLS, tracer_provider

API_PREFIX = "/api/"
#: A named group of a ``re_path`` (the admin's catch-all ``(?P<url>.*)``).
_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^()]*\)")
ModelT = TypeVar("ModelT", bound=BaseModel)


def route_template(request: HttpRequest) -> str:
    """The matched URL pattern in the style every service uses: ``/api/audit/events/{id}``."""
    match = getattr(request, "resolver_match", None)
    if match is None or match.route is None:
        return UNMATCHED_ROUTE
    route = _NAMED_GROUP.sub(r"{\1}", match.route.replace("^", "").replace("$", ""))
    return "/" + openapi_route(route)


def problem_response(problem: Problem, request: HttpRequest | None = None) -> HttpResponse:
    if problem.instance is None and request is not None:
        problem.instance = request.path
    response = HttpResponse(
        json.dumps(problem.as_dict()), status=problem.status, content_type=PROBLEM_CONTENT_TYPE
    )
    for name, value in problem.headers.items():
        response[name] = value
    return response


def json_body(request: HttpRequest, model: type[ModelT]) -> ModelT:
    """The request body validated by ``model``: 415, 422 malformed-body or 422 naming fields."""
    if request.content_type != "application/json":
        raise ProblemError.of(unsupported_media_type(request.content_type))
    try:
        body = _body_of(request)
    except body_read_errors():
        # Django's UnreadablePostError, or the server's own error on a chunked body (gunicorn's
        # NoMoreData): the client closed mid-body or broke its chunks, a 400 and not a 500.
        raise ProblemError.of(incomplete_body()) from None
    try:
        data = json_loads(body, input_limits())
    except ValueError:
        raise ProblemError.of(malformed_body()) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, location="body") from None


def _body_of(request: HttpRequest) -> bytes:
    """``request.body``; or a body sent in chunks (no Content-Length), which Django reads
    as empty, read here up to Django's limit (past it, the 413 of any body too large)."""
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if request.META.get("CONTENT_LENGTH") or not chunked:
        return request.body
    if not request.META.get("wsgi.input_terminated"):  # the server cannot end the stream
        raise ProblemError(411, "Send the body with a Content-Length")
    from django.conf import settings

    limit: int | None = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    stream = request.META["wsgi.input"]
    data: bytes = stream.read() if limit is None else stream.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
    return data


_DEFAULT_LIMITS = InputLimits()
#: Form content types, whose fields Django counts (``DATA_UPLOAD_MAX_NUMBER_FIELDS``, …).
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
#: Django's refusal of a form over its limits, and the limit each one is counted as.
_FORM_LIMITS: dict[type[Exception], str] = {
    TooManyFieldsSent: "form_fields",
    TooManyFilesSent: "form_files",
    RequestDataTooBig: "body_size",
}


def input_limits() -> InputLimits:
    """The limits of this Django project: ``settings.POLYFRAME_INPUT_LIMITS`` (the service's
    settings' :attr:`~service_kit.settings.ServiceSettings.input_limits`), else the defaults."""
    from django.conf import settings

    limits: InputLimits = getattr(settings, "POLYFRAME_INPUT_LIMITS", _DEFAULT_LIMITS)
    return limits


def header_fields(request: HttpRequest) -> list[tuple[str, str]]:
    """The request's header fields as WSGI hands them to Django (``HTTP_*``, and the two
    without that prefix), as the limits count them."""
    return [
        (name, str(value))
        for name, value in request.META.items()
        if name.startswith("HTTP_") or name in ("CONTENT_TYPE", "CONTENT_LENGTH")
    ]


def _refusal(request: HttpRequest, cycle: RequestCycle) -> HttpResponse | None:
    """A request over a limit (:mod:`service_kit.limits`) answered before any view or other
    middleware: a problem under ``/api/``, the console's own 400 page elsewhere. A form's
    fields and files are counted by Django itself (its ``DATA_UPLOAD_*`` settings): read
    here, first, so that its refusal is counted and answered the same way."""
    api = request.path.startswith(API_PREFIX)
    problem = cycle.refusal(
        has_body=False,
        content_type=None,
        limits=input_limits(),
        query=request.META.get("QUERY_STRING", ""),
        headers=header_fields(request),
    )
    if problem is not None:
        if api:
            return problem_response(problem, request)
        return _bad_request(request, SuspiciousOperation(problem.detail))
    if api or request.method != "POST" or request.content_type not in _FORMS:
        return None
    try:
        request.POST  # noqa: B018 - parsed (and cached) here, where its refusal is handled
    except tuple(_FORM_LIMITS) as exc:
        cycle.rejected(_FORM_LIMITS[type(exc)])
        return _bad_request(request, exc)
    except body_read_errors() as exc:  # UnreadablePostError, broken chunks: the client's
        return _bad_request(request, SuspiciousOperation(f"incomplete request body: {exc}"))
    except MultiPartParserError as exc:  # no boundary, a broken part: the client's, a 400
        return _bad_request(request, exc)
    return None


def _bad_request(request: HttpRequest, exc: Exception) -> HttpResponse:
    """The project's own 400 page (its ``handler400``, else Django's), as Django answers a
    :class:`SuspiciousOperation`."""
    response: HttpResponse = get_exception_response(request, get_resolver(get_urlconf()), 400, exc)
    return response


def validation_error(exc: ValidationError, *, location: str) -> ProblemError:
    errors = field_errors(exc.errors(include_url=False), location)
    return ProblemError.of(validation_problem(errors))


class RequestContextMiddleware:
    """The outermost middleware: the kit's request cycle (:mod:`service_kit.cycle`), database
    statistics, and problem+json under ``/api/`` (whatever an inner middleware raised).

    OpenTelemetry's Django middleware, when on, comes right after it; its hooks hand the
    server span to this request's cycle (whose trace id becomes the request's: the access
    line, written after the span ended, names it) and, before the span ends, name it by
    the route label and finish the database part (N+1 events on the span).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        operational = OPERATIONAL_VIEWS.get(request.path)
        if operational is not None:
            # Probes and scrapes come by pod IP: answered here, before the host check of
            # the middleware below (which would refuse an IP not in ALLOWED_HOSTS), and
            # before sessions, CSRF and authentication, which they have no use for.
            answer = operational(request)
            answer[REQUEST_ID_HEADER] = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
            return answer
        cycle = RequestCycle(
            _telemetry,
            request.method or "GET",
            request.path,
            request.headers.get,
            started=enqueued_at(request.META),
        )
        request.polyframe_cycle = cycle  # type: ignore[attr-defined]
        response: HttpResponse | None = None
        try:
            response = _refusal(request, cycle)
            if response is None:
                with _watching_queries(cycle.state is not None):
                    response = self.get_response(request)
            if request.path.startswith(API_PREFIX) and response.status_code >= 400:
                response = self._as_problem(request, response)
            for name, value in cycle.response_headers(
                response.get("Content-Type"), response.headers.keys()
            ).items():
                response[name] = value
            return response
        finally:
            cycle.finish(
                route=route_template(request),
                status=response.status_code if response is not None else 500,
                request_bytes=_content_length(request),
                response_bytes=_response_length(response),
                answered=response is not None,
            )
            cycle.close()

    @staticmethod
    def _as_problem(request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.get("Content-Type", "").startswith(PROBLEM_CONTENT_TYPE):
            return response
        return problem_response(
            framework_error(response.status_code, None, response.items()), request
        )

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not request.path.startswith(API_PREFIX):
            return None  # Django's own handling (the admin's HTML pages)
        cycle: RequestCycle | None = getattr(request, "polyframe_cycle", None)
        if isinstance(exc, RequestDataTooBig):
            problem = too_large_read(request.META.get("wsgi.input"), cycle)
        elif isinstance(exc, Http404):
            problem = Problem(status=404)
        elif isinstance(exc, PermissionDenied):
            problem = Problem(status=403)
        elif retries_read(
            request.method or "GET",
            exc,
            retried=getattr(request, "polyframe_read_retried", False),
            disconnected=_discarded_if_unusable,
        ):
            request.polyframe_read_retried = True  # type: ignore[attr-defined]
            match = request.resolver_match
            assert match is not None  # process_exception runs for a view's exception only
            try:
                return match.func(request, *match.args, **match.kwargs)  # type: ignore[no-any-return]
            except Exception as again:  # answered as any error of the view (a 503 if the same)
                return self.process_exception(request, again)
        elif cycle is not None:
            problem = cycle.problem_for(exc, (OperationalError, InterfaceError))
        else:
            problem = problem_for(
                exc, request.method or "GET", request.path, (OperationalError, InterfaceError)
            )
        return problem_response(problem, request)


def _discarded_if_unusable(exc: BaseException) -> bool:
    """A database error on a connection the server dropped: closed now (Django's own check,
    ``close_if_unusable_or_obsolete``, as at the end of a request), so the next query opens
    a fresh one. Django pings nothing per request (no ``CONN_HEALTH_CHECKS``): a dropped
    connection is found by the query that fails on it."""
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.in_atomic_block:
        return False  # the view's transaction is not ours to end
    connection.close_if_unusable_or_obsolete()
    return connection.connection is None


def migrations_applied() -> str:
    """Readiness check: every migration of the project is applied (the migrations' head)."""
    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        raise health.CheckFailedError(f"{len(plan)} migration(s) not applied: run the migrations")
    return "all applied"


def _content_length(request: HttpRequest) -> int | None:
    value = request.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None


def _response_length(response: HttpResponse | None) -> int | None:
    if response is None or response.streaming:
        return None
    return len(response.content)


# -- telemetry: set up once per process from the project's app config --------------------------

_telemetry: Telemetry | None = None


def instrument(settings: ServiceSettings) -> Telemetry:
    """Telemetry of this Django process (call from an ``AppConfig.ready``, in every worker).

    With instrumentation on, OpenTelemetry's Django middleware is put first in
    ``MIDDLEWARE``, before the handler loads it, and every SQL statement of a request is
    timed, counted (N+1 detection) and traced.
    """
    global _telemetry
    _telemetry = for_service(settings, "django")
    if _telemetry.tracing:
        DjangoInstrumentor().instrument(
            excluded_urls=UNTRACED_URLS,
            tracer_provider=tracer_provider(),
            request_hook=_span_started,
            response_hook=_span_ending,
        )
        _kit_middleware_first()
    return _telemetry


def _kit_middleware_first() -> None:
    """Put the kit's middleware back in front of OpenTelemetry's (which inserts itself first).

    OpenTelemetry's reads the host before anything else; a Host that is not allowed fails
    there, and only a middleware outside it can still answer with a problem under ``/api/``.
    """
    from django.conf import settings as django_settings

    ours = f"{RequestContextMiddleware.__module__}.{RequestContextMiddleware.__qualname__}"
    middleware = list(django_settings.MIDDLEWARE)
    if ours in middleware:
        middleware.remove(ours)
        django_settings.MIDDLEWARE = [ours, *middleware]


def _span_started(span: trace.Span, request: HttpRequest) -> None:
    """The server span starts inside the kit's cycle: the request takes its trace id."""
    cycle: RequestCycle | None = getattr(request, "polyframe_cycle", None)
    if cycle is None:
        return
    cycle.adopt_span(span)
    if cycle.state is not None:
        cycle.state.span = span


def _span_ending(span: trace.Span, request: HttpRequest, _response: HttpResponse) -> None:
    cycle: RequestCycle | None = getattr(request, "polyframe_cycle", None)
    if cycle is None:
        return
    route = route_template(request)
    cycle.name_span(span, route)
    if cycle.state is not None and _telemetry is not None:
        _telemetry.finish_database(cycle.state, route)


@contextmanager
def _watching_queries(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    with ExitStack() as stack:
        for connection in connections.all():
            stack.enter_context(connection.execute_wrapper(_observe_query))
        yield


def _observe_query(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Django's ``execute_wrapper``: every statement traced and counted for its request."""
    span = dbstats.statement_span(sql, context["connection"].vendor)
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    except Exception as exc:
        span.record_exception(exc)
        span.set_status(StatusCode.ERROR, type(exc).__name__)
        raise
    finally:
        span.end()
        dbstats.record(sql, time.perf_counter() - started)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``/metrics``: Prometheus exposition of this process (or of every worker's)."""
    body, content_type = exposition.render(request.headers.get("Accept"))
    return HttpResponse(body, content_type=content_type)


def healthz(_request: HttpRequest) -> HttpResponse:
    status, body = health.liveness(_service_name())
    return JsonResponse(body, status=status)


def readyz(_request: HttpRequest) -> HttpResponse:
    status, body = health.report(
        _service_name(), health.run_sync_checks({"database": migrations_applied})
    )
    if status == 200 and _telemetry is not None:
        _telemetry.mark_ready()
    response = JsonResponse(body, status=status)
    response["Cache-Control"] = "no-store"
    return response


def _service_name() -> str:
    from django.conf import settings

    name: str = getattr(settings, "POLYFRAME_SERVICE_NAME", "django")
    return name


def json_response(body: Any, status: int = 200) -> HttpResponse:
    return JsonResponse(body, status=status, safe=False)


#: ``/healthz``, ``/readyz`` and ``/metrics``, served by the kit's middleware itself.
OPERATIONAL_VIEWS: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": healthz,
    "/readyz": readyz,
    "/metrics": metrics_view,
}
