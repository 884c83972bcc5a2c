"""The admin service's one settings object (environment prefix ``ADMIN_``).

Django's own settings module (``admin_django.settings``) is derived from it,
so every value comes from the environment with one prefix, and the kit's
rules for secrets apply (required outside development, no placeholders).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from service_kit.settings import (
    Environment,
    FormSettings,
    secret_required_outside_development,
)


class AdminSettings(FormSettings):
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
    #: The session and CSRF cookies are ``Secure`` (a browser or client sends them back over
    #: HTTPS only). Unset: Secure outside development. ``false`` only behind a plain-HTTP ingress
    #: (a developer's kind cluster); production then logs a warning at every start.
    secure_cookies: bool | None = None
    users_url: str = "http://127.0.0.1:8101"
    orders_url: str = "http://127.0.0.1:8102"
    #: Services allowed to write audit events (their credentials are in trusted_services).
    audit_producers: frozenset[str] = frozenset({"users-fastapi", "legacy-flask"})
    #: Largest batch ``POST /api/audit/events`` accepts.
    audit_max_batch: int = Field(default=500, ge=1, le=5_000)
    max_body_bytes: int = Field(default=2_097_152, ge=1_024)
    #: Where ``collectstatic`` puts the admin's CSS and JS (served by WhiteNoise).
    static_root: str = "./.data/admin-static"

    @model_validator(mode="after")
    def _batch_fits_the_json_limit(self) -> AdminSettings:
        """A batch is one JSON array: a batch limit above the array limit could never be used
        (every such batch refused by the structural limit first)."""
        if self.audit_max_batch > self.json_max_elements:
            raise ValueError(
                f"ADMIN_AUDIT_MAX_BATCH={self.audit_max_batch} is above "
                f"ADMIN_JSON_MAX_ELEMENTS={self.json_max_elements}: raise "
                "ADMIN_JSON_MAX_ELEMENTS to at least the batch size"
            )
        return self

    @property
    def cookies_secure(self) -> bool:
        """Whether the session and CSRF cookies are Secure: ``secure_cookies``, or (unset) not
        in development."""
        return not self.is_development if self.secure_cookies is None else self.secure_cookies

    def insecure_cookies_warning(self) -> str | None:
        """What a start in production with cookies that are not Secure says (else None)."""
        if self.environment is Environment.PRODUCTION and not self.cookies_secure:
            return (
                "ADMIN_SECURE_COOKIES=false in production: the session and CSRF cookies are "
                "not Secure and travel over plain HTTP; only for a plain-HTTP ingress on a "
                "developer's cluster, never where staff log in over a network"
            )
        return None
