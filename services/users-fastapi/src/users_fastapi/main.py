"""The users service application: ``create_app(settings)``.

Serve with ``uvicorn --factory users_fastapi.main:create_app``; the engine,
key ring and password hasher are created in the lifespan, never at import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from service_kit import fastapi as kit
from service_kit import sqla, telemetry
from service_kit.logs import configure_logging
from service_kit.migrations import require_heads, script_heads
from users_fastapi.db import MIGRATIONS, create_engine, session_factory
from users_fastapi.deps import AppState
from users_fastapi.ratelimit import RateLimits
from users_fastapi.routers import drills, users
from users_fastapi.security import KeyRing, Passwords
from users_fastapi.settings import UsersSettings


def create_app(settings: UsersSettings | None = None) -> FastAPI:
    settings = settings or UsersSettings()
    configure_logging(settings.service_name, settings.log_level)
    instruments = telemetry.for_service(settings, "fastapi")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url, settings.database_pool_size)
        sqla.instrument(engine.sync_engine, instruments)
        app.state.users = AppState(
            settings=settings,
            sessions=session_factory(engine),
            passwords=Passwords(settings),
            keys=KeyRing(settings),
            migration_heads=script_heads(MIGRATIONS),
            limits=RateLimits.from_settings(settings, instruments.labels),
        )
        app.state.engine = engine
        try:
            yield
        finally:
            await app.state.users.limits.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Polyframe users",
        version="0.1.0",
        summary="Accounts, password log-in, access tokens and their public keys.",
        lifespan=lifespan,
        openapi_url=f"{users.PREFIX}/openapi.json",
        docs_url=f"{users.PREFIX}/docs",
        redoc_url=None,
    )
    kit.install(
        app,
        max_body_bytes=settings.max_body_bytes,
        telemetry=instruments,
        drain_seconds=settings.drain_seconds,
        limits=settings.input_limits,
    )
    kit.add_health_routes(app, settings.service_name, _readiness_checks, instruments)
    app.include_router(users.router)
    if settings.drills:
        app.include_router(drills.router)
    return app


def _readiness_checks(request: Request) -> Mapping[str, Callable[[], Awaitable[str | None]]]:
    state: AppState = request.app.state.users

    async def database() -> str | None:
        async with request.app.state.engine.connect() as connection:
            revision: str = await connection.run_sync(require_heads, state.migration_heads)
            return revision

    return {"database": database}
