"""Passwords (argon2id) and access tokens (RS256 JWT with ``kid``) for the users service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from service_kit.tokens import TokenVerifier, key_id, public_jwk, sign_access_token
from users_fastapi.settings import UsersSettings


class Passwords:
    """argon2id, run off the event loop.

    A hash costs ~100 ms of CPU and ``argon2_memory_cost_kib`` of memory. On the loop it
    would stall every other request of the worker for that long (the blocked-loop
    failure this platform detects), so it runs in worker threads (argon2 releases the
    GIL), at most ``argon2_concurrency`` at once per process: that bounds the memory
    (64 MiB each by default) and leaves CPU for everything else; further log-ins wait
    their turn without blocking anything.
    """

    def __init__(self, settings: UsersSettings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_cost_kib
        )
        self._concurrency = settings.argon2_concurrency
        self._limiter: anyio.CapacityLimiter | None = None
        # Verified against when the e-mail is unknown, so timing does not reveal accounts.
        self._decoy = self._hasher.hash(uuid.uuid4().hex)

    def _threads(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # created on the loop that uses it
            self._limiter = anyio.CapacityLimiter(self._concurrency)
        return self._limiter

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password, limiter=self._threads())

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await anyio.to_thread.run_sync(
            self._verify, password_hash, password, limiter=self._threads()
        )

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._decoy, password) and bool(
                password_hash
            )
        except (VerificationError, InvalidHashError):
            return False


class KeyRing:
    """The current signing key, plus earlier public keys still accepted after a rotation."""

    def __init__(self, settings: UsersSettings) -> None:
        self.private_key: RSAPrivateKey = settings.signing_key
        self.kid = key_id(self.private_key.public_key())
        self._public: dict[str, RSAPublicKey] = {self.kid: self.private_key.public_key()}
        for previous in settings.previous_public_keys:
            self._public.setdefault(key_id(previous), previous)
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.ttl = timedelta(seconds=settings.access_token_ttl_seconds)
        self.verifier = TokenVerifier(self._public.get, issuer=self.issuer, audience=self.audience)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(key, kid) for kid, key in self._public.items()]}

    def issue(self, *, subject: str, email: str, role: str) -> tuple[str, int]:
        now = datetime.now(UTC)
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "email": email,
            "role": role,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": uuid.uuid4().hex,
        }
        return sign_access_token(self.private_key, self.kid, claims), int(self.ttl.total_seconds())
