"""FastAPI/ASGI adapter: request context, problem+json errors, health routes.

The adapter only translates FastAPI's and Starlette's habits into the kit's
conventions (see :mod:`service_kit.problems`, :mod:`service_kit.health`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service_kit import drain, health, metrics
from service_kit.client import ServiceUnavailableError
from service_kit.context import REQUEST_ID_HEADER, accept_request_id, request_id_var
from service_kit.headers import is_json
from service_kit.headers import missing as security_headers
from service_kit.loopmonitor import LoopMonitor
from service_kit.metrics import OPERATIONAL_PATHS, UNMATCHED_ROUTE
from service_kit.problems import (
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
from service_kit.telemetry import UNTRACED_URLS, RequestState, Telemetry, flush, tracer_provider
from service_kit.tracecontext import accept_trace_id, trace_id_var

access_log = logging.getLogger("service_kit.access")
error_log = logging.getLogger("service_kit.errors")


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_CONTENT_TYPE


def problem_response(problem: Problem, request: Request | None = None) -> ProblemResponse:
    if problem.instance is None and request is not None:
        problem.instance = request.url.path
    return ProblemResponse(problem.as_dict(), status_code=problem.status, headers=problem.headers)


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class RequestContextMiddleware:
    """Outermost app middleware: request id, body-size limit, access log, metrics, last 500.

    Pure ASGI (no ``BaseHTTPMiddleware``) so it adds no task per request and
    sees exceptions before Starlette's ``ServerErrorMiddleware`` would print them.
    OpenTelemetry's middleware, when on, wraps this one: its server span is current here.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int = 1_048_576,
        telemetry: Telemetry | None = None,
        monitor: LoopMonitor | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.telemetry = telemetry
        self.monitor = monitor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = accept_request_id(
            headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1") or None
        )
        token = request_id_var.set(request_id)
        trace_token = trace_id_var.set(
            accept_trace_id(headers.get(b"traceparent", b"").decode("latin-1") or None)
        )
        started = time.perf_counter()
        status = 500
        response_started = False
        state = None
        if self.telemetry is not None and scope["path"] not in OPERATIONAL_PATHS:
            state = self.telemetry.start_request(scope["method"])
        if state is not None and self.monitor is not None:
            self.monitor.request_started(state, scope)
        received = 0
        sent = 0

        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status = refusal.status
            sent = await self._send_problem(scope, send, request_id, refusal)
            self._finish(scope, state, status, started, received, sent)
            trace_id_var.reset(trace_token)
            request_id_var.reset(token)
            return

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # FastAPI re-raises HTTPException from body parsing (anything else becomes 400).
                    raise HTTPException(413, _too_large(self.max_body_bytes).detail)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started, sent
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                raw = list(message.get("headers", []))
                content_type = next(
                    (v.decode("latin-1") for k, v in raw if k.lower() == b"content-type"), None
                )
                extra = security_headers(content_type, (k.decode("latin-1") for k, _ in raw))
                message["headers"] = [
                    *raw,
                    (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
                    *((k.lower().encode(), v.encode()) for k, v in extra.items()),
                ]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except Exception as exc:
            if response_started:
                error_log.exception("error after the response started")
                raise
            problem = exc.problem if isinstance(exc, ProblemError) else internal_error()
            if not isinstance(exc, ProblemError):
                error_log.error(
                    "unhandled exception",
                    exc_info=exc,
                    extra={"method": scope["method"], "path": scope["path"]},
                )
            status = problem.status
            sent = await self._send_problem(scope, send, request_id, problem)
        finally:
            self._finish(scope, state, status, started, received, sent)
            trace_id_var.reset(trace_token)
            request_id_var.reset(token)

    def _finish(
        self,
        scope: Scope,
        state: RequestState | None,
        status: int,
        started: float,
        received: int,
        sent: int,
    ) -> None:
        self._log(scope, status, started)
        if state is not None and self.telemetry is not None:
            if self.monitor is not None:
                self.monitor.request_finished()
            self.telemetry.finish_request(
                state,
                route=route_template(scope),
                status=status,
                request_bytes=received,
                response_bytes=sent,
            )

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> Problem | None:
        """A request refused before the app sees it: a body too large, or not JSON (415)."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return _too_large(self.max_body_bytes)
        has_body = (declared is not None and declared not in (b"", b"0")) or (
            b"transfer-encoding" in headers
        )
        if scope["method"] in _BODY_METHODS and has_body:
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            if not is_json(content_type):
                return unsupported_media_type(content_type.split(";", 1)[0].strip() or None)
        return None

    @staticmethod
    async def _send_problem(scope: Scope, send: Send, request_id: str, problem: Problem) -> int:
        problem.instance = problem.instance or scope["path"]
        body = json.dumps(problem.as_dict()).encode()
        response_headers = [
            (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
            *((k.lower().encode(), v.encode()) for k, v in problem.headers.items()),
            *(
                (k.lower().encode(), v.encode())
                for k, v in security_headers(PROBLEM_CONTENT_TYPE, problem.headers).items()
            ),
        ]
        await send(
            {"type": "http.response.start", "status": problem.status, "headers": response_headers}
        )
        await send({"type": "http.response.body", "body": body})
        return len(body)

    @staticmethod
    def _log(scope: Scope, status: int, started: float) -> None:
        if scope["path"] in OPERATIONAL_PATHS:
            return
        access_log.info(
            "request",
            extra={
                "method": scope["method"],
                "route": route_template(scope),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )


def _database_errors() -> tuple[type[Exception], ...]:
    try:
        from service_kit.sqla import UNAVAILABLE
    except ImportError:  # a service without SQLAlchemy
        return ()
    return UNAVAILABLE


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _too_large(limit: int) -> Problem:
    return Problem(status=413, detail=f"The request body exceeds {limit} bytes")


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    errors: list[FieldError] = []
    for error in exc.errors():
        location, *path = [str(part) for part in error.get("loc", ("body",))]
        if error.get("type") == "json_invalid":
            path = []
        errors.append(
            FieldError(
                field=".".join(path),
                detail=str(error.get("msg", "invalid value")),
                location=location,
                code=str(error.get("type")) if error.get("type") else None,
            )
        )
    return errors


async def _on_validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc)
    if any(error.code == "json_invalid" for error in errors):
        problem = malformed_body(errors)
    else:
        problem = validation_problem(errors)
    return problem_response(problem, request)


async def _on_http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        # FastAPI's 400 for a body it could not even decode (bytes that are not UTF-8): as
        # unreadable as broken JSON, so the same 422 as in the other services.
        return problem_response(malformed_body(), request)
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(
        Problem(status=exc.status_code, detail=detail, headers=dict(exc.headers or {})), request
    )


async def _on_problem(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(exc.problem, request)


async def _on_database_unavailable(request: Request, exc: Exception) -> ProblemResponse:
    error_log.warning("database unavailable", extra={"error": type(exc).__name__})
    return problem_response(database_unavailable().problem, request)


async def _on_unavailable(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ServiceUnavailableError)
    error_log.warning("dependency unavailable", extra={"peer": exc.peer, "reason": exc.reason})
    return problem_response(exc.as_problem().problem, request)


def install(
    app: FastAPI,
    *,
    max_body_bytes: int = 1_048_576,
    telemetry: Telemetry | None = None,
    drain_seconds: float = 0.0,
) -> None:
    """Give ``app`` the kit's error shape and request context, and ``telemetry`` if given.

    With telemetry on: OpenTelemetry's ASGI middleware (server spans), the metrics of
    every request, ``/metrics``, and the event-loop monitor, started with the app's
    lifespan.
    """
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(ServiceUnavailableError, _on_unavailable)
    for database_error in _database_errors():
        app.add_exception_handler(database_error, _on_database_unavailable)
    monitor = None
    if telemetry is not None and telemetry.enabled:
        monitor = LoopMonitor(telemetry)
    _wrap_lifespan(app, monitor, drain_seconds)
    if telemetry is not None and telemetry.tracing:
        FastAPIInstrumentor.instrument_app(
            app,
            excluded_urls=UNTRACED_URLS,
            tracer_provider=tracer_provider(),
            # No span per ASGI message (two or three more per request, nothing to read).
            exclude_spans=["receive", "send"],
        )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=max_body_bytes,
        telemetry=telemetry,
        monitor=monitor,
    )
    app.add_api_route("/metrics", _metrics, methods=["GET"], include_in_schema=False)


def _metrics(request: Request) -> Response:
    """Prometheus exposition (a plain ``def``: merging workers' files runs off the loop)."""
    body, content_type = metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)


def _wrap_lifespan(app: FastAPI, monitor: LoopMonitor | None, drain_seconds: float) -> None:
    """Around the app's own lifespan: the drain on SIGTERM, the event-loop monitor, and the
    last spans sent on the way out."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        drain.install(drain_seconds)  # uvicorn's signal handlers are in place by now
        if monitor is not None:
            monitor.start()
        try:
            async with inner(app) as state:
                yield state
        finally:
            if monitor is not None:
                await monitor.stop()
            flush()

    app.router.lifespan_context = lifespan


def add_health_routes(
    app: FastAPI,
    service: str,
    readiness: Callable[[Request], Mapping[str, Callable[[], Awaitable[str | None]]]],
    telemetry: Telemetry | None = None,
) -> None:
    """``/healthz`` and ``/readyz``; ``readiness`` returns the checks for this app.

    The first ``/readyz`` that passes records the cold start in ``telemetry``.
    """

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        status, body = health.liveness(service)
        return JSONResponse(body, status_code=status)

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        results = await health.run_async_checks(readiness(request))
        status, body = health.report(service, results)
        if status == 200 and telemetry is not None:
            telemetry.mark_ready()
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
