"""Who is calling, one type for every service: a user (by access token) or a peer service
(by credential, see :mod:`service_kit.credentials`) that may act for a staff member.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from service_kit.problems import unauthenticated
from service_kit.tokens import AccessClaims, InvalidTokenError, TokenVerifier

STAFF_ROLE = "staff"


@dataclass(frozen=True, slots=True)
class Principal:
    """A user (``user_id`` and ``role`` from their token) or a service (``service``, and
    ``acting_for`` when it names the staff member it acts for)."""

    user_id: uuid.UUID | None = None
    role: str | None = None
    service: str | None = None
    acting_for: str | None = None

    @classmethod
    def of_user(cls, claims: AccessClaims) -> Principal:
        """The user of verified claims; a subject that is no user id makes the token invalid."""
        try:
            user_id = uuid.UUID(claims.subject)
        except ValueError:
            raise unauthenticated("Invalid access token: bad subject") from None
        return cls(user_id=user_id, role=claims.role)

    @property
    def is_staff(self) -> bool:
        """Staff by token, or a service acting for a staff member."""
        return self.role == STAFF_ROLE or self.acting_for is not None

    @property
    def staff_name(self) -> str | None:
        """The staff member as the audit trail names them: who a service acts for, or
        ``user:<id>`` for a staff user's token; ``None`` for anyone else."""
        if self.acting_for:
            return self.acting_for
        return f"user:{self.user_id}" if self.role == STAFF_ROLE else None

    @property
    def actor_type(self) -> str:
        """The audit trail's actor type: ``service``, ``staff`` or ``user``."""
        if self.service:
            return "service"
        return "staff" if self.role == STAFF_ROLE else "user"

    @property
    def actor_id(self) -> str:
        """The audit trail's actor id: the service's name, the staff name, or the user id."""
        return self.service or self.staff_name or str(self.user_id)


def bearer_claims(authorization: str | None, verifier: TokenVerifier) -> AccessClaims:
    """The verified claims of ``Authorization: Bearer <token>``; a 401 problem otherwise.

    A verifier that cannot get its keys raises its own error (an outage: 503), not a 401.
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("A bearer access token is required")
    try:
        return verifier.verify(token.strip())
    except InvalidTokenError as exc:
        raise unauthenticated(f"Invalid access token: {exc}") from None


def user_principal(authorization: str | None, verifier: TokenVerifier) -> Principal:
    """The user of a valid bearer token (members and staff)."""
    return Principal.of_user(bearer_claims(authorization, verifier))
