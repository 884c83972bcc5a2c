"""Cancelling (the customer, within the window) and refunding (staff, once, with a reason)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from legacy_flask.models import OrderStatus

ORDERS = "/api/orders"
REASON = "Parcel lost in transit"


def _ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def cancel(api, user, order_id: str):
    return api.post(f"{ORDERS}/{order_id}/cancel", headers=user.headers)


def refund(api, headers: dict[str, str], order_id: str, reason: str = REASON):
    return api.post(f"{ORDERS}/{order_id}/refund", json={"reason": reason}, headers=headers)


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_your_paid_order_within_the_window(api) -> None:
    member = api.member()
    order = api.place(member)

    response = cancel(api, member, order["id"])

    assert response.status_code == 200, response.text
    cancelled = response.get_json()
    assert cancelled["id"] == order["id"]
    assert cancelled["status"] == OrderStatus.CANCELLED
    assert cancelled["cancelled_at"] is not None
    assert cancelled["cancellable_until"] is None
    assert cancelled["refunded_at"] is None
    assert api.order_row(order["id"]).status == OrderStatus.CANCELLED
    # Reading it again shows the same.
    assert api.get(f"{ORDERS}/{order['id']}", headers=member.headers).get_json() == cancelled


def test_cancel_just_inside_the_window(api) -> None:
    member = api.member()
    order = api.place(member)
    api.set_created_at(order["id"], _ago(minutes=29))

    response = cancel(api, member, order["id"])

    assert response.status_code == 200, response.text


def test_cancel_after_the_window_is_409(api) -> None:
    member = api.member()
    order = api.place(member)
    api.set_created_at(order["id"], _ago(minutes=31))

    response = cancel(api, member, order["id"])

    assert "window" in api.problem(response, 409, "conflict")["detail"]
    assert api.order_row(order["id"]).status == OrderStatus.PAID


def test_a_zero_window_means_no_cancelling(make_api) -> None:
    api = make_api(cancel_window_seconds=0)
    member = api.member()
    order = api.place(member)
    assert order["cancellable_until"] == order["created_at"]

    response = cancel(api, member, order["id"])

    api.problem(response, 409, "conflict")
    assert api.order_row(order["id"]).status == OrderStatus.PAID


def test_cancel_twice_is_409(api) -> None:
    member = api.member()
    order = api.place(member)
    assert cancel(api, member, order["id"]).status_code == 200

    response = cancel(api, member, order["id"])

    assert "cancelled" in api.problem(response, 409, "conflict")["detail"]


def test_cancel_someone_elses_order_is_404(api) -> None:
    owner, member = api.member(), api.member()
    order = api.place(owner)

    response = cancel(api, member, order["id"])

    api.problem(response, 404, "not-found")
    assert api.order_row(order["id"]).status == OrderStatus.PAID


def test_staff_cannot_cancel_for_a_customer(api) -> None:
    order = api.place(api.member())

    by_token = cancel(api, api.staff(), order["id"])
    by_admin = api.post(
        f"{ORDERS}/{order['id']}/cancel", headers=api.service("admin-django", acting_for="sam")
    )

    api.problem(by_token, 404, "not-found")
    api.problem(by_admin, 401, "unauthenticated")
    assert api.order_row(order["id"]).status == OrderStatus.PAID


def test_cancel_an_unknown_order_is_404(api) -> None:
    api.problem(cancel(api, api.member(), str(uuid.uuid4())), 404, "not-found")


def test_cancel_a_refunded_order_is_409(api) -> None:
    member = api.member()
    order = api.place(member)
    assert refund(api, api.staff().headers, order["id"]).status_code == 200

    api.problem(cancel(api, member, order["id"]), 409, "conflict")


# -- refund ---------------------------------------------------------------------------------


def test_a_member_cannot_refund(api) -> None:
    member = api.member()
    order = api.place(member)

    response = refund(api, member.headers, order["id"])

    api.problem(response, 403, "forbidden")
    assert api.order_row(order["id"]).status == OrderStatus.PAID


def test_staff_refund_with_a_reason(api) -> None:
    order = api.place(api.member())
    staff = api.staff()

    response = refund(api, staff.headers, order["id"])

    assert response.status_code == 200, response.text
    refunded = response.get_json()
    assert refunded["status"] == OrderStatus.REFUNDED
    assert refunded["refund_reason"] == REASON
    assert refunded["refunded_at"] is not None
    assert refunded["cancellable_until"] is None
    row = api.order_row(order["id"])
    assert (row.status, row.refund_reason, row.refunded_by) == (
        OrderStatus.REFUNDED,
        REASON,
        f"user:{staff.id}",
    )
    # A staff token is checked against the users service (deactivated staff cannot refund).
    assert api.users.lookups(staff.id) == 1


def test_admin_acting_for_sam_refunds(api) -> None:
    order = api.place(api.member())

    response = refund(api, api.service("admin-django", acting_for="sam"), order["id"])

    assert response.status_code == 200, response.text
    assert response.get_json()["status"] == OrderStatus.REFUNDED
    assert api.order_row(order["id"]).refunded_by == "sam"
    assert api.users.lookups() == 1  # the customer's, when placing; none for the service


def test_a_service_not_acting_for_staff_cannot_refund(api) -> None:
    order = api.place(api.member())

    response = refund(api, api.service("admin-django"), order["id"])

    api.problem(response, 403, "forbidden")
    assert api.order_row(order["id"]).status == OrderStatus.PAID


def test_refunds_ignore_the_cancel_window(api) -> None:
    order = api.place(api.member())
    api.set_created_at(order["id"], _ago(days=3))

    assert refund(api, api.staff().headers, order["id"]).status_code == 200


def test_refund_a_cancelled_order_is_409(api) -> None:
    member = api.member()
    order = api.place(member)
    assert cancel(api, member, order["id"]).status_code == 200

    response = refund(api, api.staff().headers, order["id"])

    api.problem(response, 409, "conflict")
    row = api.order_row(order["id"])
    assert (row.status, row.refund_reason) == (OrderStatus.CANCELLED, None)


def test_refund_twice_is_409(api) -> None:
    order = api.place(api.member())
    staff = api.staff()
    assert refund(api, staff.headers, order["id"]).status_code == 200

    response = refund(api, staff.headers, order["id"], reason="Another reason")

    api.problem(response, 409, "conflict")
    assert api.order_row(order["id"]).refund_reason == REASON


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param({"reason": "no"}, "reason", id="too-short"),
        pytest.param({"reason": "x" * 501}, "reason", id="too-long"),
        # Limits apply to what was sent (the documented maxLength), before any trimming.
        pytest.param({"reason": " " + "x" * 500}, "reason", id="too-long-with-a-space"),
        pytest.param({"reason": "     "}, "reason", id="blank"),
        # PostgreSQL stores no NUL in text (a 500 there before; SQLite kept it).
        pytest.param({"reason": "Dam\x00aged"}, "reason", id="nul"),
        pytest.param({}, "reason", id="missing"),
        pytest.param({"reason": REASON, "amount": 5}, "amount", id="unknown-field"),
    ],
)
def test_a_bad_refund_body_is_422(api, payload, field) -> None:
    order = api.place(api.member())

    response = api.post(f"{ORDERS}/{order['id']}/refund", json=payload, headers=api.staff().headers)

    assert api.errors(api.problem(response, 422, "validation-error")) == {field: "body"}
    assert api.order_row(order["id"]).status == OrderStatus.PAID


def test_a_deactivated_staff_token_cannot_refund(api) -> None:
    order = api.place(api.member())
    staff = api.staff(active=False)

    response = refund(api, staff.headers, order["id"])

    assert "deactivated" in api.problem(response, 403, "forbidden")["detail"]
    assert api.order_row(order["id"]).status == OrderStatus.PAID


def test_staff_refund_while_the_users_service_is_down_is_503(api) -> None:
    order = api.place(api.member())
    api.users.lookup_error = httpx.ConnectError

    response = refund(api, api.staff().headers, order["id"])

    api.problem(response, 503, "dependency-unavailable")
    assert response.headers["Retry-After"]
    assert api.order_row(order["id"]).status == OrderStatus.PAID


def test_refund_an_unknown_order_is_404(api) -> None:
    response = refund(api, api.staff().headers, str(uuid.uuid4()))

    api.problem(response, 404, "not-found")
