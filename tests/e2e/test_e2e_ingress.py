"""What the ingress exposes, and what it must not."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

USERS = "/api/users"
OPERATIONAL = ("/metrics", "/healthz", "/readyz")


def _looks_operational(response: httpx.Response) -> bool:
    """Prometheus exposition text or a health report, whatever the status code."""
    text = response.text
    if "# HELP " in text or "# TYPE " in text:
        return True
    try:
        body = json.loads(text)
    except ValueError:
        return False
    return isinstance(body, dict) and "checks" in body and "service" in body


@pytest.mark.parametrize("path", OPERATIONAL)
def test_operational_endpoints_are_not_routed(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, (response.status_code, response.text[:300])
    assert not _looks_operational(response), response.text[:300]


@pytest.mark.parametrize(
    "path",
    [
        # Encoded dot segments must not climb out of the prefix to the service's root.
        f"{USERS}/%2e%2e/readyz",
        f"{USERS}/..%2freadyz",
        f"{USERS}/%2e%2e/healthz",
        # A prefix match is per segment: /api/usersX is not /api/users.
        "/api/usersreadyz",
    ],
)
def test_operational_endpoints_are_not_reachable_by_path_tricks(
    client: httpx.Client, path: str
) -> None:
    response = client.get(path)  # httpx sends encoded dot segments as they are
    assert response.request.url.raw_path == path.encode()
    assert response.status_code != 200, response.text[:300]
    assert not _looks_operational(response), response.text[:300]


def test_the_service_itself_is_ready_directly(local_ready: dict[str, Any]) -> None:
    """The checks above mean something: the endpoints exist, only not through the ingress."""
    for name, url in local_ready["services"].items():
        assert url.startswith("http://127.0.0.1:"), url
        with httpx.Client(base_url=url, timeout=10) as direct:
            for path in ("/readyz", "/healthz"):
                response = direct.get(path)
                assert response.status_code == 200, (name, path, response.text)
                assert _looks_operational(response), (name, path, response.text)
                assert response.json()["status"] == "ok"


def test_client_request_id_is_echoed_through_the_ingress(client: httpx.Client) -> None:
    request_id = f"e2e-{uuid.uuid4().hex}"
    for path in (f"{USERS}/.well-known/jwks.json", f"{USERS}/me", f"{USERS}/no/such/route"):
        response = client.get(path, headers={"X-Request-ID": request_id})
        assert response.headers.get("x-request-id") == request_id, (path, response.headers)


def test_a_request_id_is_made_when_the_client_sends_none(client: httpx.Client) -> None:
    first = client.get(f"{USERS}/.well-known/jwks.json").headers.get("x-request-id")
    second = client.get(f"{USERS}/.well-known/jwks.json").headers.get("x-request-id")
    assert first
    assert second
    assert first != second


def test_docs_are_served_under_the_prefix(client: httpx.Client) -> None:
    docs = client.get(f"{USERS}/docs")
    assert docs.status_code == 200, docs.text[:300]
    assert docs.headers["content-type"].startswith("text/html")
    assert f"{USERS}/openapi.json" in docs.text

    schema = client.get(f"{USERS}/openapi.json")
    assert schema.status_code == 200, schema.text[:300]
    assert schema.headers["content-type"].startswith("application/json")
    paths = schema.json()["paths"]
    assert f"{USERS}/register" in paths
    assert f"{USERS}/login" in paths
    assert f"{USERS}/me" in paths
    assert not {"/healthz", "/readyz", "/metrics"} & paths.keys()
