"""Who is calling: a user (bearer token, verified locally) or a service (its credential).

Every view names the caller it accepts through one of these functions;
nothing is open by omission.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from flask import current_app, request

from legacy_flask.extensions import users
from service_kit.credentials import ACTING_FOR_HEADER, authenticate_service, is_basic
from service_kit.problems import forbidden, unauthenticated
from service_kit.tokens import InvalidTokenError

STAFF_ROLE = "staff"


@dataclass(frozen=True, slots=True)
class Caller:
    """A user (``user_id`` set) or a service (``service`` set, maybe acting for staff)."""

    user_id: uuid.UUID | None = None
    role: str | None = None
    service: str | None = None
    acting_for: str | None = None

    @property
    def is_staff(self) -> bool:
        """Staff by token, or a service acting for a staff member."""
        return self.role == STAFF_ROLE or self.acting_for is not None

    @property
    def staff_name(self) -> str | None:
        if self.acting_for:
            return self.acting_for
        return f"user:{self.user_id}" if self.role == STAFF_ROLE else None


def _user_from_token() -> Caller:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("A bearer access token is required")
    try:
        # Keys come from the cached JWKS; if it was never fetched and the users service
        # is down, ServiceUnavailableError propagates and the caller gets a 503.
        claims = users.verifier.verify(token.strip())
    except InvalidTokenError as exc:
        raise unauthenticated(f"Invalid access token: {exc}") from None
    try:
        user_id = uuid.UUID(claims.subject)
    except ValueError:
        raise unauthenticated("Invalid access token: bad subject") from None
    return Caller(user_id=user_id, role=claims.role)


def current_user() -> Caller:
    """A user with a valid token (members and staff)."""
    return _user_from_token()


def current_caller() -> Caller:
    """A user with a valid token, or a trusted service."""
    authorization = request.headers.get("Authorization")
    if is_basic(authorization):
        settings = current_app.extensions["polyframe.settings"]
        service = authenticate_service(
            authorization,
            request.headers.get(ACTING_FOR_HEADER),
            trusted=settings.trusted_services,
            may_act=settings.acting_services,
        )
        return Caller(service=service.name, acting_for=service.acting_for)
    return _user_from_token()


def current_staff() -> Caller:
    """Staff: a staff user's token, or a service acting for a staff member."""
    caller = current_caller()
    if not caller.is_staff:
        raise forbidden("Only staff may do this")
    return caller
