"""CachedJwks: lazy fetch, max age, rate-limited refetch for unknown kids, stale fallback.

Time comes from an injected clock, never from sleeping.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from service_kit.jwks import CachedJwks, parse_jwks
from service_kit.tokens import (
    InvalidTokenError,
    TokenVerifier,
    key_id,
    public_jwk,
    sign_access_token,
)

MAX_AGE = 600.0
MIN_INTERVAL = 30.0
ISSUER = "https://polyframe.test/users"
AUDIENCE = "polyframe"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Fetcher:
    """The users service's JWKS endpoint: serves ``document``, or fails while ``down``."""

    def __init__(self, *keys: RSAPrivateKey) -> None:
        self.document: dict[str, Any] = jwks_document(*keys)
        self.down = False
        self.calls = 0

    def __call__(self) -> Mapping[str, Any]:
        self.calls += 1
        if self.down:
            raise ConnectionError("users service down")
        return self.document


def jwks_document(*keys: RSAPrivateKey) -> dict[str, Any]:
    return {"keys": [public_jwk(k.public_key(), kid=key_id(k.public_key())) for k in keys]}


def kid_of(key: RSAPrivateKey) -> str:
    return key_id(key.public_key())


def same_key(found: RSAPublicKey | None, expected: RSAPrivateKey) -> bool:
    return found is not None and found.public_numbers() == expected.public_key().public_numbers()


@pytest.fixture(scope="module")
def key_a() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def key_b() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fetcher(key_a: RSAPrivateKey) -> Fetcher:
    return Fetcher(key_a)


@pytest.fixture
def jwks(fetcher: Fetcher, clock: Clock) -> CachedJwks:
    return CachedJwks(
        fetcher, max_age_seconds=MAX_AGE, min_refetch_interval_seconds=MIN_INTERVAL, clock=clock
    )


# --- parse_jwks -----------------------------------------------------------------------


def test_parse_jwks_keeps_rsa_signing_keys(key_a: RSAPrivateKey, key_b: RSAPrivateKey) -> None:
    keys = parse_jwks(jwks_document(key_a, key_b))
    assert set(keys) == {kid_of(key_a), kid_of(key_b)}
    assert same_key(keys[kid_of(key_a)], key_a)
    assert same_key(keys[kid_of(key_b)], key_b)
    assert all(isinstance(key, RSAPublicKey) for key in keys.values())


def test_parse_jwks_ignores_other_entries(key_a: RSAPrivateKey, key_b: RSAPrivateKey) -> None:
    good = public_jwk(key_a.public_key(), kid="good")
    no_use = {k: v for k, v in public_jwk(key_a.public_key(), kid="no-use").items() if k != "use"}
    encryption = public_jwk(key_b.public_key(), kid="enc") | {"use": "enc"}
    kidless = public_jwk(key_b.public_key(), kid=None)
    empty_kid = public_jwk(key_b.public_key(), kid=None) | {"kid": ""}
    ec_key = json.loads(
        jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    ) | {"kid": "ec", "use": "sig"}
    symmetric = {"kty": "oct", "kid": "oct", "k": "c2VjcmV0", "use": "sig"}
    document = {
        "keys": [good, no_use, encryption, kidless, empty_kid, ec_key, symmetric, "junk", 7]
    }
    keys = parse_jwks(document)
    assert set(keys) == {"good", "no-use"}  # "use" defaults to "sig"


@pytest.mark.parametrize("document", [{}, {"keys": []}])
def test_parse_jwks_empty(document: dict[str, Any]) -> None:
    assert parse_jwks(document) == {}


# --- caching --------------------------------------------------------------------------


def test_fetched_lazily_once(jwks: CachedJwks, fetcher: Fetcher, key_a: RSAPrivateKey) -> None:
    assert fetcher.calls == 0  # building the cache touches nothing
    assert same_key(jwks(kid_of(key_a)), key_a)
    assert fetcher.calls == 1
    for _ in range(50):
        assert same_key(jwks(kid_of(key_a)), key_a)
    assert fetcher.calls == 1
    assert jwks.fetches == 1


