"""FastAPI/ASGI adapter: request context, problem+json errors, health routes.

The adapter only translates FastAPI's and Starlette's habits into the kit's
conventions (see :mod:`service_kit.problems`, :mod:`service_kit.health`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service_kit import drain, exposition, health
from service_kit.client import ServiceUnavailableError
from service_kit.cycle import RequestCycle, problem_for, sqlalchemy_unavailable
from service_kit.loopmonitor import LoopMonitor
from service_kit.metrics import UNMATCHED_ROUTE
from service_kit.problems import (
    PROBLEM_CONTENT_TYPE,
    FieldError,
    Problem,
    ProblemError,
    body_too_large,
    malformed_body,
    validation_problem,
)
from service_kit.telemetry import Telemetry
from service_kit.tracing import UNTRACED_URLS, flush, tracer_provider

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
    """Outermost app middleware: the kit's request cycle (:mod:`service_kit.cycle`) in ASGI.

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

        def header(name: str) -> str | None:
            return headers.get(name.lower().encode(), b"").decode("latin-1") or None

        cycle = RequestCycle(self.telemetry, scope["method"], scope["path"], header)
        if cycle.state is not None and self.monitor is not None:
            self.monitor.request_started(cycle.state, scope)
        status = 500
        response_started = False
        received = 0
        sent = 0
        declared = headers.get(b"content-length")
        refusal = cycle.refusal(
            has_body=(declared is not None and declared not in (b"", b"0"))
            or b"transfer-encoding" in headers,
            content_type=header("content-type"),
            content_length=int(declared) if declared is not None and declared.isdigit() else None,
            max_body_bytes=self.max_body_bytes,
        )

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # FastAPI re-raises HTTPException from body parsing (anything else becomes 400).
                    raise HTTPException(413, body_too_large(self.max_body_bytes).detail)
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
                extra = cycle.response_headers(content_type, (k.decode("latin-1") for k, _ in raw))
                message["headers"] = [*raw, *_encoded(extra)]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        if refusal is not None:
            sent = await _send_problem(scope, send, cycle, refusal)
            self._finish(cycle, scope, refusal.status, received, sent)
            return
        try:
            await self.app(scope, limited_receive, send_with_id)
        except Exception as exc:
            if response_started:
                error_log.exception("error after the response started")
                raise
            problem = cycle.problem_for(exc, sqlalchemy_unavailable())
            status = problem.status
            sent = await _send_problem(scope, send, cycle, problem)
        finally:
            self._finish(cycle, scope, status, received, sent)

    def _finish(
        self, cycle: RequestCycle, scope: Scope, status: int, received: int, sent: int
    ) -> None:
        if cycle.state is not None and self.monitor is not None:
            self.monitor.request_finished()
        cycle.finish(
            route=route_template(scope), status=status, request_bytes=received, response_bytes=sent
        )
        cycle.close()


def _encoded(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


async def _send_problem(scope: Scope, send: Send, cycle: RequestCycle, problem: Problem) -> int:
    problem.instance = problem.instance or scope["path"]
    body = json.dumps(problem.as_dict()).encode()
    response_headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *_encoded(problem.headers),
        *_encoded(cycle.response_headers(PROBLEM_CONTENT_TYPE, problem.headers)),
    ]
    await send(
        {"type": "http.response.start", "status": problem.status, "headers": response_headers}
    )
    await send({"type": "http.response.body", "body": body})
    return len(body)


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


async def _on_kit_error(request: Request, exc: Exception) -> ProblemResponse:
    """A problem raised on purpose, a peer or the database unavailable (see :func:`problem_for`)."""
    problem = problem_for(exc, request.method, request.url.path, sqlalchemy_unavailable())
    return problem_response(problem, request)


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
    for kind in (ProblemError, ServiceUnavailableError, *sqlalchemy_unavailable()):
        app.add_exception_handler(kind, _on_kit_error)
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
    body, content_type = exposition.render(request.headers.get("accept"))
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
