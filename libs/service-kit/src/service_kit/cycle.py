"""The request cycle of every service, framework-neutral: ids, telemetry, refusals, errors.

Each adapter (FastAPI, Flask, Django) only translates its framework's request and
response into a :class:`RequestCycle`; docs/architecture.md tells the whole cycle.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from service_kit.client import ServiceUnavailableError
from service_kit.context import REQUEST_ID_HEADER, accept_request_id, request_id_var
from service_kit.headers import is_json
from service_kit.headers import missing as security_headers
from service_kit.inputs import discard_body
from service_kit.metrics import OPERATIONAL_PATHS
from service_kit.problems import (
    Problem,
    ProblemError,
    body_too_large,
    database_unavailable,
    internal_error,
    unsupported_media_type,
)
from service_kit.telemetry import RequestState, Telemetry
from service_kit.tracecontext import TRACEPARENT_HEADER, accept_trace_id, trace_id_var

access_log = logging.getLogger("service_kit.access")
error_log = logging.getLogger("service_kit.errors")

#: Methods whose body must be JSON (a body on any other method is left to the framework).
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


class RequestCycle:
    """One request, from its arrival to its access-log line: made by the adapter first thing.

    ``header`` looks a request header up by name. ``started`` is when the request's clock
    starts (``time.perf_counter()``; default: now): the one place to start it earlier.
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
        self._trace_token = trace_id_var.set(accept_trace_id(header(TRACEPARENT_HEADER)))
        self.operational = path in OPERATIONAL_PATHS
        self.telemetry = telemetry
        self.state: RequestState | None = None
        if telemetry is not None and not self.operational:
            self.state = telemetry.start_request(method, self.started)
        self._finished = False

    def refusal(
        self,
        *,
        has_body: bool,
        content_type: str | None,
        content_length: int | None = None,
        max_body_bytes: int | None = None,
    ) -> Problem | None:
        """A request refused before the app sees it: a body over the limit (413), or a body
        that is not JSON (415)."""
        if max_body_bytes is not None and (content_length or 0) > max_body_bytes:
            return body_too_large(max_body_bytes)
        if self.method in BODY_METHODS and has_body and not is_json(content_type):
            return unsupported_media_type((content_type or "").split(";", 1)[0].strip() or None)
        return None

    def response_headers(self, content_type: str | None, present: Iterable[str]) -> dict[str, str]:
        """What every response gets: the request id, and the security headers it lacks."""
        return {REQUEST_ID_HEADER: self.request_id, **security_headers(content_type, present)}

    def problem_for(
        self, exc: Exception, database_errors: tuple[type[Exception], ...] = ()
    ) -> Problem:
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
            access_log.info(
                "request",
                extra={
                    "method": self.method,
                    "route": route,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
                },
            )
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
    if isinstance(exc, database_errors):
        error_log.warning("database unavailable", extra={"error": type(exc).__name__})
        return database_unavailable().problem
    error_log.error("unhandled exception", exc_info=exc, extra={"method": method, "path": path})
    return internal_error()


def too_large_read(stream: Any) -> Problem:
    """413 for a body the framework found over its limit, once the rest is read and dropped
    (:func:`~service_kit.inputs.discard_body`: a connection reset would turn it into a 502)."""
    discard_body(stream)
    return body_too_large()


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