def test_refreshed_after_max_age(
    jwks: CachedJwks, fetcher: Fetcher, clock: Clock, key_a: RSAPrivateKey
) -> None:
    jwks(kid_of(key_a))
    clock.advance(MAX_AGE - 1)
    jwks(kid_of(key_a))
    assert fetcher.calls == 1
    clock.advance(1)
    jwks(kid_of(key_a))
    assert fetcher.calls == 2
    jwks(kid_of(key_a))
    assert fetcher.calls == 2  # the age starts again from the refresh


def test_refresh_drops_keys_removed_from_the_set(
    jwks: CachedJwks,
    fetcher: Fetcher,
    clock: Clock,
    key_a: RSAPrivateKey,
    key_b: RSAPrivateKey,
) -> None:
    assert jwks(kid_of(key_a)) is not None
    fetcher.document = jwks_document(key_b)
    clock.advance(MAX_AGE)
    assert same_key(jwks(kid_of(key_b)), key_b)
    assert jwks(kid_of(key_a)) is None


# --- unknown kids ---------------------------------------------------------------------


def test_unknown_kid_refetched_once(
    jwks: CachedJwks,
    fetcher: Fetcher,
    clock: Clock,
    key_a: RSAPrivateKey,
    key_b: RSAPrivateKey,
) -> None:
    jwks(kid_of(key_a))
    fetcher.document = jwks_document(key_a, key_b)  # the users service rotated a key in
    clock.advance(MIN_INTERVAL)
    assert same_key(jwks(kid_of(key_b)), key_b)
    assert fetcher.calls == 2
    assert same_key(jwks(kid_of(key_b)), key_b)
    assert same_key(jwks(kid_of(key_a)), key_a)
    assert fetcher.calls == 2


def test_unknown_kid_within_the_interval_is_not_refetched(
    jwks: CachedJwks, fetcher: Fetcher, clock: Clock, key_a: RSAPrivateKey
) -> None:
    jwks(kid_of(key_a))
    clock.advance(MIN_INTERVAL - 1)
    assert jwks("forged") is None
    assert fetcher.calls == 1
    clock.advance(1)
    assert jwks("forged") is None
    assert fetcher.calls == 2


def test_first_call_with_unknown_kid_fetches(jwks: CachedJwks, fetcher: Fetcher) -> None:
    assert jwks("forged") is None
    assert fetcher.calls == 1


