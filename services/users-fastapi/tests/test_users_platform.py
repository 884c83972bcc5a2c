"""What every service offers: health, readiness, OpenAPI and docs, the error shape, request ids."""

from __future__ import annotations

import uuid

import pytest

from service_kit.migrations import script_heads
from users_fastapi.db import MIGRATIONS


async def test_healthz_is_200(api) -> None:
    response = await api.client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "users-fastapi", "checks": {}}


async def test_readyz_is_200_when_the_database_is_at_head(api) -> None:
    response = await api.client.get("/readyz")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["database"]["detail"] == ", ".join(sorted(script_heads(MIGRATIONS)))
    assert response.headers["cache-control"] == "no-store"


async def test_readyz_is_503_naming_the_database_when_not_migrated(unmigrated_api) -> None:
    response = await unmigrated_api.client.get("/readyz")

    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "fail"
    database = body["checks"]["database"]
    assert database["status"] == "fail"
    assert "run the migrations" in database["detail"]
    # Liveness does not depend on the database.
    assert (await unmigrated_api.client.get("/healthz")).status_code == 200


async def test_openapi_lists_the_routes(api) -> None:
    response = await api.client.get("/api/users/openapi.json")

    assert response.status_code == 200
    spec = response.json()
    paths = spec["paths"]
    expected = {
        "/api/users/register": {"post"},
        "/api/users/login": {"post"},
        "/api/users/.well-known/jwks.json": {"get"},
        "/api/users/me": {"get"},
        "/api/users": {"get"},
        "/api/users/{user_id}": {"get"},
        "/api/users/{user_id}/deactivate": {"post"},
        "/api/users/{user_id}/reactivate": {"post"},
    }
    assert set(paths) == set(expected)
    for path, methods in expected.items():
        assert set(paths[path]) == methods, path
    # Error answers are documented as problem+json, the kit's own ones on every route.
    assert (
        "application/problem+json"
        in paths["/api/users/register"]["post"]["responses"]["409"]["content"]
    )
    for item in paths.values():
        for operation in item.values():
            for status in ("413", "415", "422", "503"):
                content = operation["responses"][status]["content"]
                assert set(content) == {"application/problem+json"}, status
    # Health probes are not part of the public API.
    assert "/healthz" not in paths
    assert "/readyz" not in paths


async def test_docs_are_html(api) -> None:
    response = await api.client.get("/api/users/docs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/api/users/openapi.json" in response.text


async def test_unknown_route_is_a_404_problem(api) -> None:
    response = await api.client.get("/api/users/nothing/here")

    api.problem(response, 404)


async def test_wrong_method_is_a_405_problem(api) -> None:
    response = await api.client.delete("/api/users/register")

    api.problem(response, 405)


async def test_a_well_formed_request_id_is_echoed(api) -> None:
    ok = await api.client.get("/healthz", headers={"X-Request-ID": "trace-123.abc"})
    failed = await api.client.get("/api/users/me", headers={"X-Request-ID": "trace-456"})

    assert ok.headers["x-request-id"] == "trace-123.abc"
    assert failed.headers["x-request-id"] == "trace-456"
    api.problem(failed, 401)


async def test_a_malformed_request_id_is_replaced(api) -> None:
    response = await api.client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})

    assert response.headers["x-request-id"] != "bad id with spaces"
    assert len(response.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("post", "/api/users/register", {"json": {}}, 422),
        (
            "post",
            "/api/users/register",
            {"content": b"{", "headers": {"Content-Type": "application/json"}},
            422,
        ),
        ("post", "/api/users/login", {"json": {"email": "a@example.com", "password": "x"}}, 401),
        ("get", "/api/users/me", {}, 401),
        ("get", "/api/users", {}, 401),
        ("get", f"/api/users/{uuid.UUID(int=7)}", {}, 401),
        ("post", f"/api/users/{uuid.UUID(int=7)}/deactivate", {}, 401),
        ("get", "/api/users/missing/route/x", {}, 404),
        ("put", "/api/users/login", {}, 405),
    ],
)
async def test_every_error_is_problem_json_with_a_request_id(
    api, method, path, kwargs, status
) -> None:
    response = await api.client.request(method.upper(), path, **kwargs)

    api.problem(response, status)
