"""The admin service's one settings object (environment prefix ``ADMIN_``).

Django's own settings module (``admin_django.settings``) is derived from it,
so every value comes from the environment with one prefix, and the kit's
rules for secrets apply (required outside development, no placeholders).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from service_kit.settings import ServiceSettings, secret_required_outside_development


class AdminSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ADMIN_", extra="ignore", validate_default=True)

    service_name: ClassVar[str] = "admin-django"

    #: ``sqlite:///path`` (default) or ``postgresql://user:pass@host/db`` (psycopg 3).
    database_url: str = "sqlite:///./.data/admin-django.db"
    #: Django's SECRET_KEY (sessions, CSRF). Generated locally by ``make up``.
    secret_key: SecretStr | None = Field(
        default=None, json_schema_extra=secret_required_outside_development()
    )
    #: This service's credential towards the users and orders services.
    service_secret: SecretStr | None = Field(
        default=None, json_schema_extra=secret_required_outside_development()
    )
    allowed_hosts: list[str] = Field(default_factory=lambda: ["localhost", "127.0.0.1"])
    #: Origins allowed to POST forms (the ingress URL), e.g. ``["https://admin.example.com"]``.
    csrf_trusted_origins: list[str] = Field(default_factory=list)
    users_url: str = "http://127.0.0.1:8101"
    orders_url: str = "http://127.0.0.1:8102"
    #: Services allowed to write audit events (their credentials are in trusted_services).
    audit_producers: frozenset[str] = frozenset({"users-fastapi", "legacy-flask"})
    #: Largest batch ``POST /api/audit/events`` accepts.
    audit_max_batch: int = Field(default=500, ge=1, le=5_000)
    max_body_bytes: int = Field(default=2_097_152, ge=1_024)
    #: Where ``collectstatic`` puts the admin's CSS and JS (served by WhiteNoise).
    static_root: str = "./.data/admin-static"
