"""FastAPI floor (``uvicorn --factory polyframe_bench.floor.fastapi_app:create_app``), asyncpg."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, HTTPException

from polyframe_bench.floor import FASTAPI_POOL_MAX, USER_SQL, database_url, user_public


def create_app() -> FastAPI:
    pools: list[asyncpg.Pool] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # At most as many connections as the service's pool (SERVICE_POOLS); idle ones
        # closed soon: the bench's two platforms share the server's connections.
        pool = await asyncpg.create_pool(
            database_url(),
            min_size=1,
            max_size=FASTAPI_POOL_MAX,
            max_inactive_connection_lifetime=5,
        )
        pools.append(pool)
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)

    @app.get("/users/{user_id}")
    async def read_user(user_id: uuid.UUID) -> dict[str, Any]:
        row = await pools[0].fetchrow(USER_SQL, user_id)
        if row is None:
            raise HTTPException(404)
        return user_public(row)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        await pools[0].fetchval("SELECT 1")
        return {"status": "ok"}

    return app
