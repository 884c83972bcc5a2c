"""The request cycle of every service, framework-neutral: ids, telemetry, refusals, errors.

Each adapter (FastAPI, Flask, Django) only translates its framework's request and
response into a :class:`RequestCycle`; docs/architecture.md tells the whole cycle.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote_from_bytes

from service_kit.client import ServiceUnavailableError
from service_kit.context import REQUEST_ID_HEADER, accept_request_id, request_id_var
from service_kit.headers import is_json
from service_kit.headers import missing as security_headers
from service_kit.inputs import discard_body
from service_kit.limits import InputLimitError, InputLimits, check_headers, check_query, report
from service_kit.metrics import KNOWN_METHODS, OPERATIONAL_PATHS, UNMATCHED_ROUTE
from service_kit.problems import (
    Problem,
    ProblemError,
    body_too_large,
    database_unavailable,
    internal_error,
    unsupported_media_type,
)
from service_kit.telemetry import RequestState, Telemetry
from service_kit.tracecontext import (
    TRACEPARENT_HEADER,
    accept_trace_id,
    span_ids,
    trace_id_var,
)

access_log = logging.getLogger("service_kit.access")
error_log = logging.getLogger("service_kit.errors")

#: Methods whose body must be JSON (a body on any other method is left to the framework).
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Requests that may run twice: one that met a connection the database had dropped is run
#: once more on a fresh connection (:func:`retries_read`).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD"})
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
#: WSGI environ key: when the server queued the request for a thread (``time.perf_counter()``
#: of this process), set by the kit's gunicorn worker; the request's clock starts there.
ENQUEUED_ENVIRON = "service_kit.enqueued"


@functools.cache
def body_read_errors() -> tuple[type[BaseException], ...]:
    """What a server's read of a request body raises when the client broke it off or broke
    its framing: ``OSError`` (gunicorn's ``NoMoreData``, Django's ``UnreadablePostError``)
    and gunicorn's ``ParseException`` (``InvalidChunkSize``, ``ChunkMissingTerminator``,
    ``InvalidChunkExtension``). The client's fault: a 400, never a 500."""
    try:
        from gunicorn.http.errors import ParseException
    except ImportError:  # another server: its errors are OSErrors
        return (OSError,)
    return (OSError, ParseException)


#: What a query string keeps as it is: printable ASCII (``%`` too: escapes stay escapes).
_QUERY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def utf8_query_string(query: bytes) -> bytes | None:
    """``query`` percent-encoded where it is not UTF-8 (raw bytes, not valid in a URL,
    RFC 3986, yet passed on by uvicorn and gunicorn), as a browser would have sent them;
    None if it already decodes. The frameworks decode the query as UTF-8 (Starlette where it
    builds ``request.url``, OpenTelemetry's ASGI middleware, Werkzeug's ``request.args``)
    and raised: a 500 (found by polyframe-fuzz)."""
    try:
        query.decode("utf-8")
    except UnicodeDecodeError:
        return quote_from_bytes(query, safe=_QUERY_SAFE).encode()
    return None


def enqueued_at(environ: Mapping[str, Any]) -> float | None:
    """When the server queued this request (:data:`ENQUEUED_ENVIRON`), if it says so.

    Only a time of this process in the past is taken (anything else starts the clock now).
    """
    value = environ.get(ENQUEUED_ENVIRON)
    if isinstance(value, float) and value <= time.perf_counter():
        return value
    return None


