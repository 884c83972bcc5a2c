"""Placing an order: totals, validation, who may, and what happens when the users service
is down or slow."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

import httpx
import pytest

from legacy_flask.models import IdempotencyRecord, Order, OrderItem, OrderStatus

ORDERS = "/api/orders"


def test_create_computes_the_totals_and_is_paid(api, body) -> None:
    member = api.member()

    response = api.create(
        member, body(("BOOK-42", 2, 1250), ("PEN.blue_1", 3, 199), ("FREE", 1, 0))
    )

    assert response.status_code == 201, response.text
    order = response.get_json()
    assert order["status"] == OrderStatus.PAID
    assert order["user_id"] == str(member.id)
    assert order["currency"] == "EUR"
    assert [(i["sku"], i["line_total_cents"]) for i in order["items"]] == [
        ("BOOK-42", 2500),
        ("PEN.blue_1", 597),
        ("FREE", 0),
    ]
    assert order["total_cents"] == 2500 + 597 + 0
    created_at = datetime.fromisoformat(order["created_at"])
    assert datetime.fromisoformat(order["cancellable_until"]) == created_at + timedelta(
        seconds=1800
    )
    assert order["cancelled_at"] is None
    assert order["refunded_at"] is None
    assert order["refund_reason"] is None
    assert "Idempotent-Replayed" not in response.headers

    row = api.order_row(order["id"])
    assert (row.user_id, row.status, row.total_cents) == (member.id, "paid", 3097)
    assert api.count(OrderItem) == 3
    # No key, no idempotency record.
    assert api.count(IdempotencyRecord) == 0
    # The users service was asked whether this user is active, once.
    assert api.users.lookups(member.id) == 1


def test_the_client_cannot_name_the_total(api, body) -> None:
    member = api.member()
    payload = {**body(("BOOK-42", 1, 1000)), "total_cents": 1}

    response = api.create(member, payload)

    assert api.errors(api.problem(response, 422, "validation-error")) == {"total_cents": "body"}
    assert api.count(Order) == 0


def _items(count: int) -> list[dict[str, object]]:
    return [{"sku": f"SKU-{n}", "quantity": 1, "unit_price_cents": 100} for n in range(count)]


def _line(**changes: object) -> dict[str, object]:
    return {
        "currency": "EUR",
        "items": [{"sku": "BOOK-42", "quantity": 1, "unit_price_cents": 100, **changes}],
    }


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param({"currency": "eur", "items": _items(1)}, "currency", id="currency-lowercase"),
        pytest.param({"currency": "EURO", "items": _items(1)}, "currency", id="currency-4-letters"),
        # The documented pattern applies to what was sent: nothing is stripped first.
        pytest.param({"currency": " EUR", "items": _items(1)}, "currency", id="currency-space"),
        pytest.param({"items": _items(1)}, "currency", id="currency-missing"),
        pytest.param({"currency": "EUR", "items": []}, "items", id="items-empty"),
        pytest.param({"currency": "EUR", "items": _items(101)}, "items", id="items-101"),
        pytest.param({"currency": "EUR"}, "items", id="items-missing"),
        pytest.param(_line(quantity=0), "items.0.quantity", id="quantity-0"),
        pytest.param(_line(quantity=1001), "items.0.quantity", id="quantity-1001"),
        pytest.param(_line(quantity="2"), "items.0.quantity", id="quantity-string"),
        pytest.param(_line(quantity=True), "items.0.quantity", id="quantity-boolean"),
        pytest.param(_line(unit_price_cents=12.5), "items.0.unit_price_cents", id="price-float"),
        pytest.param(_line(unit_price_cents=-1), "items.0.unit_price_cents", id="price-negative"),
        pytest.param(_line(unit_price_cents="100"), "items.0.unit_price_cents", id="price-string"),
        pytest.param(_line(sku="BOOK 42"), "items.0.sku", id="sku-with-space"),
        pytest.param(_line(sku=""), "items.0.sku", id="sku-empty"),
        pytest.param(_line(colour="red"), "items.0.colour", id="unknown-item-field"),
        pytest.param(
            {"currency": "EUR", "items": _items(1), "note": "x"}, "note", id="unknown-field"
        ),
    ],
)
def test_validation_errors_name_the_field(api, payload, field) -> None:
    member = api.member()

    response = api.create(member, payload)

    problem = api.problem(response, 422, "validation-error")
    assert api.errors(problem) == {field: "body"}
    assert field in problem["detail"]
    assert api.count(Order) == 0


def test_a_json_body_that_is_not_an_object_is_422(api) -> None:
    response = api.post(ORDERS, json=["EUR"], headers=api.member().headers)

    problem = api.problem(response, 422, "validation-error")
    assert problem["errors"][0]["location"] == "body"


def test_a_text_body_is_415(api) -> None:
    response = api.post(
        ORDERS, data="currency=EUR", content_type="text/plain", headers=api.member().headers
    )

    assert "application/json" in api.problem(response, 415)["detail"]
    assert api.count(Order) == 0


def test_broken_json_is_422_malformed_body(api) -> None:
    response = api.post(
        ORDERS,
        data='{"currency": "EUR", "items": [',
        content_type="application/json",
        headers=api.member().headers,
    )

    problem = api.problem(response, 422, "malformed-body")
    assert problem["errors"][0]["location"] == "body"
    assert api.count(Order) == 0


def test_a_body_over_the_limit_is_413(api) -> None:
    response = api.post(
        ORDERS,
        data='{"currency": "EUR", "items": []}' + " " * 70_000,
        content_type="application/json",
        headers=api.member().headers,
    )

    api.problem(response, 413)


def test_an_idempotency_key_over_255_characters_is_422_in_the_header(api) -> None:
    response = api.create(api.member(), key="k" * 256)

    problem = api.problem(response, 422, "validation-error")
    assert api.errors(problem) == {"Idempotency-Key": "header"}


# -- who may --------------------------------------------------------------------------------


def test_no_token_is_401_with_a_bearer_challenge(api, body) -> None:
    response = api.post(ORDERS, json=body())

    api.problem(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.count(Order) == 0


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda api, key: "not-a-jwt", id="garbage"),
        pytest.param(lambda api, key: api.token(uuid.uuid4(), lifetime=-60), id="expired"),
        pytest.param(
            lambda api, key: api.token(uuid.uuid4(), nbf=int(time.time()) + 600),
            id="not-yet-valid",
        ),
        pytest.param(lambda api, key: api.token(uuid.uuid4(), aud="elsewhere"), id="audience"),
        pytest.param(lambda api, key: api.token(uuid.uuid4(), iss="mallory"), id="issuer"),
        pytest.param(lambda api, key: api.token(uuid.uuid4(), key=key), id="forged-signature"),
        pytest.param(
            lambda api, key: api.token(uuid.uuid4(), key=key, kid="unknown-kid"), id="unknown-kid"
        ),
        pytest.param(lambda api, key: api.token("not-a-uuid"), id="subject-not-a-uuid"),
    ],
)
def test_an_invalid_token_is_401(api, body, other_key, make_token) -> None:
    token = make_token(api, other_key)

    response = api.post(ORDERS, json=body(), headers={"Authorization": f"Bearer {token}"})

    assert "token" in api.problem(response, 401, "unauthenticated")["detail"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.count(Order) == 0
    assert api.users.lookups() == 0


def test_forged_key_ids_do_not_each_fetch_the_keys(api, body, other_key) -> None:
    for n in range(5):
        token = api.token(uuid.uuid4(), key=other_key, kid=f"forged-{n}")
        response = api.post(ORDERS, json=body(), headers={"Authorization": f"Bearer {token}"})
        api.problem(response, 401, "unauthenticated")

    assert api.users.jwks_fetches() == 1


def test_a_service_credential_cannot_place_orders(api, body) -> None:
    response = api.post(ORDERS, json=body(), headers=api.service("admin-django", acting_for="sam"))

    api.problem(response, 401, "unauthenticated")
    assert api.count(Order) == 0


@pytest.mark.parametrize("known", [True, False], ids=["deactivated", "unknown-to-users"])
def test_an_inactive_user_is_403_and_nothing_is_written(api, known) -> None:
    member = api.member(active=False)
    if not known:
        del api.users.accounts[member.id]

    response = api.create(member, key="first-try")

    api.problem(response, 403, "forbidden")
    assert api.count(Order) == 0
    assert api.count(IdempotencyRecord) == 0
    assert api.users.lookups(member.id) == 1


# -- the users service down or slow ---------------------------------------------------------


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout], ids=["down", "slow"])
def test_users_service_unavailable_is_503_and_nothing_is_written(api, error) -> None:
    member = api.member()
    # The keys are cached from an earlier request; then the users service goes away.
    assert api.get(ORDERS, headers=member.headers).status_code == 200
    api.users.lookup_error = error

    response = api.create(member, key="retry-me")

    problem = api.problem(response, 503, "dependency-unavailable")
    assert "users-fastapi" in problem["detail"]
    assert int(response.headers["Retry-After"]) > 0
    assert api.count(Order) == 0
    assert api.count(IdempotencyRecord) == 0

    # Back up: the same key now places the order (nothing was remembered for it).
    api.users.lookup_error = None
    retried = api.create(member, key="retry-me")
    assert retried.status_code == 201, retried.text
    assert "Idempotent-Replayed" not in retried.headers
    assert api.count(Order) == 1


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout], ids=["down", "slow"])
def test_no_keys_yet_and_users_service_unavailable_is_503(api, body, error) -> None:
    member = api.member()
    api.users.jwks_error = error
    api.users.lookup_error = error

    response = api.post(ORDERS, json=body(), headers=member.headers)

    api.problem(response, 503, "dependency-unavailable")
    assert response.headers["Retry-After"]
    assert api.count(Order) == 0


def test_cached_keys_outlive_a_users_outage_for_reads(api) -> None:
    member = api.member()
    api.place(member)
    api.users.jwks_error = httpx.ConnectError
    api.users.lookup_error = httpx.ConnectError

    response = api.get(ORDERS, headers=member.headers)

    assert response.status_code == 200
    assert len(response.get_json()["items"]) == 1


def test_a_wrong_credential_towards_the_users_service_is_503(make_api) -> None:
    api = make_api(client_secret="not-the-secret-users-knows")
    member = api.member()

    response = api.create(member)

    api.problem(response, 503, "dependency-unavailable")
    assert api.users.refused >= 1
    assert api.count(Order) == 0


def test_the_users_service_gets_our_credential_and_the_request_id(api) -> None:
    member = api.member()

    response = api.create(member, headers={"X-Request-ID": "trace-42"})

    assert response.status_code == 201
    assert response.headers["X-Request-ID"] == "trace-42"
    lookup = [r for r in api.users.requests if r.url.path == f"/api/users/{member.id}"]
    assert len(lookup) == 1
    assert lookup[0].headers["X-Request-ID"] == "trace-42"
    assert api.users.refused == 0


# -- Idempotency-Key ------------------------------------------------------------------------


def test_the_same_key_and_body_replay_the_first_answer(api, body) -> None:
    member = api.member()
    payload = body(("BOOK-42", 1, 1000))

    first = api.create(member, payload, key="order-1")
    second = api.create(member, payload, key="order-1")

    assert first.status_code == second.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json() == first.get_json()
    assert api.count(Order) == 1
    assert api.count(IdempotencyRecord) == 1
    # The replay is answered before the users service would be asked again.
    assert api.users.lookups(member.id) == 1


def test_the_same_body_in_another_key_order_is_the_same_request(api) -> None:
    member = api.member()
    first = api.create(
        member,
        {"currency": "EUR", "items": [{"sku": "A-1", "quantity": 2, "unit_price_cents": 5}]},
        key="k",
    )
    second = api.create(
        member,
        {"items": [{"unit_price_cents": 5, "quantity": 2, "sku": "A-1"}], "currency": "EUR"},
        key="k",
    )

    assert second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json()["id"] == first.get_json()["id"]


def test_the_same_key_with_another_body_is_422(api, body) -> None:
    member = api.member()
    first = api.create(member, body(("BOOK-42", 1, 1000)), key="order-1")

    response = api.create(member, body(("BOOK-42", 2, 1000)), key="order-1")

    api.problem(response, 422, "idempotency-key-reused")
    assert api.count(Order) == 1
    assert api.order_row(first.get_json()["id"]).total_cents == 1000


def test_the_same_key_of_two_users_makes_two_orders(api, body) -> None:
    alice, bob = api.member(), api.member()

    first = api.create(alice, body(), key="shared-key")
    second = api.create(bob, body(), key="shared-key")

    assert first.status_code == second.status_code == 201
    assert "Idempotent-Replayed" not in second.headers
    assert first.get_json()["id"] != second.get_json()["id"]
    assert second.get_json()["user_id"] == str(bob.id)
    assert api.count(Order) == 2


def test_without_a_key_every_request_is_a_new_order(api, body) -> None:
    member = api.member()

    ids = {api.place(member, body())["id"] for _ in range(2)}

    assert len(ids) == 2
    assert api.count(Order) == 2


def test_header_and_query_schemas_are_built_once_and_handed_out_as_copies(api, body) -> None:
    """flask-openapi3 asks for the header model's JSON schema on every request: built once,
    each caller gets a copy it may edit (the OpenAPI document builder edits what it gets)."""
    from legacy_flask.schemas import CreateOrderHeaders, OrderListQuery

    for model in (CreateOrderHeaders, OrderListQuery):
        first = model.model_json_schema()
        first["properties"].clear()
        assert model.model_json_schema()["properties"], model
        assert model.model_json_schema(mode="serialization") == model.model_json_schema(
            mode="serialization"
        )
    member = api.member()
    refused = api.create(member, body(("BOOK-42", 1, 100)), key="k" * 256)
    assert refused.status_code == 422
    placed = api.create(member, body(("BOOK-42", 1, 100)), key="once")
    assert placed.status_code == 201
    assert (
        api.create(member, body(("BOOK-42", 1, 100)), key="once").headers.get("Idempotent-Replayed")
        == "true"
    )
