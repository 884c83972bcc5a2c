"""POST /api/users/register: public fields out, secrets never; every invalid field named."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

REGISTER = "/api/users/register"


def _body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "email": "ada@example.com",
        "password": "correct horse battery staple",
        "full_name": "Ada Lovelace",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def test_register_answers_201_with_public_fields_only(api) -> None:
    response = await api.client.post(REGISTER, json=_body(email="Ada@Example.com"))

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "email", "full_name", "role", "is_active", "created_at"}
    uuid.UUID(body["id"])
    assert body["email"] == "Ada@example.com"  # as typed (the domain is case-insensitive)
    assert body["full_name"] == "Ada Lovelace"
    assert body["role"] == "member"
    assert body["is_active"] is True
    assert datetime.fromisoformat(body["created_at"]).utcoffset() is not None
    text = response.text.lower()
    assert "password" not in text
    assert "argon2" not in text
    assert response.headers["x-request-id"]


async def test_register_duplicate_email_differing_in_case_is_409(api) -> None:
    await api.register("grace@example.com")

    response = await api.client.post(REGISTER, json=_body(email="GRACE@EXAMPLE.COM"))

    body = api.problem(response, 409, "conflict")
    assert "already exists" in body["detail"]


async def test_register_duplicate_email_with_surrounding_spaces_is_409(api) -> None:
    await api.register("linus@example.com")

    response = await api.client.post(REGISTER, json=_body(email="  Linus@example.com "))

    api.problem(response, 409, "conflict")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": ""}, "email"),
        ({"password": "short"}, "password"),
        ({"password": " " * 20}, "password"),
        ({"password": "x" * 257}, "password"),
        ({"password": "  " + "x" * 255}, "password"),
        ({"full_name": ""}, "full_name"),
        ({"full_name": "   "}, "full_name"),
        ({"full_name": " " + "n" * 200}, "full_name"),
        ({"full_name": "Ada\x00Lovelace"}, "full_name"),
        ({"role": "staff"}, "role"),
        ({"is_active": False}, "is_active"),
    ],
    ids=[
        "invalid-email",
        "empty-email",
        "short-password",
        "blank-password",
        "long-password",
        "long-password-with-spaces",
        "empty-name",
        "blank-name",
        "long-name-with-a-space",
        "nul-in-name",
        "mass-assign-role",
        "mass-assign-active",
    ],
)
async def test_register_invalid_field_is_422_naming_it(api, overrides, field) -> None:
    response = await api.client.post(REGISTER, json=_body(**overrides))

    body = api.problem(response, 422, "validation-error")
    assert api.error_fields(body) == {field}
    error = body["errors"][0]
    assert error["location"] == "body"
    assert error["pointer"] == f"#/{field}"
    assert error["detail"]
    assert field in body["detail"]


async def test_register_keeps_the_password_as_typed_and_trims_the_name(api) -> None:
    """Limits apply to what was sent (as documented); a password keeps its spaces."""
    password = "  correct horse battery staple  "
    response = await api.client.post(
        REGISTER, json=_body(email="trim@example.com", password=password, full_name=" Ada ")
    )
    assert response.status_code == 201, response.text
    assert response.json()["full_name"] == "Ada"

    await api.login("trim@example.com", password)
    refused = await api.client.post(
        "/api/users/login", json={"email": "trim@example.com", "password": password.strip()}
    )
    api.problem(refused, 401)


@pytest.mark.parametrize("missing", ["email", "password", "full_name"])
async def test_register_missing_field_is_422_naming_it(api, missing) -> None:
    body = _body()
    del body[missing]

    response = await api.client.post(REGISTER, json=body)

    problem = api.problem(response, 422, "validation-error")
    assert api.error_fields(problem) == {missing}


async def test_register_names_every_invalid_field_at_once(api) -> None:
    response = await api.client.post(
        REGISTER, json={"email": "nope", "password": "short", "role": "staff"}
    )

    body = api.problem(response, 422, "validation-error")
    assert api.error_fields(body) == {"email", "password", "full_name", "role"}


async def test_register_refused_role_creates_no_account(api) -> None:
    response = await api.client.post(REGISTER, json=_body(role="staff"))
    api.problem(response, 422)

    # The same e-mail is still free: nothing was written.
    created = await api.register("ada@example.com")
    assert created["role"] == "member"


async def test_register_malformed_json_is_422_malformed_body(api) -> None:
    response = await api.client.post(
        REGISTER,
        content=b'{"email": "ada@example.com", "password": ',
        headers={"Content-Type": "application/json"},
    )

    body = api.problem(response, 422, "malformed-body")
    assert body["title"] == "Malformed request body"
    assert "not valid JSON" in body["detail"]


async def test_register_body_that_is_not_an_object_is_422(api) -> None:
    response = await api.client.post(REGISTER, json=["ada@example.com"])

    api.problem(response, 422, "validation-error")


async def test_register_oversized_body_is_413(api) -> None:
    huge = _body(full_name="x" * 70_000)

    response = await api.client.post(REGISTER, json=huge)

    api.problem(response, 413)
