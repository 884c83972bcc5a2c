"""Who may call a route is decided before its request is validated: 401/403 before 422."""

from __future__ import annotations

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
