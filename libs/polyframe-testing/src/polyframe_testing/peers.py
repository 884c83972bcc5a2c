"""Calling and standing in for the services in tests: a trusted service's headers, the
users service's token-signing key, and an ASGI app served in process with its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from service_kit.credentials import ACTING_FOR_HEADER, basic_credential


def as_service(name: str, secret: str, acting_for: str | None = None) -> dict[str, str]:
    """Headers authenticating as service ``name`` (acting for a staff member, if given)."""
    headers = {"Authorization": basic_credential(name, secret)}
    if acting_for is not None:
        headers[ACTING_FOR_HEADER] = acting_for
    return headers


def generate_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65_537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@asynccontextmanager
async def asgi_client(app: Any, base_url: str = "http://test") -> AsyncIterator[httpx.AsyncClient]:
    """``app`` with its lifespan run, and a client that talks to it in process."""
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url=base_url
        ) as client,
    ):
        yield client
