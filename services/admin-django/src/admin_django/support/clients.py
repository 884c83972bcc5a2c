"""Calls from the support console to the users and orders services.

One service client per peer and process (connection reuse), created lazily;
every call names the staff member it is made for (``X-Acting-For``), so the
owning service records that name in the audit trail.
"""

from __future__ import annotations

import uuid
from functools import cache
from typing import Any

from django.conf import settings

from service_kit import telemetry
from service_kit.client import ClientConfig, ServiceClient, ServiceUnavailableError
from service_kit.problems import ProblemError


@cache
def _client(peer: str) -> ServiceClient:
    config = settings.CONFIG
    base_url = {"users-fastapi": config.users_url, "legacy-flask": config.orders_url}[peer]
    return ServiceClient(
        ClientConfig.for_service(config, peer, base_url), telemetry=telemetry.current()
    )


class PeerError(Exception):
    """The peer refused the call (4xx): the message is its problem detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _call(peer: str, method: str, path: str, staff: str, **kwargs: Any) -> Any:
    response = _client(peer).request(method, path, acting_for=staff, **kwargs)
    if response.status_code >= 500:
        raise ServiceUnavailableError(peer, f"HTTP {response.status_code}")
    if response.status_code >= 400:
        try:
            detail = str(response.json().get("detail"))
        except ValueError:
            detail = response.text[:200]
        raise PeerError(response.status_code, detail)
    return response.json()


def users_list(*, staff: str, email: str | None, cursor: str | None, limit: int = 20) -> Any:
    params: dict[str, Any] = {"limit": limit}
    if email:
        params["email"] = email
    if cursor:
        params["cursor"] = cursor
    return _call("users-fastapi", "GET", "/api/users", staff, params=params)


def user_get(*, staff: str, user_id: uuid.UUID) -> Any:
    return _call("users-fastapi", "GET", f"/api/users/{user_id}", staff)


def user_set_active(*, staff: str, user_id: uuid.UUID, active: bool) -> Any:
    action = "reactivate" if active else "deactivate"
    return _call("users-fastapi", "POST", f"/api/users/{user_id}/{action}", staff)


def orders_list(*, staff: str, user_id: uuid.UUID, cursor: str | None, limit: int = 20) -> Any:
    params: dict[str, Any] = {"user_id": str(user_id), "limit": limit}
    if cursor:
        params["cursor"] = cursor
    return _call("legacy-flask", "GET", "/api/orders", staff, params=params)


def order_refund(*, staff: str, order_id: uuid.UUID, reason: str) -> Any:
    return _call(
        "legacy-flask", "POST", f"/api/orders/{order_id}/refund", staff, json={"reason": reason}
    )


__all__ = [
    "PeerError",
    "ProblemError",
    "ServiceUnavailableError",
    "order_refund",
    "orders_list",
    "user_get",
    "user_set_active",
    "users_list",
]
