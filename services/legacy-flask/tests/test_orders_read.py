"""Listing and reading orders: your own, and staff (by token or through admin-django)."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

ORDERS = "/api/orders"


def _walk(api, headers: dict[str, str], **query: object) -> list[list[dict[str, object]]]:
    """Every page of a listing, following ``next_cursor``."""
    pages: list[list[dict[str, object]]] = []
    cursor = None
    while True:
        params = {**query, **({"cursor": cursor} if cursor else {})}
        response = api.get(ORDERS, query_string=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.get_json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 10, "the cursor does not advance"


def _key(order: dict[str, object]) -> tuple[datetime, uuid.UUID]:
    return datetime.fromisoformat(str(order["created_at"])), uuid.UUID(str(order["id"]))


def test_list_own_orders_page_by_page(api, body) -> None:
    member, other = api.member(), api.member()
    placed = {api.place(member, body((f"SKU-{n}", 1, 100 * n)))["id"] for n in range(5)}
    api.place(other)

    pages = _walk(api, member.headers, limit=2)

    assert [len(page) for page in pages] == [2, 2, 1]
    listed = [order for page in pages for order in page]
    ids = [order["id"] for order in listed]
    assert len(ids) == len(set(ids)) == 5
    assert set(ids) == placed
    assert all(order["user_id"] == str(member.id) for order in listed)
    # Oldest first, ties broken by id: the order the cursor relies on.
    assert listed == sorted(listed, key=_key)
    # Stable: walking again gives the same sequence.
    assert [o["id"] for page in _walk(api, member.headers, limit=2) for o in page] == ids


def test_a_new_user_has_an_empty_list(api) -> None:
    response = api.get(ORDERS, headers=api.member().headers)

    assert response.status_code == 200
    assert response.get_json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param("limit=0", "limit", id="limit-0"),
        pytest.param("limit=101", "limit", id="limit-101"),
        pytest.param("limit=ten", "limit", id="limit-not-a-number"),
        pytest.param("cursor=not-ours", "cursor", id="cursor-forged"),
        pytest.param("cursor=" + "a" * 513, "cursor", id="cursor-too-long"),
        pytest.param("user_id=me", "user_id", id="user-id-not-a-uuid"),
    ],
)
def test_bad_query_parameters_are_422_in_the_query(api, query, field) -> None:
    response = api.get(f"{ORDERS}?{query}", headers=api.member().headers)

    problem = api.problem(response, 422, "validation-error")
    assert api.errors(problem) == {field: "query"}


def test_a_member_may_name_themself(api) -> None:
    member = api.member()
    api.place(member)

    response = api.get(ORDERS, query_string={"user_id": str(member.id)}, headers=member.headers)

    assert response.status_code == 200
    assert len(response.get_json()["items"]) == 1


def test_a_member_cannot_list_someone_elses_orders(api) -> None:
    member, other = api.member(), api.member()
    api.place(other)

    response = api.get(ORDERS, query_string={"user_id": str(other.id)}, headers=member.headers)

    api.problem(response, 403, "forbidden")


def test_staff_list_a_users_orders(api) -> None:
    customer, staff = api.member(), api.staff()
    order = api.place(customer)

    response = api.get(ORDERS, query_string={"user_id": str(customer.id)}, headers=staff.headers)

    assert response.status_code == 200
    assert [o["id"] for o in response.get_json()["items"]] == [order["id"]]
    # Without user_id, staff see their own (none).
    assert api.get(ORDERS, headers=staff.headers).get_json()["items"] == []


def test_admin_acting_for_staff_lists_a_users_orders(api) -> None:
    customer = api.member()
    order = api.place(customer)

    response = api.get(
        ORDERS,
        query_string={"user_id": str(customer.id)},
        headers=api.service("admin-django", acting_for="sam"),
    )

    assert response.status_code == 200
    assert [o["id"] for o in response.get_json()["items"]] == [order["id"]]


def test_a_service_must_name_the_user(api) -> None:
    response = api.get(ORDERS, headers=api.service("admin-django", acting_for="sam"))

    assert "user_id" in api.problem(response, 403, "forbidden")["detail"]


def test_a_service_not_acting_for_staff_cannot_list(api) -> None:
    customer = api.member()
    api.place(customer)

    response = api.get(
        ORDERS, query_string={"user_id": str(customer.id)}, headers=api.service("admin-django")
    )

    api.problem(response, 403, "forbidden")


def test_only_admin_may_act_for_staff(api) -> None:
    customer = api.member()

    response = api.get(
        ORDERS,
        query_string={"user_id": str(customer.id)},
        headers=api.service("users-fastapi", acting_for="sam"),
    )

    api.problem(response, 403, "forbidden")


def test_acting_for_must_be_a_staff_user_name(api) -> None:
    response = api.get(
        ORDERS,
        query_string={"user_id": str(uuid.uuid4())},
        headers=api.service("admin-django", acting_for="sam; DROP TABLE"),
    )

    assert "X-Acting-For" in api.problem(response, 400)["detail"]


@pytest.mark.parametrize(
    ("name", "secret"),
    [("admin-django", "wrong-secret"), ("billing", "whatever-secret")],
    ids=["wrong-secret", "unknown-service"],
)
def test_a_wrong_service_credential_is_401_with_a_basic_challenge(api, name, secret) -> None:
    response = api.get(
        ORDERS,
        query_string={"user_id": str(uuid.uuid4())},
        headers=api.service(name, secret=secret, acting_for="sam"),
    )

    api.problem(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_listing_does_not_ask_the_users_service(api) -> None:
    member = api.member()
    api.users.accounts[member.id] = False  # tokens stay valid until they expire

    assert api.get(ORDERS, headers=member.headers).status_code == 200
    assert api.users.lookups() == 0


# -- one order ------------------------------------------------------------------------------


def test_read_your_own_order(api) -> None:
    member = api.member()
    order = api.place(member)

    response = api.get(f"{ORDERS}/{order['id']}", headers=member.headers)

    assert response.status_code == 200
    assert response.get_json() == order


def test_someone_elses_order_is_404_not_403(api) -> None:
    owner, member = api.member(), api.member()
    order = api.place(owner)

    response = api.get(f"{ORDERS}/{order['id']}", headers=member.headers)

    api.problem(response, 404, "not-found")


def test_an_unknown_order_is_404(api) -> None:
    response = api.get(f"{ORDERS}/{uuid.uuid4()}", headers=api.member().headers)

    api.problem(response, 404, "not-found")


@pytest.mark.parametrize("order_id", ["42", "not-a-uuid", "0b9f2c1e-zzzz"])
def test_a_malformed_order_id_is_404(api, order_id) -> None:
    response = api.get(f"{ORDERS}/{order_id}", headers=api.member().headers)

    api.problem(response, 404)


def test_staff_read_any_order(api) -> None:
    order = api.place(api.member())

    by_token = api.get(f"{ORDERS}/{order['id']}", headers=api.staff().headers)
    by_admin = api.get(
        f"{ORDERS}/{order['id']}", headers=api.service("admin-django", acting_for="sam")
    )

    assert by_token.status_code == by_admin.status_code == 200
    assert by_token.get_json() == by_admin.get_json() == order


def test_a_service_not_acting_for_staff_cannot_read(api) -> None:
    order = api.place(api.member())

    response = api.get(f"{ORDERS}/{order['id']}", headers=api.service("admin-django"))

    api.problem(response, 403, "forbidden")


def test_reading_needs_credentials(api) -> None:
    order = api.place(api.member())

    response = api.get(f"{ORDERS}/{order['id']}")

    api.problem(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"]
