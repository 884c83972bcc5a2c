"""Access tokens: RS256 only, key chosen by kid, lifetime, issuer, audience."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from service_kit.tokens import (
    ALGORITHM,
    InvalidTokenError,
    TokenVerifier,
    key_id,
    public_jwk,
    sign_access_token,
)

ISSUER = "https://polyframe.test/users"
AUDIENCE = "polyframe"


@pytest.fixture(scope="module")
def private_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def kid(private_key: RSAPrivateKey) -> str:
    return key_id(private_key.public_key())


@pytest.fixture(scope="module")
def verifier(private_key: RSAPrivateKey, kid: str) -> TokenVerifier:
    keys = {kid: private_key.public_key()}
    return TokenVerifier(keys.get, issuer=ISSUER, audience=AUDIENCE)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": "user-42",
        "role": "staff",
        "email": "ada@example.org",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def public_pem(key: RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- accepted ------------------------------------------------------------------------


def test_sign_and_verify(private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier) -> None:
    token = sign_access_token(private_key, kid, claims())
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == kid
    verified = verifier.verify(token)
    assert verified.subject == "user-42"
    assert verified.role == "staff"
    assert verified.email == "ada@example.org"
    assert verified.raw["iss"] == ISSUER


def test_role_defaults_to_member(
    private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier
) -> None:
    verified = verifier.verify(sign_access_token(private_key, kid, claims(role=None, email=None)))
    assert verified.role == "member"
    assert verified.email is None


def test_audience_list_containing_ours_accepted(
    private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier
) -> None:
    token = sign_access_token(private_key, kid, claims(aud=["other", AUDIENCE]))
    assert verifier.verify(token).subject == "user-42"


def test_small_clock_skew_tolerated(private_key: RSAPrivateKey, kid: str) -> None:
    keys = {kid: private_key.public_key()}
    lenient = TokenVerifier(keys.get, issuer=ISSUER, audience=AUDIENCE, leeway_seconds=300)
    now = int(time.time())
    token = sign_access_token(private_key, kid, claims(exp=now - 60, nbf=now + 60, iat=now))
    assert lenient.verify(token).subject == "user-42"


def test_key_chosen_by_kid(private_key: RSAPrivateKey, other_key: RSAPrivateKey) -> None:
    kid_a, kid_b = key_id(private_key.public_key()), key_id(other_key.public_key())
    keys = {kid_a: private_key.public_key(), kid_b: other_key.public_key()}
    asked: list[str] = []

    def resolve(wanted: str) -> RSAPublicKey | None:
        asked.append(wanted)
        return keys.get(wanted)

    verifier = TokenVerifier(resolve, issuer=ISSUER, audience=AUDIENCE)
    assert verifier.verify(sign_access_token(other_key, kid_b, claims(sub="b"))).subject == "b"
    assert verifier.verify(sign_access_token(private_key, kid_a, claims(sub="a"))).subject == "a"
    assert asked == [kid_b, kid_a]


# --- refused -------------------------------------------------------------------------


def assert_refused(verifier: TokenVerifier, token: str, reason: str | None = None) -> None:
    with pytest.raises(InvalidTokenError) as caught:
        verifier.verify(token)
    if reason:
        assert reason in str(caught.value)


def test_expired(private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier) -> None:
    now = int(time.time())
    token = sign_access_token(
        private_key, kid, claims(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    )
    assert_refused(verifier, token, "expired")


def test_not_yet_valid(private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier) -> None:
    now = int(time.time())
    token = sign_access_token(private_key, kid, claims(nbf=now + 3600, exp=now + 7200))
    assert_refused(verifier, token, "not yet valid")


def test_issued_in_the_future(
    private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier
) -> None:
    now = int(time.time())
    token = sign_access_token(private_key, kid, claims(iat=now + 3600, exp=now + 7200))
    assert_refused(verifier, token)


def test_wrong_issuer(private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier) -> None:
    token = sign_access_token(private_key, kid, claims(iss="https://evil.test"))
    assert_refused(verifier, token, "invalid token")


def test_wrong_audience(private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier) -> None:
    token = sign_access_token(private_key, kid, claims(aud="someone-else"))
    assert_refused(verifier, token, "invalid token")


@pytest.mark.parametrize("missing", ["exp", "iat", "nbf", "iss", "aud", "sub"])
def test_required_claim_missing(
    private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier, missing: str
) -> None:
    token = sign_access_token(private_key, kid, claims(**{missing: None}))
    assert missing not in jwt.decode(token, options={"verify_signature": False})
    assert_refused(verifier, token)


def test_unknown_kid(private_key: RSAPrivateKey, verifier: TokenVerifier) -> None:
    token = sign_access_token(private_key, "not-a-known-kid", claims())
    assert_refused(verifier, token, "unknown signing key")


def test_missing_kid(private_key: RSAPrivateKey, verifier: TokenVerifier) -> None:
    token = jwt.encode(claims(), private_key, algorithm="RS256")
    assert "kid" not in jwt.get_unverified_header(token)
    assert_refused(verifier, token, "no key id")


def test_non_string_kid(private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier) -> None:
    # PyJWT will not build this header; sign it by hand.
    signing_input = (
        f"{b64url_json({'alg': 'RS256', 'typ': 'JWT', 'kid': 7})}.{b64url_json(claims())}"
    )
    signature = private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    assert_refused(verifier, f"{signing_input}.{b64url(signature)}")


def test_signed_by_another_key_under_our_kid(
    other_key: RSAPrivateKey, kid: str, verifier: TokenVerifier
) -> None:
    token = sign_access_token(other_key, kid, claims())
    assert_refused(verifier, token, "invalid token")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none(kid: str, verifier: TokenVerifier, alg: str) -> None:
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    token = f"{b64url_json(header)}.{b64url_json(claims())}."
    assert_refused(verifier, token)


def test_hs256_with_public_key_as_secret(
    private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier
) -> None:
    # The classic key-confusion attack: PyJWT refuses to build it, so do it by hand.
    signing_input = (
        f"{b64url_json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64url_json(claims())}"
    )
    signature = hmac.new(public_pem(private_key), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(signature)}"
    assert_refused(verifier, token, "unsupported signing algorithm")


def test_other_asymmetric_algorithm_refused(
    private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier
) -> None:
    token = jwt.encode(claims(), private_key, algorithm="PS256", headers={"kid": kid})
    assert_refused(verifier, token, "unsupported signing algorithm")


def test_header_alg_rewritten_to_rs256_does_not_help(
    private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier
) -> None:
    token = jwt.encode(claims(), private_key, algorithm="PS256", headers={"kid": kid})
    _, payload, signature = token.split(".")
    forged = f"{b64url_json({'alg': 'RS256', 'typ': 'JWT', 'kid': kid})}.{payload}.{signature}"
    assert_refused(verifier, forged, "invalid token")


def test_tampered_payload(private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier) -> None:
    token = sign_access_token(private_key, kid, claims(role="member"))
    header, _, signature = token.split(".")
    forged = f"{header}.{b64url_json(claims(role='admin'))}.{signature}"
    assert_refused(verifier, forged, "invalid token")


def test_stripped_signature(private_key: RSAPrivateKey, kid: str, verifier: TokenVerifier) -> None:
    header, payload, _ = sign_access_token(private_key, kid, claims()).split(".")
    assert_refused(verifier, f"{header}.{payload}.")


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "....", "eyJ.eyJ.sig"])
def test_malformed(verifier: TokenVerifier, token: str) -> None:
    assert_refused(verifier, token)


def test_algorithm_constant() -> None:
    assert ALGORITHM == "RS256"


# --- key ids and JWKs ----------------------------------------------------------------


def test_key_id_stable_and_distinct(private_key: RSAPrivateKey, other_key: RSAPrivateKey) -> None:
    first = key_id(private_key.public_key())
    assert key_id(private_key.public_key()) == first
    # Reloading the same key from PEM gives the same id.
    reloaded = serialization.load_pem_public_key(public_pem(private_key))
    assert isinstance(reloaded, RSAPublicKey)
    assert key_id(reloaded) == first
    assert key_id(other_key.public_key()) != first
    assert "=" not in first
    assert len(first) == 43  # base64url of a SHA-256 digest, unpadded


def test_key_id_is_rfc7638_thumbprint(private_key: RSAPrivateKey) -> None:
    numbers = private_key.public_key().public_numbers()

    def b64_int(value: int) -> str:
        return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    canonical = f'{{"e":"{b64_int(numbers.e)}","kty":"RSA","n":"{b64_int(numbers.n)}"}}'
    expected = b64url(hashlib.sha256(canonical.encode()).digest())
    assert key_id(private_key.public_key()) == expected


def test_public_jwk(private_key: RSAPrivateKey, kid: str) -> None:
    jwk = public_jwk(private_key.public_key(), kid)
    assert jwk["kty"] == "RSA"
    assert jwk["kid"] == kid
    assert jwk["use"] == "sig"
    assert jwk["alg"] == "RS256"
    assert "d" not in jwk
    assert "kid" not in public_jwk(private_key.public_key(), None)
    # The JWK round-trips into a key that verifies our tokens.
    loaded = jwt.PyJWK(jwk).key
    token = sign_access_token(private_key, kid, claims())
    verifier = TokenVerifier(lambda _: loaded, issuer=ISSUER, audience=AUDIENCE)
    assert verifier.verify(token).subject == "user-42"


# --- remembering verified tokens ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def counting_decode(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = jwt.decode

    def decode(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", decode)
    return calls


def test_a_verified_token_is_remembered_until_it_expires(
    private_key: RSAPrivateKey, kid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    keys = {kid: private_key.public_key()}
    verifier = TokenVerifier(keys.get, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    token = sign_access_token(private_key, kid, claims(exp=int(clock.now) + 60))
    decoded = counting_decode(monkeypatch)

    first = verifier.verify(token)
    for _ in range(5):
        assert verifier.verify(token) == first
    assert len(decoded) == 1  # the signature was checked once

    # Past its expiry (by the verifier's clock) it is not taken from memory: it is verified
    # in full again, where pyjwt checks the lifetime against the real time.
    clock.now += 60 + verifier.leeway
    verifier.verify(token)
    assert len(decoded) == 2


def test_a_remembered_token_is_not_taken_from_memory_before_its_nbf(
    private_key: RSAPrivateKey, kid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    keys = {kid: private_key.public_key()}
    verifier = TokenVerifier(keys.get, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    token = sign_access_token(private_key, kid, claims(nbf=int(clock.now) - 1))
    verifier.verify(token)
    decoded = counting_decode(monkeypatch)
    clock.now -= 60  # the verifier's clock set back before the token's nbf
    verifier.verify(token)  # verified in full (pyjwt checks nbf against the real time)
    assert len(decoded) == 1


def test_an_expired_token_is_refused_even_after_it_was_remembered(
    private_key: RSAPrivateKey, kid: str
) -> None:
    keys = {kid: private_key.public_key()}
    verifier = TokenVerifier(keys.get, issuer=ISSUER, audience=AUDIENCE, leeway_seconds=0)
    now = int(time.time())
    token = sign_access_token(private_key, kid, claims(iat=now - 5, nbf=now - 5, exp=now + 1))
    verifier.verify(token)
    time.sleep(1.1)  # a real expiry: pyjwt checks against the real time
    with pytest.raises(InvalidTokenError, match="expired"):
        verifier.verify(token)


def test_a_remembered_token_of_a_key_rotated_out_is_refused(
    private_key: RSAPrivateKey, kid: str
) -> None:
    keys = {kid: private_key.public_key()}
    verifier = TokenVerifier(keys.get, issuer=ISSUER, audience=AUDIENCE)
    token = sign_access_token(private_key, kid, claims())
    verifier.verify(token)
    del keys[kid]
    with pytest.raises(InvalidTokenError, match="unknown signing key"):
        verifier.verify(token)


def test_refused_tokens_are_not_remembered(
    private_key: RSAPrivateKey, other_key: RSAPrivateKey, kid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = {kid: private_key.public_key()}
    verifier = TokenVerifier(keys.get, issuer=ISSUER, audience=AUDIENCE)
    forged = sign_access_token(other_key, kid, claims())  # the right kid, the wrong key
    decoded = counting_decode(monkeypatch)
    for _ in range(3):
        with pytest.raises(InvalidTokenError):
            verifier.verify(forged)
    assert len(decoded) == 3


def test_the_memory_is_bounded_least_recently_used_first(
    private_key: RSAPrivateKey, kid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = {kid: private_key.public_key()}
    verifier = TokenVerifier(keys.get, issuer=ISSUER, audience=AUDIENCE, cache_size=2)
    tokens = [sign_access_token(private_key, kid, claims(sub=f"u{n}")) for n in range(3)]
    for token in tokens[:2]:
        verifier.verify(token)
    verifier.verify(tokens[0])  # now the most recent
    verifier.verify(tokens[2])  # pushes tokens[1] out
    decoded = counting_decode(monkeypatch)
    verifier.verify(tokens[0])
    verifier.verify(tokens[2])
    assert decoded == []
    verifier.verify(tokens[1])
    assert decoded == [tokens[1]]
