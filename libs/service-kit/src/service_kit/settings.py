"""The settings base every Polyframe service extends: a prefix per service, secrets required
outside development, placeholders refused, ``<NAME>_FILE`` for mounted secrets.
Design: docs/architecture.md, "Settings and secrets".
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service_kit import drain
from service_kit.limits import InputLimits

_LIMITS = InputLimits()

#: Values that mean "somebody forgot to set this". Compared case-insensitively.
PLACEHOLDER_SECRETS: frozenset[str] = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "secret",
        "password",
        "placeholder",
        "todo",
        "xxx",
        "example",
        "insecure",
        "dev",
        "test",
        "default",
    }
)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class SettingsError(ValueError):
    """A setting is missing or unacceptable; the message names the variable."""


class ServiceSettings(BaseSettings):
    """Fields every service shares. Subclasses set ``service_name`` and the prefix."""

    # hide_input_in_errors: a validation error must not echo the input, which holds the
    # other (real) secrets, into the log of a service that fails to start.
    model_config = SettingsConfigDict(
        extra="ignore", validate_default=True, hide_input_in_errors=True
    )

    #: Stable service name, used in logs, metrics, audit events and credentials.
    service_name: ClassVar[str] = "service"

    environment: Environment = Environment.PRODUCTION
    log_level: str = "INFO"
    #: Credentials of the services allowed to call this one: ``{"legacy-flask": "<secret>"}``
    #: (JSON in the environment).
    trusted_services: dict[str, SecretStr] = Field(default_factory=dict)
    #: This service's own credential, presented to the services it calls.
    service_secret: SecretStr | None = None
    #: Timeout (seconds) of every call through the service client.
    client_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    #: Attempts (first try included) for idempotent calls through the service client.
    client_max_attempts: int = Field(default=2, ge=1, le=10)
    #: Seconds a server keeps serving after SIGTERM while ``/readyz`` already fails, so
    #: that traffic is routed elsewhere before it stops accepting (0: stop at once). Under
    #: half the servers' graceful shutdown, which it is part of (gunicorn's master counts
    #: from SIGTERM), so that requests in flight keep time to finish.
    drain_seconds: float = Field(default=2.0, ge=0, lt=drain.MAX_SECONDS)
    #: Metrics, traces and runtime probes, all on or all off (off: to measure their cost).
    instrumentation: bool = True
    #: More runs of one SQL shape within one request than this are reported as an N+1.
    db_repeated_query_threshold: int = Field(default=10, ge=2, le=10_000)
    #: Fault drills: routes that block the event loop, hold a worker thread or run an N+1
    #: query pattern on purpose, to see the dashboards and alerts react. Never in production.
    drills: bool = False
    #: Structural limits of every request, checked before it is parsed (service_kit.limits;
    #: README.md, "Security"). The body's size is each service's ``max_body_bytes``.
    json_max_depth: int = Field(default=_LIMITS.json_max_depth, ge=1, le=256)
    json_max_members: int = Field(default=_LIMITS.json_max_members, ge=1)
    json_max_elements: int = Field(default=_LIMITS.json_max_elements, ge=1)
    json_max_string_length: int = Field(default=_LIMITS.json_max_string_length, ge=1)
    #: At most 4000: Python's int() refuses more than 4300 digits (int_max_str_digits).
    json_max_number_length: int = Field(default=_LIMITS.json_max_number_length, ge=20, le=4_000)
    query_max_params: int = Field(default=_LIMITS.query_max_params, ge=1)
    query_max_repeats: int = Field(default=_LIMITS.query_max_repeats, ge=1)
    headers_max_count: int = Field(default=_LIMITS.headers_max_count, ge=10)
    header_max_bytes: int = Field(default=_LIMITS.header_max_bytes, ge=1_024)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        """Fill ``foo`` from the file named by ``<PREFIX>FOO_FILE`` when ``foo`` is unset."""
        if not isinstance(data, dict):
            return data
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            if not _is_secret_annotation(field.annotation):
                continue
            if data.get(name) not in (None, ""):
                continue
            file_var = f"{prefix}{name}_FILE".upper()
            path = os.environ.get(file_var)
            if path:
                try:
                    text = Path(path).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise SettingsError(
                        f"{file_var}: cannot read {path!r} ({exc.strerror})"
                    ) from exc
                # A map of secrets (trusted_services) is a JSON object in its file.
                if "dict" in repr(field.annotation):
                    try:
                        data[name] = json.loads(text)
                    except ValueError:
                        raise SettingsError(
                            f"{file_var}: {path!r} does not hold a JSON object"
                        ) from None
                else:
                    data[name] = text
        return data

    @model_validator(mode="after")
    def _secrets_are_real(self) -> Self:
        prefix = str(self.model_config.get("env_prefix", "")).upper()
        problems: list[str] = []
        for name, field in type(self).model_fields.items():
            if not _is_secret_annotation(field.annotation):
                continue
            value = getattr(self, name)
            values: list[tuple[str, SecretStr | None]]
            if isinstance(value, dict):
                values = [(f"{name}[{key}]", secret) for key, secret in value.items()]
            else:
                values = [(name, value)]
            for label, secret in values:
                variable = f"{prefix}{label.upper()}"
                if secret is None or not secret.get_secret_value():
                    if field.is_required() or self.environment is Environment.DEVELOPMENT:
                        continue
                    if _required_outside_development(field.json_schema_extra):
                        problems.append(f"{variable} is required outside development")
                    continue
                if secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                    problems.append(f"{variable} holds a placeholder value; set a real secret")
        if problems:
            raise SettingsError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _no_drills_in_production(self) -> Self:
        if self.drills and self.environment is Environment.PRODUCTION:
            prefix = str(self.model_config.get("env_prefix", "")).upper()
            raise SettingsError(f"{prefix}DRILLS must stay off in production")
        return self

    @property
    def is_development(self) -> bool:
        return self.environment is Environment.DEVELOPMENT

    @property
    def input_limits(self) -> InputLimits:
        """The structural limits these settings set, as the adapters take them."""
        return InputLimits.of(self)


class FormSettings(ServiceSettings):
    """A service with HTML forms (admin-django's console): Django counts their fields and
    files (``DATA_UPLOAD_MAX_NUMBER_FIELDS``, ``DATA_UPLOAD_MAX_NUMBER_FILES``, set from
    these); the kit's middleware answers a breach (service_kit.django)."""

    form_max_fields: int = Field(default=1_000, ge=10)
    form_max_files: int = Field(default=100, ge=0)


class ProducerSettings(ServiceSettings):
    """A service that writes audit events to its outbox (users-fastapi, legacy-flask)."""

    #: SQLAlchemy URL of the service's database (which holds the outbox).
    database_url: str
    #: Where the outbox dispatcher delivers audit events (admin-django).
    admin_url: str = "http://127.0.0.1:8103"
    #: ``host:port`` where the dispatcher process serves its ``/metrics`` and ``/livez``
    #: (none if unset).
    outbox_metrics_bind: str | None = None
    #: Seconds without a completed round after which the dispatcher's ``/livez`` fails; unset:
    #: derived from its poll interval and its calls' timeouts and backoff
    #: (``service_kit.outbox.dispatcher.default_stall_seconds``: 61.5 s with the defaults).
    outbox_stall_seconds: float | None = Field(default=None, gt=0)


def secret_required_outside_development() -> dict[str, Any]:
    """``json_schema_extra`` marker for a secret a service cannot run without in production."""
    return {"x-required-outside-development": True}


def _required_outside_development(extra: Any) -> bool:
    return isinstance(extra, dict) and bool(extra.get("x-required-outside-development"))


def _is_secret_annotation(annotation: Any) -> bool:
    text = repr(annotation)
    return "SecretStr" in text


__all__ = [
    "PLACEHOLDER_SECRETS",
    "Environment",
    "FormSettings",
    "ProducerSettings",
    "ServiceSettings",
    "SettingsError",
    "secret_required_outside_development",
]
