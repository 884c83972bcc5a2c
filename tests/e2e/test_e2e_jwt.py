"""Forged and stale access tokens are refused through the ingress, by every service that takes
user tokens: users-fastapi (``/api/users/me``) and legacy-flask (listing and placing orders).
admin-django takes no user token at all (the authorization matrix shows a valid one is a 401
there).

Each attack starts from a real token of a fresh member and changes one thing; a control token
made by the same code with nothing changed is accepted, so every refusal below is about the
attack. Tokens with the platform's own key (expired, wrong issuer …) need that key: the local
platform's generated one; against another deployment those cases skip.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

pytestmark = pytest.mark.e2e

JWKS = "/api/users/.well-known/jwks.json"
ORDER = {"currency": "EUR", "items": [{"sku": "JWT-1", "quantity": 1, "unit_price_cents": 100}]}
#: Routes that verify user tokens, one read per service and a write.
ENDPOINTS = {
    "users me": ("GET", "/api/users/me"),
    "orders list": ("GET", "/api/orders"),
    "orders create": ("POST", "/api/orders"),
}
#: Beyond the verifiers' leeway (5 s).
SKEW = 600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _call(client: httpx.Client, endpoint: str, token: str) -> httpx.Response:
    method, path = ENDPOINTS[endpoint]
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
    if method == "POST":
        return client.post(path, json=ORDER, headers=headers)
    return client.get(path, headers=headers)


class Forge:
    """Tokens like the users service's, for a real member, with one thing changed."""

    def __init__(self, client: httpx.Client, token: str, signing_key: rsa.RSAPrivateKey | None):
        self.claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
        self.header: dict[str, Any] = jwt.get_unverified_header(token)
        jwks = client.get(JWKS).json()
        jwk = next(key for key in jwks["keys"] if key["kid"] == self.header["kid"])
        self.public_key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
        self.signing_key = signing_key

    def fresh_claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {**self.claims, "iat": now, "nbf": now, "exp": now + 300, "jti": uuid.uuid4().hex}
        claims.update(changes)
        return {key: value for key, value in claims.items() if value is not None}

    def signed(self, claims: dict[str, Any], kid: str | None = None) -> str:
        if self.signing_key is None:
            pytest.skip("needs the platform's signing key: only the local platform has it")
        headers = {"kid": kid or self.header["kid"]}
        return jwt.encode(claims, self.signing_key, algorithm="RS256", headers=headers)

    def public_pems(self) -> list[bytes]:
        assert isinstance(self.public_key, rsa.RSAPublicKey)
        return [
            self.public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            self.public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
            ),
        ]


