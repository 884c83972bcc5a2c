"""The users service's one settings object (environment prefix ``USERS_``)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import ClassVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from service_kit.settings import (
    ProducerSettings,
    SettingsError,
    secret_required_outside_development,
)


class UsersSettings(ProducerSettings):
    model_config = SettingsConfigDict(env_prefix="USERS_", extra="ignore", validate_default=True)

    service_name: ClassVar[str] = "users-fastapi"

    #: SQLAlchemy async URL: ``sqlite+aiosqlite:///path`` (default) or
    #: ``postgresql+asyncpg://user:pass@host/db``.
    database_url: str = "sqlite+aiosqlite:///./.data/users-fastapi.db"
    #: Connection pool size per worker process (PostgreSQL).
    database_pool_size: int = Field(default=5, ge=1, le=100)
    #: PEM of the RSA key that signs access tokens (or ``USERS_JWT_PRIVATE_KEY_FILE``).
    #: In development an ephemeral key is generated when none is given.
    jwt_private_key: SecretStr | None = Field(
        default=None, json_schema_extra=secret_required_outside_development()
    )
    #: Extra public keys (PEM files) still published in the JWKS after a rotation.
    jwt_previous_public_key_files: list[Path] = Field(default_factory=list)
    jwt_issuer: str = "polyframe-users"
    jwt_audience: str = "polyframe"
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=86_400)
    #: Argon2id cost; tests lower it, production keeps the library's defaults.
    argon2_time_cost: int = Field(default=3, ge=1)
    #: Argon2 needs at least 8 KiB per lane and the hasher uses 4 lanes (the library's
    #: default parallelism): anything below 32 would only fail later, at the first hash.
    argon2_memory_cost_kib: int = Field(default=65_536, ge=32)
    #: Password hashes computed at once per process (threads off the event loop): bounds
    #: their memory (``argon2_memory_cost_kib`` each) and CPU; about the number of cores.
    argon2_concurrency: int = Field(default=2, ge=1, le=64)
    #: Services that may act for a staff member (deactivate/reactivate users).
    acting_services: frozenset[str] = frozenset({"admin-django"})
    max_body_bytes: int = Field(default=65_536, ge=1_024)
    #: Rate limits (``users_fastapi.ratelimit``; windows in whole seconds, a fraction rounds
    #: up). Log-in attempts and registrations per client address per ``ip_limit_window_seconds``.
    login_limit_per_ip: int = Field(default=30, ge=1)
    register_limit_per_ip: int = Field(default=10, ge=1)
    ip_limit_window_seconds: float = Field(default=60, gt=0, le=86_400)
    #: Failed log-ins per account (e-mail) per ``login_failure_window_seconds``; over it,
    #: log-ins to that account are refused (429) until the window ends.
    login_failure_limit: int = Field(default=5, ge=1)
    login_failure_window_seconds: float = Field(default=900, gt=0, le=86_400)
    #: Keys (addresses, accounts) each counter remembers at most in process (least recent
    #: dropped).
    rate_limit_max_keys: int = Field(default=100_000, ge=1)
    #: Where the counters live: empty, in each worker process (N workers or replicas allow N
    #: times a limit); ``redis://host:port/db`` (or ``rediss://``), shared by all of them.
    #: A Redis that is down degrades to the in-process counters, never to an error.
    rate_limit_storage_url: str = Field(default="", pattern=r"^(rediss?://.+)?$")

    @cached_property
    def signing_key(self) -> rsa.RSAPrivateKey:
        if self.jwt_private_key is None:
            if not self.is_development:
                raise SettingsError("USERS_JWT_PRIVATE_KEY is required outside development")
            return rsa.generate_private_key(public_exponent=65_537, key_size=2048)
        key = serialization.load_pem_private_key(
            self.jwt_private_key.get_secret_value().encode(), password=None
        )
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SettingsError("USERS_JWT_PRIVATE_KEY must be an RSA private key (PEM)")
        return key

    @cached_property
    def previous_public_keys(self) -> list[rsa.RSAPublicKey]:
        keys: list[rsa.RSAPublicKey] = []
        for path in self.jwt_previous_public_key_files:
            key = serialization.load_pem_public_key(path.read_bytes())
            if not isinstance(key, rsa.RSAPublicKey):
                raise SettingsError(f"{path}: not an RSA public key")
            keys.append(key)
        return keys
