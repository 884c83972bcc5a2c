"""Who may call a route is decided before its request is validated: 401/403 before 422."""

from __future__ import annotations

from flask import Blueprint

from legacy_flask.auth import AccessTable, caller
from service_kit.principal import Principal

ORDERS = "/api/orders"
#: Not a valid order: unknown fields a caller might try to set (mass assignment).
INVALID = {"currency": "EUR", "status": "refunded", "items": []}


def test_an_anonymous_invalid_body_is_401_not_422(api) -> None:
    response = api.post(ORDERS, json=INVALID)
    body = api.problem(response, 401, "unauthenticated")
    assert "errors" not in body


def test_a_service_cannot_learn_the_body_of_a_users_route(api) -> None:
    response = api.post(ORDERS, json=INVALID, headers=api.service("admin-django"))
    api.problem(response, 401, "unauthenticated")


def test_a_member_cannot_learn_the_body_of_a_staff_route(api) -> None:
    member = api.member()
    order = api.place(member)
    response = api.post(f"{ORDERS}/{order['id']}/refund", json={}, headers=member.headers)
    api.problem(response, 403, "forbidden")


def test_the_allowed_caller_still_gets_the_422(api) -> None:
    member = api.member()
    response = api.post(ORDERS, json=INVALID, headers=member.headers)
    body = api.problem(response, 422, "validation-error")
    assert {"status", "items"} <= api.errors(body).keys()


def test_a_view_that_declares_no_caller_is_refused(api) -> None:
    reached: list[str] = []
    probe = Blueprint("probe", __name__, url_prefix="/api/orders/_probe")
    access = AccessTable(probe)

    @probe.get("/declared")
    @access.allow(lambda: Principal(service="probe"))
    def declared() -> dict[str, str | None]:
        reached.append("declared")
        return {"service": caller().service}

    @probe.get("/undeclared")
    def undeclared() -> dict[str, str]:
        reached.append("undeclared")
        return {}

    api.app.register_blueprint(probe)
    client = api.app.test_client()

    refused = client.get("/api/orders/_probe/undeclared", headers=api.member().headers)
    assert "No caller" in api.problem(refused, 403, "forbidden")["detail"]
    allowed = client.get("/api/orders/_probe/declared")
    assert (allowed.status_code, allowed.json) == (200, {"service": "probe"})
    assert reached == ["declared"]
