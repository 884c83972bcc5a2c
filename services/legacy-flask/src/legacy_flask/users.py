"""The users-service gateway (a Flask extension): token keys and "is this user active?".

One service client per process, created in ``init_app`` (after gunicorn's
fork, since each worker builds its own app), so connections are reused
across requests and threads.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Flask, current_app

from legacy_flask.settings import current_settings
from service_kit.client import ClientConfig, ServiceClient, ServiceUnavailableError
from service_kit.jwks import CachedJwks
from service_kit.tokens import TokenVerifier

JWKS_PATH = "/api/users/.well-known/jwks.json"


class UsersGateway:
    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, client: ServiceClient | None = None) -> None:
        settings = current_settings(app)
        client = client or ServiceClient(
            ClientConfig.for_service(settings, "users-fastapi", settings.users_url),
            telemetry=app.extensions["polyframe.telemetry"],
        )
        jwks = CachedJwks(
            lambda: _fetch_jwks(client),
            max_age_seconds=settings.jwks_max_age_seconds,
            min_refetch_interval_seconds=settings.jwks_min_refetch_seconds,
        )
        verifier = TokenVerifier(jwks, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
        app.extensions["polyframe.users"] = _State(client, verifier)

    @property
    def _state(self) -> _State:
        state: _State = current_app.extensions["polyframe.users"]
        return state

    @property
    def verifier(self) -> TokenVerifier:
        return self._state.verifier

    def is_active(self, user_id: uuid.UUID) -> bool:
        """Ask the users service; a user it does not know is not active."""
        response = self._state.client.request("GET", f"/api/users/{user_id}")
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            # 401/403 here mean our own credential is wrong: an outage, not the caller's fault.
            raise ServiceUnavailableError("users-fastapi", f"HTTP {response.status_code}")
        return bool(response.json().get("is_active"))


class _State:
    def __init__(self, client: ServiceClient, verifier: TokenVerifier) -> None:
        self.client = client
        self.verifier = verifier


def _fetch_jwks(client: ServiceClient) -> dict[str, Any]:
    response = client.request("GET", JWKS_PATH)
    if response.status_code != 200:
        raise ServiceUnavailableError("users-fastapi", f"JWKS answered HTTP {response.status_code}")
    document: dict[str, Any] = response.json()
    return document
