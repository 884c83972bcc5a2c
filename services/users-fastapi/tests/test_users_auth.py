"""Log-in, the JWKS, and who a bearer token makes you (GET /api/users/me)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from service_kit.tokens import key_id, sign_access_token
from users_fastapi.security import Passwords
from users_fastapi.settings import UsersSettings

LOGIN = "/api/users/login"
JWKS = "/api/users/.well-known/jwks.json"
ME = "/api/users/me"


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A JWT's header and payload (unverified) and its signature segment."""
    header, payload, signature = token.split(".")

    def decode(segment: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        )
        return data

    return decode(header), decode(payload), signature


def _encode(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(api, subject: str, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": api.state.keys.issuer,
        "aud": api.state.keys.audience,
        "sub": subject,
        "email": "someone@example.com",
        "role": "member",
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return claims


def _refused(api, response) -> dict[str, Any]:
    body = api.problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")
    return body


# --- log-in ---------------------------------------------------------------------------------


async def test_login_returns_a_bearer_token(api) -> None:
    user = await api.register("ada@example.com")

    response = await api.client.post(
        LOGIN, json={"email": "ADA@example.com", "password": api.password}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == api.state.settings.access_token_ttl_seconds
    _, claims, _ = _segments(body["access_token"])
    assert claims["sub"] == user["id"]
    assert claims["role"] == "member"


async def test_login_token_verifies_against_the_published_jwks(api) -> None:
    user = await api.register()
    token = await api.login(user["email"])

    jwks_response = await api.client.get(JWKS)

    assert jwks_response.status_code == 200
    assert "max-age" in jwks_response.headers["cache-control"]
    jwks = jwks_response.json()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    matching = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert len(matching) == 1
    jwk = matching[0]
    assert (jwk["kty"], jwk["use"], jwk["alg"]) == ("RSA", "sig", "RS256")
    assert "d" not in jwk  # public half only

    claims = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience="polyframe",
        issuer="polyframe-users",
        options={"require": ["iss", "aud", "exp", "sub", "iat", "nbf"]},
    )
    assert claims["sub"] == user["id"]
    assert claims["email"] == user["email"]
    assert claims["exp"] > claims["iat"]


async def test_login_wrong_password_and_unknown_email_look_the_same(api) -> None:
    await api.register("ada@example.com")

    wrong = await api.client.post(
        LOGIN, json={"email": "ada@example.com", "password": "not the password at all"}
    )
    unknown = await api.client.post(
        LOGIN, json={"email": "nobody@example.com", "password": api.password}
    )

    wrong_body = _refused(api, wrong)
    unknown_body = _refused(api, unknown)
    assert wrong_body["detail"] == unknown_body["detail"]
    assert wrong_body["type"] == unknown_body["type"]


async def test_login_refused_for_a_deactivated_user(api) -> None:
    user = await api.register()
    deactivated = await api.client.post(
        f"/api/users/{user['id']}/deactivate",
        headers=api.service("admin-django", acting_for="staff-name"),
    )
    assert deactivated.status_code == 200, deactivated.text

    response = await api.client.post(LOGIN, json={"email": user["email"], "password": api.password})

    _refused(api, response)


async def test_login_with_invalid_body_is_422(api) -> None:
    response = await api.client.post(LOGIN, json={"email": "ada@example.com"})

    body = api.problem(response, 422, "validation-error")
    assert api.error_fields(body) == {"password"}


# --- /me --------------------------------------------------------------------------------------


async def test_me_with_a_token_is_the_user(api) -> None:
    user = await api.register()
    token = await api.login(user["email"])

    response = await api.client.get(ME, headers=api.bearer(token))

    assert response.status_code == 200, response.text
    assert response.json() == user


async def test_me_without_a_token_is_401(api) -> None:
    _refused(api, await api.client.get(ME))


@pytest.mark.parametrize(
    "authorization", ["Bearer", "Bearer ", "Token abc", "bearer not-a-jwt", "Basic Zm9vOmJhcg=="]
)
async def test_me_with_a_malformed_authorization_is_401(api, authorization) -> None:
    _refused(api, await api.client.get(ME, headers={"Authorization": authorization}))


async def test_me_with_a_tampered_token_is_401(api) -> None:
    token = await api.member_token()
    header, claims, signature = _segments(token)
    claims["role"] = "staff"
    forged = f"{_encode(header)}.{_encode(claims)}.{signature}"

    _refused(api, await api.client.get(ME, headers=api.bearer(forged)))
    # Nor does the forged role open the staff routes.
    _refused(api, await api.client.get("/api/users", headers=api.bearer(forged)))


async def test_me_with_an_expired_token_is_401(api) -> None:
    user = await api.register()
    keys = api.state.keys
    past = datetime.now(UTC) - timedelta(hours=2)
    expired = sign_access_token(
        keys.private_key,
        keys.kid,
        _claims(api, user["id"], iat=past, nbf=past, exp=past + timedelta(minutes=15)),
    )

    body = _refused(api, await api.client.get(ME, headers=api.bearer(expired)))
    assert "expired" in body["detail"]


async def test_me_with_a_token_of_another_key_is_401(api) -> None:
    user = await api.register()
    stranger = rsa.generate_private_key(public_exponent=65_537, key_size=2048)
    claims = _claims(api, user["id"])

    own_kid = sign_access_token(stranger, key_id(stranger.public_key()), claims)
    body = _refused(api, await api.client.get(ME, headers=api.bearer(own_kid)))
    assert "unknown signing key" in body["detail"]

    # Borrowing the service's kid does not help: the signature does not verify.
    borrowed_kid = sign_access_token(stranger, api.state.keys.kid, claims)
    _refused(api, await api.client.get(ME, headers=api.bearer(borrowed_kid)))


async def test_me_with_an_unsigned_token_is_401(api) -> None:
    user = await api.register()
    claims = _claims(api, user["id"])
    claims = {k: int(v.timestamp()) if isinstance(v, datetime) else v for k, v in claims.items()}
    unsigned = (
        f"{_encode({'alg': 'none', 'typ': 'JWT', 'kid': api.state.keys.kid})}.{_encode(claims)}."
    )

    _refused(api, await api.client.get(ME, headers=api.bearer(unsigned)))


async def test_me_with_a_token_for_another_audience_is_401(api) -> None:
    user = await api.register()
    keys = api.state.keys
    token = sign_access_token(keys.private_key, keys.kid, _claims(api, user["id"], aud="elsewhere"))

    _refused(api, await api.client.get(ME, headers=api.bearer(token)))


async def test_me_for_an_account_that_no_longer_exists_is_401(api) -> None:
    keys = api.state.keys
    token = sign_access_token(keys.private_key, keys.kid, _claims(api, str(uuid.uuid4())))

    _refused(api, await api.client.get(ME, headers=api.bearer(token)))


# -- password hashing stays off the event loop --------------------------------------------------


def _cheap_settings(signing_key_pem: str) -> UsersSettings:
    return UsersSettings(
        environment="test",
        jwt_private_key=signing_key_pem,
        argon2_time_cost=1,
        argon2_memory_cost_kib=32,
        argon2_concurrency=2,
    )


async def test_password_hashing_runs_in_worker_threads_not_on_the_loop(
    signing_key_pem: str,
) -> None:
    """argon2 costs ~100 ms a hash: on the loop it would stall every other request."""
    passwords = Passwords(_cheap_settings(signing_key_pem))
    loop_thread = threading.get_ident()
    threads: list[int] = []
    hasher = passwords._hasher
    real_hash, real_verify = hasher.hash, hasher.verify

    def spy_hash(password: str) -> str:
        threads.append(threading.get_ident())
        return real_hash(password)

    def spy_verify(hashed: str, password: str) -> bool:
        threads.append(threading.get_ident())
        return real_verify(hashed, password)

    passwords._hasher = SimpleNamespace(hash=spy_hash, verify=spy_verify)  # type: ignore[assignment]
    hashed = await passwords.hash("a long passphrase")
    assert await passwords.verify(hashed, "a long passphrase")
    assert not await passwords.verify(hashed, "another passphrase")
    assert not await passwords.verify(None, "a long passphrase")  # the decoy, same cost
    assert len(threads) == 4
    assert loop_thread not in threads


async def test_password_hashing_concurrency_is_bounded(
    signing_key_pem: str,
) -> None:
    passwords = Passwords(_cheap_settings(signing_key_pem))
    running = 0
    most = 0
    lock = threading.Lock()
    real_hash = passwords._hasher.hash

    def slow_hash(password: str) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.05)
            return real_hash(password)
        finally:
            with lock:
                running -= 1

    passwords._hasher = SimpleNamespace(hash=slow_hash)  # type: ignore[assignment]
    await asyncio.gather(*(passwords.hash(f"passphrase {n}") for n in range(8)))
    assert most == 2
