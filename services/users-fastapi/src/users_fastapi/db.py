"""Async database access: engine per app (created in the lifespan), one session per request."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from service_kit import sqla

MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    pass


def create_engine(database_url: str, pool_size: int = 5) -> AsyncEngine:
    url, options = sqla.engine_options(database_url, pool_size=pool_size)
    engine = create_async_engine(url, **options)
    sqla.prepare(engine.sync_engine)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    return async_sessionmaker(engine, expire_on_commit=False)
