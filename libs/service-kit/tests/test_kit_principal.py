"""The principal: who is calling, from a bearer token or a service credential."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from pydantic import SecretStr

from service_kit.credentials import authenticate_caller, basic_credential
from service_kit.principal import Principal, bearer_claims, user_principal
from service_kit.problems import UNAUTHENTICATED, ProblemError
from service_kit.tokens import AccessClaims, TokenVerifier, key_id, sign_access_token

ISSUER = "polyframe-users"
AUDIENCE = "polyframe"
USER = uuid.UUID("5b0c3f52-7c5e-4a8e-9d1c-2f3a4b5c6d7e")
TRUSTED = {"admin-django": SecretStr("django-secret-0c4d")}


@pytest.fixture(scope="module")
def private_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def verifier(private_key: RSAPrivateKey) -> TokenVerifier:
    keys = {key_id(private_key.public_key()): private_key.public_key()}
    return TokenVerifier(keys.get, issuer=ISSUER, audience=AUDIENCE)


def bearer(private_key: RSAPrivateKey, subject: str = str(USER), **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "sub": subject,
        "role": "member",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        **overrides,
    }
    kid = key_id(private_key.public_key())
    return "Bearer " + sign_access_token(private_key, kid, claims)


def assert_bearer_401(error: pytest.ExceptionInfo[ProblemError]) -> str:
    problem = error.value.problem
    assert (problem.status, problem.type) == (401, UNAUTHENTICATED)
    assert problem.headers["WWW-Authenticate"].startswith("Bearer")
    return problem.detail or ""


# -- what a principal says about itself --------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "is_staff", "staff_name", "actor"),
    [
        pytest.param(
            Principal(user_id=USER, role="member"), False, None, ("user", str(USER)), id="member"
        ),
        pytest.param(
            Principal(user_id=USER, role="staff"),
            True,
            f"user:{USER}",
            ("staff", f"user:{USER}"),
            id="staff-token",
        ),
        pytest.param(
            Principal(service="legacy-flask"),
            False,
            None,
            ("service", "legacy-flask"),
            id="service",
        ),
        pytest.param(
            Principal(service="admin-django", acting_for="alice"),
            True,
            "alice",
            ("service", "admin-django"),
            id="service-acting-for-staff",
        ),
    ],
)
def test_staff_and_actor_of_each_kind_of_caller(
    principal: Principal, is_staff: bool, staff_name: str | None, actor: tuple[str, str]
) -> None:
    assert principal.is_staff is is_staff
    assert principal.staff_name == staff_name
    assert (principal.actor_type, principal.actor_id) == actor


def test_of_user_takes_the_subject_and_role() -> None:
    claims = AccessClaims(subject=str(USER), role="staff", email=None, raw={})
    assert Principal.of_user(claims) == Principal(user_id=USER, role="staff")


def test_a_subject_that_is_no_user_id_is_an_invalid_token() -> None:
    claims = AccessClaims(subject="not-a-uuid", role="member", email=None, raw={})
    with pytest.raises(ProblemError) as caught:
        Principal.of_user(claims)
    assert "bad subject" in assert_bearer_401(caught)


# -- bearer tokens ----------------------------------------------------------------------------


def test_a_valid_bearer_token_gives_its_claims_and_user(
    private_key: RSAPrivateKey, verifier: TokenVerifier
) -> None:
    authorization = bearer(private_key, role="staff")

    assert bearer_claims(authorization, verifier).subject == str(USER)
    assert user_principal(authorization, verifier) == Principal(user_id=USER, role="staff")


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (None, "required"),
        ("", "required"),
        ("Bearer", "required"),
        ("Bearer   ", "required"),
        ("Token abc", "required"),
        ("Bearer not-a-jwt", "Invalid access token"),
    ],
)
def test_no_or_a_bad_bearer_token_is_401(
    verifier: TokenVerifier, authorization: str | None, detail: str
) -> None:
    with pytest.raises(ProblemError) as caught:
        bearer_claims(authorization, verifier)
    assert detail in assert_bearer_401(caught)


def test_an_expired_token_is_401(private_key: RSAPrivateKey, verifier: TokenVerifier) -> None:
    with pytest.raises(ProblemError) as caught:
        user_principal(bearer(private_key, exp=int(time.time()) - 60), verifier)
    assert "Invalid access token" in assert_bearer_401(caught)


# -- a service or a user ----------------------------------------------------------------------


def test_a_basic_credential_is_a_service(verifier: TokenVerifier) -> None:
    principal = authenticate_caller(
        basic_credential("admin-django", "django-secret-0c4d"),
        "alice",
        verifier=verifier,
        trusted=TRUSTED,
        may_act={"admin-django"},
    )
    assert principal == Principal(service="admin-django", acting_for="alice")


def test_anything_else_is_a_user(private_key: RSAPrivateKey, verifier: TokenVerifier) -> None:
    principal = authenticate_caller(
        bearer(private_key), "alice", verifier=verifier, trusted=TRUSTED
    )
    # A user cannot name someone to act for: the header means something for services only.
    assert principal == Principal(user_id=USER, role="member")


def test_neither_is_a_bearer_challenge(verifier: TokenVerifier) -> None:
    with pytest.raises(ProblemError) as caught:
        authenticate_caller(None, None, verifier=verifier, trusted=TRUSTED)
    assert_bearer_401(caught)