class RequestCycle:
    """One request, from its arrival to its access-log line: made by the adapter first thing.

    ``header`` looks a request header up by name. ``started`` is when the request's clock
    starts (``time.perf_counter()``; default: now): the one place to start it earlier (the
    WSGI adapters start it when gunicorn queued the request, :func:`enqueued_at`).

    The request's trace id is the server span's when one is current (FastAPI, Flask: the
    instrumentation's span starts first) or when it starts later (Django:
    :meth:`adopt_span`); the incoming ``traceparent``'s or a new one without tracing.
    """

    def __init__(
        self,
        telemetry: Telemetry | None,
        method: str,
        path: str,
        header: Callable[[str], str | None],
        *,
        started: float | None = None,
    ) -> None:
        self.started = time.perf_counter() if started is None else started
        self.method = method
        self.path = path
        self.request_id = accept_request_id(header(REQUEST_ID_HEADER))
        self._request_token = request_id_var.set(self.request_id)
        #: The server span's id, for the access line (written after Django's span ended).
        self.span_id: str | None = None
        current = span_ids()
        if current is None:
            trace_id = accept_trace_id(header(TRACEPARENT_HEADER))
        else:
            trace_id, self.span_id = current
        self._trace_token = trace_id_var.set(trace_id)
        self.operational = path in OPERATIONAL_PATHS
        self.telemetry = telemetry
        self.state: RequestState | None = None
        if telemetry is not None and not self.operational:
            self.state = telemetry.start_request(method, self.started)
        self._finished = False

    def adopt_span(self, span: Any) -> None:
        """The server span started inside the cycle (Django's middleware): its trace id is
        the request's from now on, in logs (the access line too, written after the span
        ended), audit events and outgoing calls."""
        current = span_ids(span)
        if current is not None:
            trace_id, self.span_id = current
            trace_id_var.set(trace_id)

    def name_span(self, span: Any, route: str) -> None:
        """The server span named by the route label of the metrics (``/api/orders/{order_id}``,
        not the framework's ``<uuid:order_id>``): traces and metrics group alike."""
        if route == UNMATCHED_ROUTE or not span.is_recording():
            return
        span.set_attribute("http.route", route)
        span.update_name(f"{self.method if self.method in KNOWN_METHODS else 'HTTP'} {route}")

    def refusal(
        self,
        *,
        has_body: bool,
        content_type: str | None,
        content_length: int | None = None,
        max_body_bytes: int | None = None,
        limits: InputLimits | None = None,
        query: str | bytes = "",
        headers: Iterable[tuple[str | bytes, str | bytes]] = (),
    ) -> Problem | None:
        """A request refused before the app sees it: a body over the limit (413), a body
        that is not JSON (415), and with ``limits``: too many or too large header fields
        (431), too many query parameters (422); see :mod:`service_kit.limits`."""
        if max_body_bytes is not None and (content_length or 0) > max_body_bytes:
            self.rejected("body_size")
            return body_too_large(max_body_bytes)
        if self.method in BODY_METHODS and has_body and not is_json(content_type):
            return unsupported_media_type((content_type or "").split(";", 1)[0].strip() or None)
        if limits is not None:
            try:
                check_headers(headers, limits)
                check_query(query, limits)
            except InputLimitError as exc:
                self.rejected(exc.limit)
                return exc.problem
        return None

    def rejected(self, limit: str) -> None:
        """The request goes past ``limit`` (:data:`service_kit.limits.LIMITS`): logged once,
        counted by ``polyframe_input_rejected_total``. The adapter answers."""
        report(limit, self.method, self.path)
        if self.telemetry is not None:
            self.telemetry.input_rejected(limit)

    def response_headers(self, content_type: str | None, present: Iterable[str]) -> dict[str, str]:
        """What every response gets: the request id, and the security headers it lacks."""
        return {REQUEST_ID_HEADER: self.request_id, **security_headers(content_type, present)}

    def problem_for(
        self, exc: Exception, database_errors: tuple[type[Exception], ...] = ()
    ) -> Problem:
        if isinstance(exc, InputLimitError):
            self.rejected(exc.limit)
        return problem_for(exc, self.method, self.path, database_errors)

    def finish(
        self,
        *,
        route: str,
        status: int,
        request_bytes: int | None,
        response_bytes: int | None,
        answered: bool = True,
    ) -> None:
        """The access-log line (unless no response was ``answered``) and the request's
        metrics; only the first call counts."""
        if self._finished:
            return
        self._finished = True
        if answered and not self.operational:
            extra: dict[str, Any] = {
                "method": self.method,
                "route": route,
                "status": status,
                "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
            }
            if self.span_id is not None:
                extra["span_id"] = self.span_id  # the context's, if a span is still current
            access_log.info("request", extra=extra)
        if self.state is not None and self.telemetry is not None:
            self.telemetry.finish_request(
                self.state,
                route=route,
                status=status,
                request_bytes=request_bytes,
                response_bytes=response_bytes,
            )

    def close(self) -> None:
        """The request's ids leave the context (logs after this carry none)."""
        trace_id_var.reset(self._trace_token)
        request_id_var.reset(self._request_token)


def problem_for(
    exc: Exception, method: str, path: str, database_errors: tuple[type[Exception], ...] = ()
) -> Problem:
    """The problem that answers ``exc`` (logged when the client cannot be blamed).

    ``database_errors``: the exceptions that mean the service's database is unreachable.
    """
    if isinstance(exc, ProblemError):
        return exc.problem
    if isinstance(exc, ServiceUnavailableError):
        error_log.warning("dependency unavailable", extra={"peer": exc.peer, "reason": exc.reason})
        return exc.as_problem().problem
    if isinstance(exc, database_errors) or sqlalchemy_disconnected()(exc):
        error_log.warning("database unavailable", extra={"error": type(exc).__name__})
        return database_unavailable().problem
    error_log.error("unhandled exception", exc_info=exc, extra={"method": method, "path": path})
    return internal_error()


def too_large_read(stream: Any, cycle: RequestCycle | None = None) -> Problem:
    """413 for a body the framework found over its limit, once the rest is read and dropped
    (:func:`~service_kit.inputs.discard_body`: a connection reset would turn it into a 502);
    counted in the request's ``cycle``."""
    discard_body(stream)
    if cycle is not None:
        cycle.rejected("body_size")
    return body_too_large()


def retries_read(
    method: str,
    exc: BaseException,
    *,
    retried: bool,
    disconnected: Callable[[BaseException], bool] | None = None,
) -> bool:
    """Run the request again? Only a read (GET, HEAD) not yet retried whose statement met a
    connection the database had dropped (``disconnected``, SQLAlchemy's by default): the
    connection is discarded by then, the retry gets a fresh one. A write is never run
    twice blindly: it is answered as the database-unavailable problem (:func:`problem_for`).
    """
    if retried or method not in IDEMPOTENT_METHODS:
        return False
    if not (disconnected or sqlalchemy_disconnected())(exc):
        return False
    error_log.warning("database connection lost, read retried", extra={"error": type(exc).__name__})
    return True


@functools.cache
def sqlalchemy_disconnected() -> Callable[[BaseException], bool]:
    """:func:`service_kit.sqla.disconnected` (never, without SQLAlchemy)."""
    try:
        from service_kit.sqla import disconnected
    except ImportError:
        return lambda _exc: False
    return disconnected


@functools.cache
def sqlalchemy_unavailable() -> tuple[type[Exception], ...]:
    """SQLAlchemy's errors for a database that cannot be reached (none without SQLAlchemy)."""
    try:
        from service_kit.sqla import UNAVAILABLE
    except ImportError:
        return ()
    return UNAVAILABLE


def openapi_route(rule: str) -> str:
    """A Werkzeug or Django rule (``/orders/<int:order_id>``) in the OpenAPI style every
    service's route label uses (``/orders/{order_id}``)."""
    return _CONVERTER.sub(r"{\1}", rule)
