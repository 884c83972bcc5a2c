"""The orders service's one settings object (environment prefix ``ORDERS_``), and the one
typed way the app reaches it: :func:`attach_settings` in the factory, :func:`current_settings`."""

from __future__ import annotations

from typing import ClassVar

from flask import Flask, current_app
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from service_kit.settings import ProducerSettings, secret_required_outside_development


class OrdersSettings(ProducerSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore", validate_default=True)

    service_name: ClassVar[str] = "legacy-flask"

    #: SQLAlchemy URL: ``sqlite:///path`` (default) or ``postgresql+psycopg://user:pass@host/db``.
    database_url: str = "sqlite:///./.data/legacy-flask.db"
    #: Connections per worker process; gunicorn threads share them (PostgreSQL).
    database_pool_size: int = Field(default=8, ge=1, le=100)
    #: Base URL of the users service (JWKS and "is this user active?").
    users_url: str = "http://127.0.0.1:8101"
    #: This service's credential towards the users service.
    service_secret: SecretStr | None = Field(
        default=None, json_schema_extra=secret_required_outside_development()
    )
    jwt_issuer: str = "polyframe-users"
    jwt_audience: str = "polyframe"
    #: Seconds the JWKS is cached before it is refreshed.
    jwks_max_age_seconds: float = Field(default=600, gt=0)
    #: An unknown ``kid`` refetches the JWKS at most this often.
    jwks_min_refetch_seconds: float = Field(default=30, ge=0)
    #: Services that may act for a staff member (read any order, refund).
    acting_services: frozenset[str] = frozenset({"admin-django"})
    #: A customer may cancel an order within this many seconds of placing it.
    cancel_window_seconds: int = Field(default=1800, ge=0)
    max_body_bytes: int = Field(default=65_536, ge=1_024)


_EXTENSION = "polyframe.settings"


def attach_settings(app: Flask, settings: OrdersSettings) -> None:
    """Make ``settings`` the app's (the factory does this before any extension's init_app)."""
    app.extensions[_EXTENSION] = settings


def current_settings(app: Flask | None = None) -> OrdersSettings:
    """The settings of ``app``, or of the current app."""
    settings: OrdersSettings = (app or current_app).extensions[_EXTENSION]
    return settings
