"""RFC 9457 problem details: body shape, titles, field errors and helpers."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from service_kit.fastapi import install as install_fastapi
from service_kit.problems import (
    CONFLICT,
    DEPENDENCY_UNAVAILABLE,
    FORBIDDEN,
    INTERNAL,
    NOT_FOUND,
    PROBLEM_CONTENT_TYPE,
    PROBLEM_SCHEMA,
    TYPE_PREFIX,
    UNAUTHENTICATED,
    VALIDATION,
    FieldError,
    Problem,
    ProblemError,
    conflict,
    dependency_unavailable,
    forbidden,
    internal_error,
    invalid_field,
    not_found,
    openapi_problem_responses,
    status_title,
    unauthenticated,
    validation_problem,
)


def test_content_type() -> None:
    assert PROBLEM_CONTENT_TYPE == "application/problem+json"


def test_minimal_problem_shape() -> None:
    body = Problem(status=404).as_dict()
    assert body == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "Not Found",
        "instance": None,
    }
    assert "errors" not in body
    json.dumps(body)  # serialisable as is


def test_full_problem_shape() -> None:
    problem = Problem(
        status=409,
        title="Conflict here",
        detail="Email already taken",
        type=CONFLICT,
        instance="/api/users",
        errors=[FieldError(field="email", detail="already taken", code="unique")],
        headers={"X-Ignored": "1"},
    )
    assert problem.as_dict() == {
        "type": CONFLICT,
        "title": "Conflict here",
        "status": 409,
        "detail": "Email already taken",
        "instance": "/api/users",
        "errors": [
            {
                "field": "email",
                "location": "body",
                "pointer": "#/email",
                "detail": "already taken",
                "code": "unique",
            }
        ],
    }
    # Headers travel with the problem, never inside its body.
    assert "headers" not in problem.as_dict()


@pytest.mark.parametrize(
    ("status", "title"),
    [
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (500, "Internal Server Error"),
        (503, "Service Unavailable"),
    ],
)
def test_status_titles(status: int, title: str) -> None:
    assert status_title(status) == title
    assert Problem(status=status).as_dict()["title"] == title


@pytest.mark.parametrize("status", [299, 599, 999])
def test_unknown_status_title(status: int) -> None:
    assert status_title(status) == "Error"


def test_nested_field_pointer() -> None:
    error = FieldError(field="items.0.quantity", detail="must be positive")
    assert error.as_dict() == {
        "field": "items.0.quantity",
        "location": "body",
        "pointer": "#/items/0/quantity",
        "detail": "must be positive",
    }


def test_non_body_field_has_no_pointer() -> None:
    error = FieldError(field="limit", detail="too big", location="query")
    assert error.as_dict() == {"field": "limit", "location": "query", "detail": "too big"}


def test_whole_body_error_points_at_document_root() -> None:
    assert FieldError(field="", detail="not JSON").as_dict()["pointer"] == "#"


def test_validation_problem_names_fields() -> None:
    problem = validation_problem(
        [
            FieldError(field="name", detail="required"),
            FieldError(field="email", detail="invalid"),
            FieldError(field="email", detail="too long"),
            FieldError(field="", detail="x", location="query"),
        ]
    )
    assert problem.status == 422
    assert problem.type == VALIDATION
    assert problem.title == "Validation failed"
    assert problem.detail == "Invalid value for: email, name, query"
    body = problem.as_dict()
    assert [error["field"] for error in body["errors"]] == ["name", "email", "email", ""]


def test_validation_problem_custom_detail_and_empty_list() -> None:
    assert validation_problem([], detail="Nope").detail == "Nope"
    assert validation_problem([]).detail == "Invalid value for: the request"


def test_invalid_field() -> None:
    error = invalid_field("start", "must be before end", location="query")
    assert isinstance(error, ProblemError)
    body = error.problem.as_dict()
    assert body["status"] == 422
    assert body["type"] == VALIDATION
    assert body["title"] == "Validation failed"
    assert body["detail"] == "Invalid value for: start"
    assert body["errors"] == [
        {"field": "start", "location": "query", "detail": "must be before end"}
    ]


def test_invalid_field_defaults_to_body() -> None:
    body = invalid_field("items.1.sku", "unknown product").problem.as_dict()
    assert body["errors"][0]["pointer"] == "#/items/1/sku"


def test_problem_error_message_and_copies() -> None:
    errors = [FieldError(field="a", detail="b")]
    headers = {"Retry-After": "3"}
    exc = ProblemError(429, errors=errors, headers=headers)
    assert str(exc) == "Too Many Requests"
    assert exc.problem.detail is None
    assert exc.problem.as_dict()["detail"] == "Too Many Requests"
    errors.clear()
    headers.clear()
    assert exc.problem.errors == [FieldError(field="a", detail="b")]
    assert exc.problem.headers == {"Retry-After": "3"}
    assert str(ProblemError(400, "Bad thing")) == "Bad thing"


def test_helpers() -> None:
    auth = unauthenticated()
    assert auth.problem.status == 401
    assert auth.problem.type == UNAUTHENTICATED
    assert "WWW-Authenticate" in auth.problem.headers
    assert forbidden().problem.status == 403
    assert forbidden().problem.type == FORBIDDEN
    assert not_found("No such user").problem.as_dict()["detail"] == "No such user"
    assert not_found().problem.type == NOT_FOUND
    assert conflict("dup").problem.status == 409
    unavailable = dependency_unavailable("orders is down", retry_after=7)
    assert unavailable.problem.status == 503
    assert unavailable.problem.type == DEPENDENCY_UNAVAILABLE
    assert unavailable.problem.headers == {"Retry-After": "7"}
    assert unavailable.problem.title == "Dependency unavailable"


def test_internal_error_reveals_nothing() -> None:
    body = internal_error().as_dict()
    assert body["status"] == 500
    assert body["type"] == INTERNAL
    assert "request id" in body["detail"]


def test_types_are_urns() -> None:
    for problem_type in (VALIDATION, CONFLICT, INTERNAL, NOT_FOUND):
        assert problem_type.startswith(TYPE_PREFIX)
        assert TYPE_PREFIX == "urn:polyframe:problem:"


# --- PROBLEM_SCHEMA and the OpenAPI helper --------------------------------------------


def test_problem_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(PROBLEM_SCHEMA)


@pytest.mark.parametrize(
    "problem",
    [
        Problem(status=404),
        internal_error(),
        conflict("dup").problem,
        unauthenticated().problem,
        dependency_unavailable("down").problem,
        invalid_field("start", "before end", location="query").problem,
        validation_problem(
            [
                FieldError(field="items.0.quantity", detail="too small", code="greater_than"),
                FieldError(field="", detail="not JSON", code="json_invalid"),
            ]
        ),
    ],
)
def test_problem_bodies_match_the_schema(problem: Problem) -> None:
    body = json.loads(json.dumps(problem.as_dict()))
    jsonschema.validate(body, PROBLEM_SCHEMA)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda body: body.pop("detail"), id="missing-detail"),
        pytest.param(lambda body: body.pop("instance"), id="missing-instance"),
        pytest.param(lambda body: body.update(status="422"), id="status-as-string"),
        pytest.param(lambda body: body.update(errors=[{"field": "x"}]), id="incomplete-error"),
        pytest.param(lambda body: body["errors"][0].update(pointer=None), id="null-pointer"),
    ],
)
def test_schema_rejects_malformed_bodies(mutate: Any) -> None:
    body = invalid_field("name", "required").problem.as_dict()
    body["instance"] = "/x"
    mutate(body)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, PROBLEM_SCHEMA)


def test_openapi_problem_responses() -> None:
    responses = openapi_problem_responses(404, 422, 503)
    assert list(responses) == [404, 422, 503]
    assert responses[404]["description"] == "Not Found (RFC 9457 problem details)"
    for entry in responses.values():
        assert entry["content"] == {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_SCHEMA}}
    assert openapi_problem_responses() == {}


class _Item(BaseModel):
    quantity: int


async def test_fastapi_adapter_bodies_match_the_schema() -> None:
    app = FastAPI()
    install_fastapi(app)

    @app.post("/items")
    async def create(item: _Item) -> dict[str, int]:
        return {"quantity": item.quantity}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as http:
        responses = [
            await http.post("/items", json={"quantity": "many"}),
            await http.post("/items", content=b"{", headers={"Content-Type": "application/json"}),
            await http.get("/nowhere"),
            await http.get("/boom"),
        ]
    assert [response.status_code for response in responses] == [422, 422, 404, 500]
    for response in responses:
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        jsonschema.validate(response.json(), PROBLEM_SCHEMA)
