"""Alembic environment of the orders service (synchronous engine)."""

from __future__ import annotations

from alembic import context

from legacy_flask import models  # noqa: F401 - registers the tables on Base.metadata
from legacy_flask.db import Base, make_engine

config = context.config

if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
