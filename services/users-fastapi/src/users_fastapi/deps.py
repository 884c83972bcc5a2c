"""Dependencies shared by the routers, as ``Annotated`` aliases.

Who may call what is decided here, once: a route names the caller it needs
(``CurrentClaims``, ``StaffOrService``, ``ActingStaffService``) and nothing is
open by omission.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service_kit import sqla
from service_kit.credentials import authenticate_caller, authenticate_service, is_basic
from service_kit.principal import Principal, bearer_claims
from service_kit.problems import forbidden, unauthenticated
from service_kit.tokens import AccessClaims
from users_fastapi import accounts
from users_fastapi.models import Role
from users_fastapi.ratelimit import RateLimits
from users_fastapi.security import KeyRing, Passwords
from users_fastapi.settings import UsersSettings


@dataclass(slots=True)
class AppState:
    """Everything the lifespan creates; reached through ``request.app.state.users``."""

    settings: UsersSettings
    sessions: async_sessionmaker[AsyncSession]
    passwords: Passwords
    keys: KeyRing
    migration_heads: frozenset[str]
    limits: RateLimits


# Dependencies are ``async def`` even when they never await: FastAPI runs a plain ``def``
# dependency in its thread pool, a thread hop per dependency per request for work that
# takes microseconds (see docs/benchmarks.md).


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.users
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    session = state.sessions()
    try:
        yield session
    finally:
        with sqla.lost_connection_ignored():  # dropped after the answer: nothing to undo
            # Shielded, as ``async with`` does: a cancelled request still returns its connection.
            await asyncio.shield(session.close())


SessionDep = Annotated[AsyncSession, Depends(get_session)]

AuthorizationHeader = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]
ActingForHeader = Annotated[str | None, Header(alias="X-Acting-For", include_in_schema=False)]


async def get_current_claims(
    state: StateDep, authorization: AuthorizationHeader = None
) -> AccessClaims:
    return bearer_claims(authorization, state.keys.verifier)


CurrentClaims = Annotated[AccessClaims, Depends(get_current_claims)]


async def get_staff_or_service(
    state: StateDep,
    session: SessionDep,
    authorization: AuthorizationHeader = None,
    acting_for: ActingForHeader = None,
) -> Principal:
    caller = authenticate_caller(
        authorization,
        acting_for,
        verifier=state.keys.verifier,
        trusted=state.settings.trusted_services,
        may_act=state.settings.acting_services,
    )
    if caller.service:
        return caller
    if caller.role != Role.STAFF:
        raise forbidden("Only staff and services may read other users")
    # A token outlives a deactivation by up to its TTL: staff powers are re-checked.
    staff = await accounts.user_find(session, str(caller.user_id))
    if staff is None or not staff.is_active or staff.role != Role.STAFF:
        raise forbidden("This staff account is no longer active")
    return caller


StaffOrService = Annotated[Principal, Depends(get_staff_or_service)]


async def get_acting_staff_service(
    state: StateDep,
    authorization: AuthorizationHeader = None,
    acting_for: ActingForHeader = None,
) -> Principal:
    if not is_basic(authorization):
        if authorization:
            raise forbidden("Only a service acting for a staff member may do this")
        raise unauthenticated("A service credential is required", scheme="Basic")
    caller = authenticate_service(
        authorization,
        acting_for,
        trusted=state.settings.trusted_services,
        may_act=state.settings.acting_services,
    )
    if caller.acting_for is None:
        raise forbidden("Name the staff member you act for in X-Acting-For")
    return caller


ActingStaffService = Annotated[Principal, Depends(get_acting_staff_service)]
