"""``/api/users``: registration, log-in, JWKS, and user administration."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import AfterValidator

from service_kit.inputs import refuse_nul
from service_kit.outbox import Actor
from service_kit.pagination import DEFAULT_PAGE_SIZE, MAX_CURSOR_LENGTH, MAX_PAGE_SIZE
from service_kit.problems import openapi_problem_responses, unauthenticated
from users_fastapi import accounts
from users_fastapi.deps import (
    ActingStaffService,
    CurrentClaims,
    SessionDep,
    StaffOrService,
    StateDep,
)
from users_fastapi.schemas import (
    JsonWebKeySet,
    LoginRequest,
    TokenResponse,
    UserCreate,
    UserPage,
    UserPublic,
)

log = logging.getLogger("users_fastapi.users")

PREFIX = "/api/users"

#: On every route, as the kit's middleware and handlers answer them: a body over the limit
#: (413) or not JSON (415), invalid input (422), the database unreachable (503).
router = APIRouter(
    prefix=PREFIX, tags=["users"], responses=openapi_problem_responses(413, 415, 422, 503)
)


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=openapi_problem_responses(409, 429),
    summary="Register an account (anonymous)",
)
async def register_user(
    body: UserCreate, session: SessionDep, state: StateDep, request: Request
) -> UserPublic:
    state.limits.check_register(request)
    user = await accounts.user_register(
        session, state.passwords, email=body.email, password=body.password, full_name=body.full_name
    )
    log.info("user registered", extra={"user_id": str(user.id)})
    return UserPublic.model_validate(user)


@router.post(
    "/login",
    responses=openapi_problem_responses(401, 429),
    summary="Exchange e-mail and password for an access token (anonymous)",
)
async def login_user(
    body: LoginRequest, session: SessionDep, state: StateDep, request: Request
) -> TokenResponse:
    state.limits.check_login(request, body.email)
    user = await accounts.user_authenticate(
        session, state.passwords, email=body.email, password=body.password
    )
    if user is None:  # counted against the account already (check_login)
        log.info("log-in refused")
        raise unauthenticated("Wrong e-mail or password, or the account is deactivated")
    state.limits.login_succeeded(body.email)
    token, expires_in = state.keys.issue(subject=str(user.id), email=user.email, role=user.role)
    return TokenResponse(access_token=token, expires_in=expires_in)


@router.get(
    "/.well-known/jwks.json",
    summary="Public keys that verify access tokens (anonymous)",
)
async def read_jwks(state: StateDep, response: Response) -> JsonWebKeySet:
    response.headers["Cache-Control"] = "public, max-age=300"
    return JsonWebKeySet.model_validate(state.keys.jwks())


@router.get(
    "/me",
    responses=openapi_problem_responses(401),
    summary="Read yourself (the user of the access token)",
)
async def read_me(claims: CurrentClaims, session: SessionDep) -> UserPublic:
    user = await accounts.user_find(session, claims.subject)
    if user is None:
        raise unauthenticated("The account of this token no longer exists")
    return UserPublic.model_validate(user)


@router.get(
    "",
    responses=openapi_problem_responses(401, 403),
    summary="List users (staff and services)",
)
async def list_users(
    _caller: StaffOrService,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
    email: Annotated[str | None, Query(max_length=320), AfterValidator(refuse_nul)] = None,
) -> UserPage:
    users, next_cursor = await accounts.user_list(session, limit=limit, cursor=cursor, email=email)
    return UserPage(items=[UserPublic.model_validate(u) for u in users], next_cursor=next_cursor)


@router.get(
    "/{user_id}",
    responses=openapi_problem_responses(401, 403, 404),
    summary="Read one user (staff and services)",
)
async def read_user(user_id: uuid.UUID, _caller: StaffOrService, session: SessionDep) -> UserPublic:
    return UserPublic.model_validate(await accounts.user_get(session, user_id))


@router.post(
    "/{user_id}/deactivate",
    responses=openapi_problem_responses(401, 403, 404),
    summary="Deactivate a user (a service acting for a staff member)",
)
async def deactivate_user(
    user_id: uuid.UUID, caller: ActingStaffService, session: SessionDep
) -> UserPublic:
    user = await accounts.user_set_active(
        session,
        user_id,
        active=False,
        actor=Actor(caller.actor_type, caller.actor_id, acting_for=caller.acting_for),
    )
    log.info(
        "user deactivated",
        extra={
            "user_id": str(user_id),
            "by_service": caller.service,
            "acting_for": caller.acting_for,
        },
    )
    return UserPublic.model_validate(user)


@router.post(
    "/{user_id}/reactivate",
    responses=openapi_problem_responses(401, 403, 404),
    summary="Reactivate a user (a service acting for a staff member)",
)
async def reactivate_user(
    user_id: uuid.UUID, caller: ActingStaffService, session: SessionDep
) -> UserPublic:
    user = await accounts.user_set_active(
        session,
        user_id,
        active=True,
        actor=Actor(caller.actor_type, caller.actor_id, acting_for=caller.acting_for),
    )
    log.info(
        "user reactivated",
        extra={
            "user_id": str(user_id),
            "by_service": caller.service,
            "acting_for": caller.acting_for,
        },
    )
    return UserPublic.model_validate(user)
