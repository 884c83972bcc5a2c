"""Service-to-service credentials.

A calling service presents HTTP Basic credentials ``<service-name>:<secret>``
(each service has its own secret, generated locally by ``make up`` and kept
in a Kubernetes Secret in a cluster). A service that acts for a staff member
names them in ``X-Acting-For``; the callee accepts that only from the services
it lists as allowed to act (admin-django), and records it in the audit trail.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Collection, Mapping

from pydantic import SecretStr

from service_kit.principal import Principal, user_principal
from service_kit.problems import ProblemError, forbidden, unauthenticated
from service_kit.tokens import TokenVerifier

ACTING_FOR_HEADER = "X-Acting-For"
_STAFF_NAME = re.compile(r"[A-Za-z0-9@.+_\-]{1,150}")


def basic_credential(name: str, secret: str) -> str:
    """The ``Authorization`` header value a service sends."""
    token = base64.b64encode(f"{name}:{secret}".encode()).decode("ascii")
    return f"Basic {token}"


def is_basic(authorization: str | None) -> bool:
    return bool(authorization) and authorization.split(" ", 1)[0].lower() == "basic"  # type: ignore[union-attr]


def authenticate_service(
    authorization: str | None,
    acting_for: str | None,
    *,
    trusted: Mapping[str, SecretStr],
    may_act: Collection[str] = (),
) -> Principal:
    """Check a Basic credential against the trusted services; raise a problem if wrong."""
    if not is_basic(authorization):
        raise unauthenticated("A service credential is required", scheme="Basic")
    assert authorization is not None
    try:
        decoded = base64.b64decode(authorization.split(" ", 1)[1].strip(), validate=True).decode()
        name, _, secret = decoded.partition(":")
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        raise unauthenticated("Malformed service credential", scheme="Basic") from None
    expected = trusted.get(name)
    # Compare even for unknown names so timing does not reveal which services exist.
    reference = expected.get_secret_value() if expected is not None else "\0" * 32
    if not hmac.compare_digest(secret.encode(), reference.encode()) or expected is None:
        raise unauthenticated("Unknown service or wrong service credential", scheme="Basic")
    if acting_for is None or acting_for == "":
        return Principal(service=name)
    if name not in may_act:
        raise forbidden(f"Service {name!r} may not act for a staff member")
    if not _STAFF_NAME.fullmatch(acting_for):
        raise ProblemError(400, f"{ACTING_FOR_HEADER} must be a staff user name")
    return Principal(service=name, acting_for=acting_for)


def authenticate_caller(
    authorization: str | None,
    acting_for: str | None,
    *,
    verifier: TokenVerifier,
    trusted: Mapping[str, SecretStr],
    may_act: Collection[str] = (),
) -> Principal:
    """A trusted service by its Basic credential, otherwise a user by bearer token."""
    if is_basic(authorization):
        return authenticate_service(authorization, acting_for, trusted=trusted, may_act=may_act)
    return user_principal(authorization, verifier)