@pytest.fixture(scope="module")
def signing_key(platform: Any) -> rsa.RSAPrivateKey | None:
    if platform.ready is None:
        return None
    pem = (Path(platform.ready["data_dir"]) / "secrets" / "jwt-signing-key.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture(scope="module")
def member_token(platform: Any, register: Any, log_in: Any) -> str:
    with httpx.Client(base_url=platform.base_url, timeout=15) as client:
        account = register(client)
        token: str = log_in(client, account.email, account.password)
        return token


@pytest.fixture
def forge(client: httpx.Client, member_token: str, signing_key: rsa.RSAPrivateKey | None) -> Forge:
    return Forge(client, member_token, signing_key)


def _alg_none(forge: Forge) -> list[str]:
    claims = forge.fresh_claims()
    return [
        _unsigned({"alg": alg, "typ": "JWT", "kid": forge.header["kid"]}, claims) + "."
        for alg in ("none", "None", "NONE")
    ]


def _hs256_with_public_key(forge: Forge) -> list[str]:
    """HMAC key confusion: HS256 keyed with the public key (as PEM, both encodings)."""
    tokens = []
    for pem in forge.public_pems():
        signing_input = _unsigned(
            {"alg": "HS256", "typ": "JWT", "kid": forge.header["kid"]}, forge.fresh_claims()
        )
        signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        tokens.append(f"{signing_input}.{_b64(signature)}")
    return tokens


def _expired(forge: Forge) -> list[str]:
    now = int(time.time())
    return [
        forge.signed(forge.fresh_claims(iat=now - 2 * SKEW, nbf=now - 2 * SKEW, exp=now - SKEW))
    ]


def _not_yet_valid(forge: Forge) -> list[str]:
    now = int(time.time())
    return [
        forge.signed(forge.fresh_claims(nbf=now + SKEW, exp=now + 2 * SKEW)),
        forge.signed(forge.fresh_claims(iat=now + SKEW, exp=now + 2 * SKEW)),
    ]


def _wrong_issuer(forge: Forge) -> list[str]:
    return [
        forge.signed(forge.fresh_claims(iss="https://evil.example")),
        forge.signed(forge.fresh_claims(iss=None)),
    ]


def _wrong_audience(forge: Forge) -> list[str]:
    return [
        forge.signed(forge.fresh_claims(aud="someone-else")),
        forge.signed(forge.fresh_claims(aud=None)),
    ]


def _unknown_kid(forge: Forge) -> list[str]:
    other = rsa.generate_private_key(public_exponent=65_537, key_size=2048)
    claims = forge.fresh_claims()
    return [
        # Our own key under a kid nobody published, and a stranger's key under its own kid.
        forge.signed(claims, kid="no-such-key"),
        jwt.encode(claims, other, algorithm="RS256", headers={"kid": uuid.uuid4().hex}),
    ]


def _no_expiry(forge: Forge) -> list[str]:
    return [forge.signed(forge.fresh_claims(exp=None))]


ATTACKS: dict[str, Callable[[Forge], list[str]]] = {
    "alg none": _alg_none,
    "HS256 keyed with the public key": _hs256_with_public_key,
    "expired": _expired,
    "not yet valid (nbf, iat in the future)": _not_yet_valid,
    "wrong issuer": _wrong_issuer,
    "wrong audience": _wrong_audience,
    "unknown kid": _unknown_kid,
    "no expiry": _no_expiry,
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_control_token_is_accepted(client: httpx.Client, forge: Forge, endpoint: str) -> None:
    """The forging code itself makes tokens the services accept: the refusals are real."""
    token = forge.signed(forge.fresh_claims())
    response = _call(client, endpoint, token)
    assert response.status_code in (200, 201), response.text


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("attack", ATTACKS)
def test_a_forged_or_stale_token_is_refused(
    client: httpx.Client, forge: Forge, problem: Any, attack: str, endpoint: str
) -> None:
    tokens = ATTACKS[attack](forge)
    assert tokens
    for token in tokens:
        body = problem(_call(client, endpoint, token), 401)
        assert body["type"].endswith(":unauthenticated"), body


def test_a_deactivated_users_token_cannot_write(
    client: httpx.Client,
    register: Any,
    log_in: Any,
    staff_account: Any,
    problem: Any,
) -> None:
    """Deactivated by support staff in the console; the token is still valid, writes fail."""
    account = register(client)
    token = log_in(client, account.email, account.password)
    bearer = {"Authorization": f"Bearer {token}"}
    placed = client.post("/api/orders", json=ORDER, headers={**bearer, "Idempotency-Key": "one"})
    assert placed.status_code == 201, placed.text

    username, password = staff_account("support-acting")
    with httpx.Client(base_url=str(client.base_url), timeout=15) as console:
        page = console.get("/admin/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert csrf
        logged_in = console.post(
            "/admin/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": csrf[1]},
        )
        assert logged_in.status_code == 302, logged_in.text[:300]
        done = console.post(
            f"/admin/support/users/{account.user['id']}/",
            data={"action": "deactivate", "csrfmiddlewaretoken": console.cookies["csrftoken"]},
        )
        assert done.status_code == 302, done.text[:300]

    # The token itself still verifies (the users service reports the account as inactive) …
    me = client.get("/api/users/me", headers=bearer)
    assert me.status_code == 200, me.text
    assert me.json()["is_active"] is False
    # … but it places no order, and the account cannot log in again.
    refused = client.post("/api/orders", json=ORDER, headers={**bearer, "Idempotency-Key": "two"})
    assert "deactivated" in problem(refused, 403)["detail"]
    problem(
        client.post(
            "/api/users/login", json={"email": account.email, "password": account.password}
        ),
        401,
    )