def test_stream_of_forged_kids_is_rate_limited(
    jwks: CachedJwks, fetcher: Fetcher, clock: Clock
) -> None:
    for n in range(300):  # one forged token every second for five minutes
        assert jwks(f"forged-{n}") is None
        clock.advance(1)
    # The first call fetches; then at most one fetch per interval.
    assert fetcher.calls == 1 + int(299 // MIN_INTERVAL)
    assert fetcher.calls <= 1 + 300 / MIN_INTERVAL


def test_burst_of_forged_kids_causes_one_fetch(
    jwks: CachedJwks, fetcher: Fetcher, clock: Clock, key_a: RSAPrivateKey
) -> None:
    jwks(kid_of(key_a))
    clock.advance(MIN_INTERVAL)
    for n in range(100):
        assert jwks(f"forged-{n}") is None
    assert fetcher.calls == 2


# --- failures -------------------------------------------------------------------------


def test_failed_first_fetch_raises_and_is_retried(
    jwks: CachedJwks, fetcher: Fetcher, key_a: RSAPrivateKey
) -> None:
    fetcher.down = True
    with pytest.raises(ConnectionError):
        jwks(kid_of(key_a))
    fetcher.down = False
    assert same_key(jwks(kid_of(key_a)), key_a)
    assert fetcher.calls == 2


def test_failed_refresh_keeps_serving_cached_keys(
    jwks: CachedJwks,
    fetcher: Fetcher,
    clock: Clock,
    key_a: RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    jwks(kid_of(key_a))
    fetcher.down = True
    clock.advance(MAX_AGE)
    with caplog.at_level(logging.WARNING, logger="service_kit.jwks"):
        assert same_key(jwks(kid_of(key_a)), key_a)
    assert fetcher.calls == 2
    # Warnings only: the refresh before the outage logs at info when an earlier suite in the
    # same process configured logging at info (services before libs).
    (record,) = [
        r for r in caplog.records if r.name == "service_kit.jwks" and r.levelno >= logging.WARNING
    ]
    assert record.levelno == logging.WARNING
    assert "keeping the cached keys" in record.getMessage()

    # Not retried on every request while the users service is down...
    for _ in range(10):
        assert same_key(jwks(kid_of(key_a)), key_a)
    assert fetcher.calls == 2
    # ...but again after the minimum interval, and a success resets the age.
    clock.advance(MIN_INTERVAL)
    fetcher.down = False
    assert same_key(jwks(kid_of(key_a)), key_a)
    assert fetcher.calls == 3
    clock.advance(MAX_AGE - 1)
    jwks(kid_of(key_a))
    assert fetcher.calls == 3


def test_forged_kids_during_an_outage_are_rate_limited(
    jwks: CachedJwks, fetcher: Fetcher, clock: Clock, key_a: RSAPrivateKey
) -> None:
    jwks(kid_of(key_a))
    fetcher.down = True
    clock.advance(MAX_AGE)
    assert jwks(kid_of(key_a)) is not None  # the failed refresh
    assert fetcher.calls == 2
    for n in range(20):
        assert jwks(f"forged-{n}") is None
        clock.advance(1)
    # One more attempt once the interval since the failed one has passed, not one per token.
    assert fetcher.calls == 2
    clock.advance(MIN_INTERVAL)
    jwks("forged-late")
    assert fetcher.calls == 3


def test_concurrent_first_calls_fetch_once(
    jwks: CachedJwks, fetcher: Fetcher, key_a: RSAPrivateKey
) -> None:
    barrier = threading.Barrier(8)
    found: list[RSAPublicKey | None] = []

    def worker() -> None:
        barrier.wait()
        found.append(jwks(kid_of(key_a)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fetcher.calls == 1
    assert len(found) == 8
    assert all(same_key(key, key_a) for key in found)


# --- with TokenVerifier ---------------------------------------------------------------


def claims() -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "user-42",
        "role": "staff",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }


def test_verifier_accepts_a_rotated_in_key_after_one_refetch(
    jwks: CachedJwks,
    fetcher: Fetcher,
    clock: Clock,
    key_a: RSAPrivateKey,
    key_b: RSAPrivateKey,
) -> None:
    verifier = TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)
    assert verifier.verify(sign_access_token(key_a, kid_of(key_a), claims())).subject == "user-42"
    assert fetcher.calls == 1

    fetcher.document = jwks_document(key_a, key_b)
    clock.advance(MIN_INTERVAL)
    rotated = sign_access_token(key_b, kid_of(key_b), claims())
    assert verifier.verify(rotated).role == "staff"
    assert fetcher.calls == 2
    # From now on both keys verify from the cache.
    verifier.verify(rotated)
    verifier.verify(sign_access_token(key_a, kid_of(key_a), claims()))
    assert fetcher.calls == 2


def test_verifier_refuses_an_unknown_kid_without_refetching_each_time(
    jwks: CachedJwks, fetcher: Fetcher, key_a: RSAPrivateKey, key_b: RSAPrivateKey
) -> None:
    verifier = TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)
    verifier.verify(sign_access_token(key_a, kid_of(key_a), claims()))
    for n in range(20):
        with pytest.raises(InvalidTokenError, match="unknown signing key"):
            verifier.verify(sign_access_token(key_b, f"forged-{n}", claims()))
    assert fetcher.calls == 1


def test_verifier_rejects_a_token_whose_kid_names_another_key(
    jwks: CachedJwks, fetcher: Fetcher, key_a: RSAPrivateKey, key_b: RSAPrivateKey
) -> None:
    verifier = TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(InvalidTokenError, match="invalid token"):
        verifier.verify(sign_access_token(key_b, kid_of(key_a), claims()))
