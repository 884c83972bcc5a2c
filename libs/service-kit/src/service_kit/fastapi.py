"""FastAPI/ASGI adapter: request context, problem+json errors, health routes.

The adapter only translates FastAPI's and Starlette's habits into the kit's
conventions (see :mod:`service_kit.problems`, :mod:`service_kit.health`).
"""

from __future__ import annotations

import asyncio
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
from service_kit.cycle import (
    BODY_METHODS,
    IDEMPOTENT_METHODS,
    RequestCycle,
    problem_for,
    retries_read,
    sqlalchemy_disconnected,
    sqlalchemy_unavailable,
    utf8_query_string,
)
from service_kit.limits import InputLimitError, InputLimits, check_json
from service_kit.loopmonitor import LoopMonitor
from service_kit.metrics import UNMATCHED_ROUTE
from service_kit.problems import (
    INPUT_LIMIT,
    PROBLEM_CONTENT_TYPE,
    FieldError,
    Problem,
    ProblemError,
    body_too_large,
    incomplete_body,
    malformed_body,
    validation_problem,
)
from service_kit.telemetry import Telemetry
from service_kit.tracing import UNTRACED_URLS, flush, tracer_provider

error_log = logging.getLogger("service_kit.errors")


#: Scope key of a request run a second time (its first run met a dropped connection).
RETRIED = "polyframe.retried"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_CONTENT_TYPE


def request_path(request: Request) -> str:
    """The path the client asked for (percent-decoded), from the scope: never
    ``request.url``, which decodes the query string as UTF-8 and raises for other bytes."""
    return str(request.scope["path"])


def problem_response(problem: Problem, request: Request | None = None) -> ProblemResponse:
    if problem.instance is None and request is not None:
        problem.instance = request_path(request)
    return ProblemResponse(problem.as_dict(), status_code=problem.status, headers=problem.headers)


def utf8_query(scope: Scope) -> Scope:
    """``scope`` with a query string that decodes as UTF-8 (:func:`utf8_query_string`)."""
    encoded = utf8_query_string(scope.get("query_string", b""))
    return scope if encoded is None else {**scope, "query_string": encoded}


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
        limits: InputLimits | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.limits = limits or InputLimits()
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
        has_body = (
            declared is not None and declared not in (b"", b"0")
        ) or b"transfer-encoding" in headers
        refusal = cycle.refusal(
            has_body=has_body,
            content_type=header("content-type"),
            content_length=int(declared) if declared is not None and declared.isdigit() else None,
            max_body_bytes=self.max_body_bytes,
            limits=self.limits,
            query=scope.get("query_string", b""),
            headers=scope.get("headers") or (),
        )
        #: Messages already received (a JSON body read and checked here), handed on first.
        pending: list[Message] = []
        if refusal is None and has_body and scope["method"] in BODY_METHODS:
            # The kit checks a JSON body before the route's body model parses it (limits).
            try:
                message, refusal = await self._read_json(receive, cycle)
            except Exception as exc:  # a fault of the scan itself: answered, and counted
                message = {"type": "http.request", "body": b""}
                refusal = cycle.problem_for(exc, sqlalchemy_unavailable())
            received = len(message.get("body", b""))
            pending.append(message)

        async def limited_receive() -> Message:
            nonlocal received
            if pending:
                return pending.pop()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    cycle.rejected("body_size")
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
        pristine = dict(scope)
        try:
            try:
                await self.app(scope, limited_receive, send_with_id)
            except Exception as exc:
                if response_started or not retries_read(scope["method"], exc, retried=False):
                    raise
                # Once, on a fresh copy of the scope (routing and FastAPI wrote into this one).
                scope = {**pristine, RETRIED: True}
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

    async def _read_json(
        self, receive: Receive, cycle: RequestCycle
    ) -> tuple[Message, Problem | None]:
        """The whole body, as one message, and the problem it makes (over the size or a
        structural limit: :mod:`service_kit.limits`), if any. A client that disconnects
        before its body ended is answered (and counted) as a 400, not as the 500 of the
        ``ClientDisconnect`` its handler would raise."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message, incomplete_body()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                cycle.rejected("body_size")
                return {"type": "http.request", "body": b""}, body_too_large(self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            check_json(body, self.limits)
        except InputLimitError as exc:
            cycle.rejected(exc.limit)
            return {"type": "http.request", "body": body}, exc.problem
        return {"type": "http.request", "body": body, "more_body": False}, None

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
    # A 413 is the body limit (met while a route read its body): the limits' type.
    kind = INPUT_LIMIT if exc.status_code == 413 else "about:blank"
    return problem_response(
        Problem(status=exc.status_code, detail=detail, headers=dict(exc.headers or {}), type=kind),
        request,
    )


async def _on_kit_error(request: Request, exc: Exception) -> ProblemResponse:
    """A problem raised on purpose, a peer or the database unavailable (see :func:`problem_for`).

    A read that met a dropped connection goes on to :class:`RequestContextMiddleware`,
    which runs it once more (:func:`~service_kit.cycle.retries_read`).
    """
    if (
        request.method in IDEMPOTENT_METHODS
        and RETRIED not in request.scope
        and sqlalchemy_disconnected()(exc)
    ):
        raise exc
    problem = problem_for(exc, request.method, request_path(request), sqlalchemy_unavailable())
    return problem_response(problem, request)


def install(
    app: FastAPI,
    *,
    max_body_bytes: int = 1_048_576,
    telemetry: Telemetry | None = None,
    drain_seconds: float = 0.0,
    limits: InputLimits | None = None,
) -> None:
    """Give ``app`` the kit's error shape and request context, and ``telemetry`` if given.

    Every request is checked against ``limits`` (default: the kit's defaults) before the
    app parses it (:mod:`service_kit.limits`).

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
        limits=limits,
    )
    app.add_api_route("/metrics", _metrics, methods=["GET"], include_in_schema=False)
    _query_made_utf8_first(app)


