"""The database extension: one engine per process, one session per request on ``g``."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, current_app, g
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from legacy_flask.settings import current_settings
from service_kit import flask as kit_flask
from service_kit import sqla

MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    pass


def make_engine(database_url: str, pool_size: int = 8) -> Engine:
    url, options = sqla.engine_options(database_url, pool_size=pool_size)
    engine = create_engine(url, **options)
    sqla.prepare(engine)
    return engine


class Database:
    """Flask extension: ``db.session`` is this request's session, closed at teardown."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        settings = current_settings(app)
        engine = make_engine(settings.database_url, settings.database_pool_size)
        telemetry = app.extensions.get("polyframe.telemetry")
        if telemetry is not None:
            sqla.instrument(engine, telemetry)
        app.extensions["polyframe.db"] = (engine, sessionmaker(engine, expire_on_commit=False))
        app.teardown_appcontext(self._close_session)
        # A read retried after a dropped connection starts again with a new session.
        kit_flask.on_read_retry(app, lambda: self._close_session(None))

    @property
    def engine(self) -> Engine:
        engine: Engine = current_app.extensions["polyframe.db"][0]
        return engine

    @property
    def session(self) -> Session:
        if "db_session" not in g:
            factory = current_app.extensions["polyframe.db"][1]
            g.db_session = factory()
        session: Session = g.db_session
        return session

    @staticmethod
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            with sqla.lost_connection_ignored():
                session.close()
