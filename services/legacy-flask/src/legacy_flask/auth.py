"""Who may call each view: a user (bearer token, verified locally) or a service (its credential).

A view declares its callers next to it (``@access.allow(auth.current_user)``); an
:class:`AccessTable` refuses every view that declares nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, g, request

from legacy_flask.extensions import users
from legacy_flask.settings import current_settings
from service_kit.credentials import ACTING_FOR_HEADER, authenticate_caller
from service_kit.principal import Principal, user_principal
from service_kit.problems import forbidden

#: Who a view accepts: returns the caller, or raises a 401/403 problem.
CallerCheck = Callable[[], Principal]
View = TypeVar("View", bound=Callable[..., Any])


def current_user() -> Principal:
    """A user with a valid token (members and staff).

    Keys come from the cached JWKS; if it was never fetched and the users service is down,
    ServiceUnavailableError propagates and the caller gets a 503.
    """
    return user_principal(request.headers.get("Authorization"), users.verifier)


def current_caller() -> Principal:
    """A user with a valid token, or a trusted service."""
    settings = current_settings()
    return authenticate_caller(
        request.headers.get("Authorization"),
        request.headers.get(ACTING_FOR_HEADER),
        verifier=users.verifier,
        trusted=settings.trusted_services,
        may_act=settings.acting_services,
    )


def current_staff() -> Principal:
    """Staff: a staff user's token, or a service acting for a staff member."""
    caller = current_caller()
    if not caller.is_staff:
        raise forbidden("Only staff may do this")
    return caller


def caller() -> Principal:
    """This request's caller, as its view declared it (set before the view runs)."""
    principal: Principal = g.caller
    return principal


class AccessTable:
    """Who may call each view of a blueprint, declared next to the view with :meth:`allow`.

    Checked before flask-openapi3 validates the request (it does so inside the view), so a
    caller who may not use a route gets its 401 or 403, never a 422 that describes the body
    it may not send. A view that declares nothing is refused: nothing is open by omission.
    """

    def __init__(self, blueprint: Blueprint) -> None:
        self._checks: dict[str, CallerCheck] = {}
        blueprint.before_request(self._authenticate)

    def allow(self, check: CallerCheck) -> Callable[[View], View]:
        """Declare that ``check`` decides who may call the decorated view."""

        def declare(view: View) -> View:
            self._checks[view.__name__] = check
            return view

        return declare

    def _authenticate(self) -> None:
        check = self._checks.get((request.endpoint or "").rpartition(".")[2])
        if check is None:
            raise forbidden("No caller may use this route")
        g.caller = check()