def _query_made_utf8_first(app: FastAPI) -> None:
    """:func:`utf8_query` before anything else sees the request: OpenTelemetry's middleware,
    outside the kit's, also decodes the query as UTF-8 and answered 500 to raw bytes in it
    (with tracing on, as in every deployment). Starlette builds its middleware stack at the
    first request, through ``build_middleware_stack`` (which the instrumentation wraps too):
    the stack it builds is wrapped once more, outermost."""
    build = app.build_middleware_stack

    def build_with_utf8_query() -> ASGIApp:
        return Utf8QueryFirst(build())

    app.build_middleware_stack = build_with_utf8_query  # type: ignore[method-assign]


class Utf8QueryFirst:
    """The outermost middleware: :func:`utf8_query`. A class with ``app``, as every other
    layer: FastAPI walks the built stack through ``app`` to find OpenTelemetry's middleware
    (and then starts no server span of its own); a plain function hid it, two spans."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(utf8_query(scope) if scope["type"] == "http" else scope, receive, send)


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

    The cold start is recorded in ``telemetry`` when the checks first pass: run by the app
    itself right after its lifespan has started (:func:`_check_when_started`), or at the
    first ``/readyz`` that passes, whichever comes first.
    """
    if telemetry is not None and telemetry.enabled:
        _check_when_started(app, readiness, telemetry)

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


def _check_when_started(
    app: FastAPI,
    readiness: Callable[[Request], Mapping[str, Callable[[], Awaitable[str | None]]]],
    telemetry: Telemetry,
) -> None:
    """Around the lifespan: once the app has started, its readiness checks are run until
    they pass, and the cold start recorded (the first time within the start-up, then from a
    task, cancelled at shutdown)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with inner(app) as state:
            # The checks read the app (its engine, its state), as /readyz does.
            scope = {"type": "http", "app": app, "headers": [], "state": dict(state or {})}
            request = Request(scope)

            # Once within the start-up (usually ready then: nothing else runs on the loop
            # meanwhile); if not, again from a task until ready.
            if await health.check_until_ready(lambda: readiness(request), timeout_seconds=0):
                telemetry.mark_ready()
                yield state
                return
            stop = asyncio.Event()

            async def check() -> None:
                if await health.check_until_ready(lambda: readiness(request), stop=stop):
                    telemetry.mark_ready()

            task = asyncio.create_task(check(), name="polyframe-cold-start")
            try:
                yield state
            finally:
                stop.set()
                task.cancel()
                # Ends at its next pause at the latest (see check_until_ready).
                await asyncio.wait({task}, timeout=max(health.SELF_CHECK_PAUSES) * 2)

    app.router.lifespan_context = lifespan
