"""A cached JWKS: verify users' tokens locally, with no network call per request.

The key set is fetched once and kept; it is refreshed when it is older than
``max_age_seconds``, and once when a token names a ``kid`` the set does not
hold (the users service rotated its key). Refetches for unknown ids are
rate-limited, so a stream of forged ``kid`` values cannot turn into a stream
of calls to the users service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

log = logging.getLogger("service_kit.jwks")

Fetch = Callable[[], Mapping[str, Any]]


def parse_jwks(document: Mapping[str, Any]) -> dict[str, RSAPublicKey]:
    keys: dict[str, RSAPublicKey] = {}
    for entry in document.get("keys", []):
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or not entry.get("kid"):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        key = jwt.PyJWK(entry).key
        if isinstance(key, RSAPublicKey):
            keys[str(entry["kid"])] = key
    return keys


class CachedJwks:
    """Thread-safe key resolver for :class:`service_kit.tokens.TokenVerifier`."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        max_age_seconds: float = 600,
        min_refetch_interval_seconds: float = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._max_age = max_age_seconds
        self._min_interval = min_refetch_interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, RSAPublicKey] = {}
        self._fetched_at: float | None = None
        #: When a fetch was last tried, successful or not: unknown kids are rate-limited on it.
        self._attempted_at: float | None = None
        self.fetches = 0

    def _refresh(self) -> None:
        self.fetches += 1
        self._attempted_at = self._clock()
        try:
            document = self._fetch()
        except Exception:
            if not self._keys:
                raise  # nothing to fall back on: the caller answers 503
            # Keep serving with the keys we have; try again after the minimum interval.
            log.warning("jwks refresh failed; keeping the cached keys", exc_info=True)
            self._fetched_at = self._clock() - self._max_age + self._min_interval
            return
        self._keys = parse_jwks(document)
        self._fetched_at = self._clock()
        log.info("jwks refreshed", extra={"kids": sorted(self._keys)})

    def __call__(self, kid: str) -> RSAPublicKey | None:
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self._max_age
            # An unknown kid means a rotated key: refetch, at most once per interval
            # (counted from the last attempt, so a failing refresh is not retried per token).
            rotated = kid not in self._keys and (
                self._attempted_at is None or now - self._attempted_at >= self._min_interval
            )
            if stale or rotated:
                self._refresh()
            return self._keys.get(kid)
