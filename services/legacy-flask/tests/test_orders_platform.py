"""What every service offers: health, readiness, OpenAPI and docs, the error shape, request ids."""

from __future__ import annotations

from legacy_flask.db import MIGRATIONS
from service_kit.migrations import script_heads

ORDERS = "/api/orders"
PROBLEM = "application/problem+json"


def test_healthz_is_200(api) -> None:
    response = api.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "service": "legacy-flask", "checks": {}}


def test_readyz_is_200_when_the_database_is_at_head(api) -> None:
    response = api.get("/readyz")

    assert response.status_code == 200, response.text
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["database"]["detail"] == ", ".join(sorted(script_heads(MIGRATIONS)))
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_is_503_naming_the_database_when_not_migrated(unmigrated_api) -> None:
    response = unmigrated_api.get("/readyz")

    assert response.status_code == 503, response.text
    body = response.get_json()
    assert body["status"] == "fail"
    database = body["checks"]["database"]
    assert database["status"] == "fail"
    assert "run the migrations" in database["detail"]
    # Liveness does not depend on the database.
    assert unmigrated_api.get("/healthz").status_code == 200


def test_openapi_lists_the_five_operations(api) -> None:
    response = api.get(f"{ORDERS}/openapi.json")

    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    operations = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert operations == {
        (ORDERS, "post"),
        (ORDERS, "get"),
        (f"{ORDERS}/{{order_id}}", "get"),
        (f"{ORDERS}/{{order_id}}/cancel", "post"),
        (f"{ORDERS}/{{order_id}}/refund", "post"),
    }
    assert set(document["components"]["securitySchemes"]) == {"bearer", "service"}


def test_openapi_documents_the_error_shape_and_who_may_call(api) -> None:
    document = api.get(f"{ORDERS}/openapi.json").get_json()
    paths = document["paths"]

    for item in paths.values():
        for operation in item.values():
            for status in ("401", "403", "404", "409", "413", "414", "415", "422", "503"):
                assert set(operation["responses"][status]["content"]) == {PROBLEM}, status
    # Routes a service (admin-django) may call say so; the customer-only ones do not.
    assert {"service": []} in paths[ORDERS]["get"]["security"]
    assert {"service": []} in paths[f"{ORDERS}/{{order_id}}"]["get"]["security"]
    assert {"service": []} in paths[f"{ORDERS}/{{order_id}}/refund"]["post"]["security"]
    assert paths[ORDERS]["post"]["security"] == [{"bearer": []}]
    assert paths[f"{ORDERS}/{{order_id}}/cancel"]["post"]["security"] == [{"bearer": []}]


def test_the_served_document_is_the_one_the_tests_validate_against(api) -> None:
    assert api.get(f"{ORDERS}/openapi.json").get_json() == api.contract.document


def test_docs_redirect_to_swagger_ui(api) -> None:
    response = api.get(f"{ORDERS}/docs")

    assert response.status_code in {301, 302, 307, 308}
    assert response.headers["Location"].endswith(f"{ORDERS}/swagger")

    page = api.get(f"{ORDERS}/docs", follow_redirects=True)
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert "swagger-ui" in page.get_data(as_text=True).lower()
    # Its assets are served too (a file response: close it, or its file is left open).
    with api.get(f"{ORDERS}/swagger/js/swagger-ui-bundle.js") as asset:
        assert asset.status_code == 200
        assert "javascript" in asset.mimetype


def test_an_unknown_path_is_a_404_problem(api) -> None:
    response = api.get("/api/orders-nope")

    api.problem(response, 404)


def test_a_wrong_method_is_a_405_problem(api) -> None:
    response = api.request("DELETE", ORDERS, headers=api.member().headers)

    api.problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_every_error_carries_a_request_id(api, body) -> None:
    member = api.member()
    responses = [
        api.get("/nope"),
        api.request("PUT", ORDERS),
        api.post(ORDERS, json=body()),
        api.post(ORDERS, json={"currency": "x"}, headers=member.headers),
        api.post(ORDERS, data="x", content_type="text/plain", headers=member.headers),
        api.get(f"{ORDERS}/00000000-0000-0000-0000-000000000000", headers=member.headers),
    ]

    for response in responses:
        assert response.status_code >= 400
        assert response.mimetype == PROBLEM
        assert len(response.headers["X-Request-ID"]) >= 16


def test_a_well_formed_request_id_is_kept_and_a_bad_one_replaced(api) -> None:
    kept = api.get(f"{ORDERS}/not-an-id", headers={"X-Request-ID": "abc-123.x"})
    replaced = api.get(f"{ORDERS}/not-an-id", headers={"X-Request-ID": "bad id\twith junk"})

    assert kept.headers["X-Request-ID"] == "abc-123.x"
    assert replaced.headers["X-Request-ID"] != "bad id\twith junk"
    assert replaced.headers["X-Request-ID"]
