"""The users service through the ingress: accounts, tokens, and its error shape."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

pytestmark = pytest.mark.e2e

USERS = "/api/users"
AUDIENCE = "polyframe"
ISSUER = "polyframe-users"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _assert_unauthenticated(problem: Any, response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = problem(response, 401)
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")
    return body


def test_register_login_and_read_me(client: httpx.Client, register: Any, log_in: Any) -> None:
    account = register(client)
    assert account.user["email"] == account.email
    assert account.user["full_name"] == account.full_name
    assert account.user["role"] == "member"
    assert account.user["is_active"] is True
    assert "password" not in json.dumps(account.user).lower()

    token = log_in(client, account.email, account.password)
    me = client.get(f"{USERS}/me", headers=_bearer(token))

    assert me.status_code == 200, me.text
    assert me.json() == account.user


def test_registering_the_same_email_twice_conflicts(
    client: httpx.Client, register: Any, problem: Any
) -> None:
    account = register(client)
    again = client.post(
        f"{USERS}/register",
        json={"email": account.email, "password": "another-password-1", "full_name": "Twin"},
    )
    problem(again, 409)


def test_jwks_verifies_the_login_token(client: httpx.Client, account: Any, token: str) -> None:
    response = client.get(f"{USERS}/.well-known/jwks.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    keys = response.json()["keys"]

    kid = jwt.get_unverified_header(token)["kid"]
    matching = [key for key in keys if key["kid"] == kid]
    assert len(matching) == 1, f"kid {kid} not (uniquely) in the JWKS: {keys}"
    jwk = jwt.PyJWK(matching[0])
    assert matching[0]["kty"] == "RSA"
    assert matching[0]["alg"] == "RS256"
    assert "d" not in matching[0], "the JWKS publishes a private key"

    claims = jwt.decode(
        token,
        key=jwk,
        algorithms=["RS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]},
    )
    assert claims["sub"] == account.user["id"]
    assert claims["email"] == account.email
    assert claims["role"] == "member"


def test_wrong_password_is_401(client: httpx.Client, account: Any, problem: Any) -> None:
    response = client.post(
        f"{USERS}/login", json={"email": account.email, "password": account.password + "x"}
    )
    _assert_unauthenticated(problem, response)
    assert "access_token" not in response.text


def test_unknown_email_is_401_like_a_wrong_password(
    client: httpx.Client, new_email: Any, problem: Any
) -> None:
    response = client.post(
        f"{USERS}/login", json={"email": new_email(), "password": "whatever-password"}
    )
    _assert_unauthenticated(problem, response)


def test_me_without_token_is_401(client: httpx.Client, problem: Any) -> None:
    _assert_unauthenticated(problem, client.get(f"{USERS}/me"))


def _forge(kid: str, subject: str, *, expired: bool) -> str:
    """A well-formed token with the server's kid, signed by a key that is not the server's."""
    other_key = rsa.generate_private_key(public_exponent=65_537, key_size=2048)
    now = datetime.now(UTC)
    issued = now - timedelta(hours=2) if expired else now
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "role": "staff",
        "iat": issued,
        "nbf": issued,
        "exp": issued + timedelta(minutes=15),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": kid})


@pytest.mark.parametrize("expired", [True, False], ids=["expired", "unexpired"])
def test_token_forged_with_another_key_and_the_same_kid_is_401(
    client: httpx.Client, account: Any, token: str, problem: Any, expired: bool
) -> None:
    kid = jwt.get_unverified_header(token)["kid"]
    forged = _forge(kid, account.user["id"], expired=expired)
    assert jwt.get_unverified_header(forged)["kid"] == kid

    _assert_unauthenticated(problem, client.get(f"{USERS}/me", headers=_bearer(forged)))


def _tamper_one_char(token: str) -> str:
    header, payload, signature = token.split(".")
    middle = len(payload) // 2
    replacement = "A" if payload[middle] != "A" else "B"
    tampered = payload[:middle] + replacement + payload[middle + 1 :]
    assert tampered != payload
    # Same length and alphabet: still valid base64url, only the content differs.
    padding = "=" * (-len(payload) % 4)
    assert base64.urlsafe_b64decode(tampered + padding) != base64.urlsafe_b64decode(
        payload + padding
    )
    return f"{header}.{tampered}.{signature}"


def test_token_with_a_tampered_payload_is_401(
    client: httpx.Client, token: str, problem: Any
) -> None:
    assert client.get(f"{USERS}/me", headers=_bearer(token)).status_code == 200
    tampered = _tamper_one_char(token)

    _assert_unauthenticated(problem, client.get(f"{USERS}/me", headers=_bearer(tampered)))


def test_malformed_json_on_register_is_422(client: httpx.Client, problem: Any) -> None:
    response = client.post(
        f"{USERS}/register",
        content=b'{"email": "a@example.com", "password": ',
        headers={"Content-Type": "application/json"},
    )
    body = problem(response, 422)
    assert body["type"].endswith("malformed-body"), body


def test_invalid_fields_on_register_are_named(client: httpx.Client, problem: Any) -> None:
    response = client.post(
        f"{USERS}/register",
        json={"email": "not-an-email", "password": "short", "full_name": "E2E Tester"},
    )
    body = problem(response, 422)
    errors = body.get("errors")
    assert isinstance(errors, list), body
    assert errors, body
    for error in errors:
        assert {"field", "location", "detail"} <= error.keys(), error
    named = {error["field"] for error in errors}
    assert {"email", "password"} <= named, errors
    assert "full_name" not in named
    pointers = {error.get("pointer") for error in errors}
    assert {"#/email", "#/password"} <= pointers, errors


def test_unknown_route_under_the_prefix_is_404(client: httpx.Client, problem: Any) -> None:
    problem(client.get(f"{USERS}/does/not/exist"), 404)
