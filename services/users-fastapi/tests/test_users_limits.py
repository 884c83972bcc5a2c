"""Structural limits before parsing (service_kit.limits) in the users service: the kit's
settings under ``USERS_``, a breach answered as an ``input-limit`` problem before the route's
body model sees the body."""

from __future__ import annotations

import json

from polyframe_testing.problems import check_problem
from users_fastapi.settings import UsersSettings

REGISTER = "/api/users/register"
BODY = {"email": "ada@example.com", "password": "correct horse battery staple"}


def test_the_limits_are_users_settings(monkeypatch, signing_key_pem: str) -> None:
    monkeypatch.setenv("USERS_JSON_MAX_DEPTH", "5")
    settings = UsersSettings(environment="test", jwt_private_key=signing_key_pem)
    assert settings.input_limits.json_max_depth == 5


async def test_a_body_nested_past_the_limit_is_refused_before_the_model(api) -> None:
    deep = {**BODY, "full_name": json.loads("[" * 32 + "]" * 32)}  # 33 levels with the object
    at_limit = {**BODY, "full_name": json.loads("[" * 31 + "]" * 31)}

    refused = await api.client.post(REGISTER, content=json.dumps(deep), headers=_json())
    model = await api.client.post(REGISTER, content=json.dumps(at_limit), headers=_json())

    problem = check_problem(refused.json(), 422, kind="input-limit")
    assert "json_max_depth" in problem["detail"]
    check_problem(model.json(), 422, kind="validation-error")  # the model's turn: not a string


async def test_numbers_no_database_stores_are_refused(api) -> None:
    for number in ("1e400", "NaN", str(2**63), "9" * 5000):
        text = json.dumps(BODY)[:-1] + f', "full_name": {number}}}'
        response = await api.client.post(REGISTER, content=text, headers=_json())
        check_problem(response.json(), 422, kind="input-limit")


async def test_too_many_headers_are_431(api) -> None:
    extra = {f"x-extra-{i}": "1" for i in range(100)}
    response = await api.client.get("/api/users/.well-known/jwks.json", headers=extra)
    problem = check_problem(response.json(), 431, kind="input-limit")
    assert "headers_max_count" in problem["detail"]


def _json() -> dict[str, str]:
    return {"content-type": "application/json"}
