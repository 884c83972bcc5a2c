"""User access tokens: JWTs signed by the users service, verified everywhere.

Only asymmetric algorithms are accepted (``RS256``): a token signed with
``alg: none`` or with HS256 using the public key as the secret is refused by
construction, because the verifier never offers those algorithms.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

ALGORITHM = "RS256"
REQUIRED_CLAIMS = ("exp", "iat", "nbf", "iss", "aud", "sub")


class InvalidTokenError(Exception):
    """The token is missing, malformed, expired, not yet valid or not ours."""


@dataclass(frozen=True, slots=True)
class AccessClaims:
    subject: str
    role: str
    email: str | None
    raw: Mapping[str, Any]


def key_id(public_key: RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint: stable for a key, changes when the key rotates."""
    jwk = public_jwk(public_key, kid=None)
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_jwk(public_key: RSAPublicKey, kid: str | None) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public_key))
    jwk.update({"use": "sig", "alg": ALGORITHM})
    if kid:
        jwk["kid"] = kid
    return jwk


def sign_access_token(private_key: RSAPrivateKey, kid: str, claims: Mapping[str, Any]) -> str:
    return jwt.encode(dict(claims), private_key, algorithm=ALGORITHM, headers={"kid": kid})


KeyResolver = Callable[[str], RSAPublicKey | None]


class TokenVerifier:
    """Verify a token's signature (key chosen by ``kid``), lifetime, issuer and audience.

    A token that verified is remembered within its lifetime, ``nbf`` to ``exp`` by the
    verifier's clock (at most ``cache_size``, the
    least recently used go first): a client sends the same token with every request,
    and checking its RS256 signature and base64 segments again each time cost more
    than the rest of a cheap read. A remembered token is still refused once it has
    expired, or when its signing key is no longer known (rotated out).
    """

    def __init__(
        self,
        resolve_key: KeyResolver,
        *,
        issuer: str,
        audience: str,
        leeway_seconds: int = 5,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._resolve_key = resolve_key
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway_seconds
        self._cache_size = cache_size
        self._clock = clock
        #: token -> (claims, kid, nbf, exp)
        self._verified: OrderedDict[str, tuple[AccessClaims, str, float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, token: str) -> AccessClaims:
        with self._lock:
            remembered = self._verified.get(token)
            if remembered is not None:
                self._verified.move_to_end(token)
        if remembered is not None:
            claims, kid, not_before, expires = remembered
            now = self._clock()
            if (
                not_before - self.leeway <= now < expires + self.leeway
                and self._resolve_key(kid) is not None
            ):
                return claims
            with self._lock:
                self._verified.pop(token, None)
        claims, kid = self._verify(token)
        with self._lock:
            lifetime = float(claims.raw["nbf"]), float(claims.raw["exp"])
            self._verified[token] = (claims, kid, *lifetime)
            while len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return claims

    def _verify(self, token: str) -> tuple[AccessClaims, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("malformed token") from exc
        if header.get("alg") != ALGORITHM:
            raise InvalidTokenError("unsupported signing algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidTokenError("token has no key id")
        key = self._resolve_key(kid)
        if key is None:
            raise InvalidTokenError("unknown signing key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidTokenError("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidTokenError("token not yet valid") from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("invalid token") from exc
        access = AccessClaims(
            subject=str(claims["sub"]),
            role=str(claims.get("role", "member")),
            email=claims.get("email"),
            raw=claims,
        )
        return access, kid
