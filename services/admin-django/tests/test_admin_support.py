"""The support console: who may look and act, and what it asks of the users and orders services.

The users service (users-fastapi) and the orders service (legacy-flask) are not
running here. ``FakePeers`` (the ``peers`` fixture) STANDS IN for both behind an
``httpx.MockTransport`` inside the console's real ``ServiceClient``s;
``tests/e2e`` exercises the real services.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.test import Client

from admin_django.audit.models import AuditEvent
from admin_django.support.roles import ACTING, READ_ONLY

pytestmark = pytest.mark.usefixtures("db")

USERS = "/admin/support/users/"
Login = Callable[..., Client]


def detail(user: dict[str, Any]) -> str:
    return f"{USERS}{user['id']}/"


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.fixture
def customer(peers: Any) -> dict[str, Any]:
    """A user with a paid and a cancelled order."""
    user = peers.add_user("carol@example.com")
    peers.add_order(user["id"], status="paid")
    peers.add_order(user["id"], status="cancelled")
    return user


@pytest.fixture
def acting(login: Login) -> Client:
    return login("sam", group=ACTING)


@pytest.fixture
def readonly(login: Login) -> Client:
    return login("rita", group=READ_ONLY)


# -- who may look ----------------------------------------------------------------------------


def test_anonymous_is_sent_to_the_admin_login(client: Client) -> None:
    response = client.get(USERS)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")
    assert "/admin/support/users/" in response["Location"]


def test_a_user_who_is_not_staff_is_sent_to_the_login(login: Login) -> None:
    response = login("customer", is_staff=False).get(USERS)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_staff_in_no_support_group_gets_403(login: Login, peers: Any) -> None:
    user = peers.add_user("dave@example.com")
    client = login("nobody")

    listing = client.get(USERS)
    page = client.get(detail(user))
    action = client.post(detail(user), {"action": "deactivate"})

    assert [listing.status_code, page.status_code, action.status_code] == [403, 403, 403]
    assert listing["Content-Type"].startswith("text/html")  # the admin's own pages stay HTML
    assert peers.requests == []  # refused before any peer was asked


# -- looking ---------------------------------------------------------------------------------


def test_the_list_shows_the_users_services_users(
    readonly: Client, peers: Any, customer: dict[str, Any]
) -> None:
    peers.add_user("erin@example.com", is_active=False)

    response = readonly.get(USERS)

    assert response.status_code == 200
    assert b"carol@example.com" in response.content
    assert b"erin@example.com" in response.content
    assert detail(customer).encode() in response.content
    [sent] = peers.sent("GET", "/api/users")
    assert sent.headers["X-Acting-For"] == "rita"
    assert sent.url.params["limit"] == "20"


def test_the_list_searches_by_email(readonly: Client, peers: Any, customer: dict[str, Any]) -> None:
    peers.add_user("erin@example.com")

    response = readonly.get(USERS, {"email": " carol@example.com "})

    assert b"carol@example.com" in response.content
    assert b"erin@example.com" not in response.content
    assert peers.sent("GET", "/api/users")[0].url.params["email"] == "carol@example.com"


def test_the_detail_shows_the_user_and_their_orders(
    readonly: Client, peers: Any, customer: dict[str, Any]
) -> None:
    response = readonly.get(detail(customer))

    assert response.status_code == 200
    assert b"carol@example.com" in response.content
    for order in peers.orders.values():
        assert order["id"].encode() in response.content
    [orders_call] = peers.sent("GET", "/api/orders")
    assert orders_call.url.params["user_id"] == customer["id"]
    assert orders_call.headers["X-Acting-For"] == "rita"


def test_the_detail_page_still_greets_the_staff_member(
    readonly: Client, customer: dict[str, Any]
) -> None:
    # The page shows a user of the users service; the admin's header must keep naming
    # the logged-in staff member (and offer their password change).
    response = readonly.get(detail(customer))

    assert b"<strong>rita</strong>" in response.content
    assert b"/admin/logout/" in response.content


def test_a_user_unknown_to_the_users_service_is_said_so(readonly: Client, peers: Any) -> None:
    response = readonly.get(f"{USERS}{uuid.uuid4()}/")

    assert response.status_code == 200
    assert b"No such user" in response.content


def test_read_only_staff_see_no_action_buttons(readonly: Client, customer: dict[str, Any]) -> None:
    response = readonly.get(detail(customer))

    assert b'id="user-actions"' not in response.content
    assert b'value="deactivate"' not in response.content
    assert b'class="refund"' not in response.content


def test_acting_staff_see_the_buttons_and_a_refund_only_for_paid_orders(
    acting: Client, customer: dict[str, Any]
) -> None:
    response = acting.get(detail(customer))

    assert b'id="user-actions"' in response.content
    assert b'value="deactivate"' in response.content
    assert response.content.count(b'class="refund"') == 1


# -- acting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [{"action": "deactivate"}, {"action": "refund", "order_id": str(uuid.uuid4()), "reason": "x"}],
    ids=["deactivate", "refund"],
)
def test_read_only_staff_cannot_act(
    readonly: Client, peers: Any, customer: dict[str, Any], form: dict[str, str]
) -> None:
    response = readonly.post(detail(customer), form)

    assert response.status_code == 403
    assert [r for r in peers.requests if r.method == "POST"] == []
    assert customer["is_active"] is True


def test_deactivate_calls_the_users_service_acting_for_the_staff_member(
    acting: Client, peers: Any, customer: dict[str, Any]
) -> None:
    response = acting.post(detail(customer), {"action": "deactivate"}, follow=True)

    assert response.redirect_chain == [(detail(customer), 302)]
    [sent] = peers.sent("POST", f"/api/users/{customer['id']}/deactivate")
    assert sent.headers["X-Acting-For"] == "sam"
    scheme, token = sent.headers["Authorization"].split(" ")
    assert scheme == "Basic"
    secret = settings.CONFIG.service_secret.get_secret_value()
    assert base64.b64decode(token).decode() == f"admin-django:{secret}"
    assert customer["is_active"] is False
    assert messages_of(response) == ["User deactivated."]
    assert b'value="reactivate"' in response.content


def test_reactivate(acting: Client, peers: Any) -> None:
    user = peers.add_user("frank@example.com", is_active=False)

    response = acting.post(detail(user), {"action": "reactivate"}, follow=True)

    assert len(peers.sent("POST", f"/api/users/{user['id']}/reactivate")) == 1
    assert user["is_active"] is True
    assert messages_of(response) == ["User reactivated."]


def test_refund_posts_the_reason_to_the_orders_service(
    acting: Client, peers: Any, customer: dict[str, Any]
) -> None:
    paid = next(o for o in peers.orders.values() if o["status"] == "paid")

    response = acting.post(
        detail(customer),
        {"action": "refund", "order_id": paid["id"], "reason": "  arrived broken  "},
        follow=True,
    )

    [sent] = peers.sent("POST", f"/api/orders/{paid['id']}/refund")
    assert json.loads(sent.content) == {"reason": "arrived broken"}
    assert sent.headers["X-Acting-For"] == "sam"
    assert paid["status"] == "refunded"
    assert messages_of(response) == [f"Order {paid['id']} refunded."]


def test_a_refusal_of_the_orders_service_is_shown(
    acting: Client, peers: Any, customer: dict[str, Any]
) -> None:
    cancelled = next(o for o in peers.orders.values() if o["status"] == "cancelled")

    response = acting.post(
        detail(customer),
        {"action": "refund", "order_id": cancelled["id"], "reason": "please"},
        follow=True,
    )

    assert response.status_code == 200
    assert messages_of(response) == ["Refused: Only a paid order can be refunded (cancelled)"]


@pytest.mark.parametrize(
    ("form", "message"),
    [
        (
            {"action": "refund", "order_id": "not-a-uuid", "reason": "why"},
            "That is not an order id.",
        ),
        ({"action": "refund", "reason": "why"}, "That is not an order id."),
        ({"action": "explode"}, "Unknown action."),
        ({}, "Unknown action."),
    ],
)
def test_a_malformed_action_changes_nothing(
    acting: Client,
    peers: Any,
    customer: dict[str, Any],
    form: dict[str, str],
    message: str,
) -> None:
    response = acting.post(detail(customer), form, follow=True)

    assert messages_of(response) == [message]
    assert [r for r in peers.requests if r.method == "POST"] == []


def test_a_superuser_may_act(admin_client: Client, peers: Any, customer: dict[str, Any]) -> None:
    admin_client.post(detail(customer), {"action": "deactivate"})

    assert customer["is_active"] is False


def test_an_action_is_recorded_in_the_audit_trail(
    acting: Client, peers: Any, customer: dict[str, Any]
) -> None:
    acting.post(detail(customer), {"action": "deactivate"})

    [event] = AuditEvent.objects.filter(service="admin-django")
    assert (event.actor_type, event.actor_id) == ("staff", "sam")
    assert event.subject_id == "/admin/support/users/{user_id}/"
    assert event.payload == {"path": detail(customer), "status": 302}


# -- a service that is down ------------------------------------------------------------------


def test_the_list_says_when_the_users_service_is_unavailable(readonly: Client, peers: Any) -> None:
    peers.down["users-fastapi"] = httpx.ConnectError

    response = readonly.get(USERS)

    assert response.status_code == 200
    assert b"The users service is unavailable right now" in response.content
    # GETs are retried (the kit's client), then given up.
    assert len(peers.sent("GET", "/api/users")) == settings.CONFIG.client_max_attempts


def test_the_detail_says_which_service_is_unavailable(
    readonly: Client, peers: Any, customer: dict[str, Any]
) -> None:
    peers.down["legacy-flask"] = httpx.ConnectError

    orders_down = readonly.get(detail(customer))
    peers.down = {"users-fastapi": httpx.ReadTimeout}
    users_down = readonly.get(detail(customer))

    assert orders_down.status_code == 200
    assert b"carol@example.com" in orders_down.content
    assert b"The orders service is unavailable right now" in orders_down.content
    assert users_down.status_code == 200
    assert b"The users service is unavailable right now" in users_down.content
    assert b"Orders" in users_down.content
    assert peers.orders[next(iter(peers.orders))]["id"].encode() in users_down.content


def test_an_action_while_the_service_is_down_changes_nothing_and_says_so(
    acting: Client, peers: Any, customer: dict[str, Any]
) -> None:
    peers.down["users-fastapi"] = httpx.ConnectError

    response = acting.post(detail(customer), {"action": "deactivate"}, follow=True)

    assert response.status_code == 200
    assert messages_of(response) == [
        "The users-fastapi service is unavailable right now; nothing was changed."
    ]
    # A POST without an idempotency key is sent once, never retried.
    assert len(peers.sent("POST", f"/api/users/{customer['id']}/deactivate")) == 1
