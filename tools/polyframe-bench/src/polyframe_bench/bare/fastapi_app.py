"""Bare FastAPI (``uvicorn --factory polyframe_bench.bare.fastapi_app:create_app``)."""

from __future__ import annotations

from fastapi import FastAPI

from polyframe_bench.bare import HELLO


def create_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return HELLO

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ok"}

    return app
