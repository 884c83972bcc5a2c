"""Structural limits before parsing (service_kit.limits) in the orders service: the kit's
settings under ``ORDERS_``, a breach answered as an ``input-limit`` problem."""

from __future__ import annotations

import json

from legacy_flask.models import Order

ORDERS = "/api/orders"


def _post(api, text: str):
    return api.post(
        ORDERS, data=text, content_type="application/json", headers=api.member().headers
    )


def test_an_integer_the_database_cannot_hold_is_refused_before_the_model_sees_it(api) -> None:
    line = (
        '{"currency": "EUR", "items": [{"sku": "BOOK-42", "quantity": %s, "unit_price_cents": 1}]}'
    )

    past = _post(api, line % (2**63))
    at = _post(api, line % (2**63 - 1))

    assert "json_number_range" in api.problem(past, 422, "input-limit")["detail"]
    assert api.errors(api.problem(at, 422, "validation-error")) == {"items.0.quantity": "body"}
    assert api.count(Order) == 0


def test_nesting_past_orders_json_max_depth_is_refused(make_api, body) -> None:
    api = make_api(json_max_depth=3)  # ORDERS_JSON_MAX_DEPTH
    order = body(("BOOK-42", 1, 100))  # object > items array > item object: 3 levels
    deeper = json.loads(json.dumps(order))
    deeper["items"][0]["sku"] = ["BOOK-42"]  # a 4th level

    assert _post(api, json.dumps(order)).status_code == 201
    problem = api.problem(_post(api, json.dumps(deeper)), 422, "input-limit")
    assert "3 levels" in problem["detail"]
    assert "json_max_depth" in problem["detail"]
    assert api.count(Order) == 1


def test_too_many_query_parameters_are_refused(api) -> None:
    headers = api.member().headers
    at = "&".join(f"p{i}=1" for i in range(63)) + "&limit=5"
    past = at + "&one=more"

    # At the limit the list's own model answers (unknown parameters: a validation error).
    api.problem(api.get(f"{ORDERS}?{at}", headers=headers), 422, "validation-error")
    api.problem(api.get(f"{ORDERS}?{past}", headers=headers), 422, "input-limit")


def test_a_body_that_is_a_json_string_of_json_gets_the_limits_too(make_api, body) -> None:
    """Found by review: flask-openapi3 parses a body that is a JSON *string* once more, as
    its model's JSON (model_validate_json); the document inside got no structural check."""
    api = make_api(json_max_depth=3)
    order = body(("BOOK-42", 1, 100))
    order["items"][0]["sku"] = ["BOOK-42"]  # 4 levels, inside a string

    problem = api.problem(_post(api, json.dumps(json.dumps(order))), 422, "input-limit")
    assert "json_max_depth" in problem["detail"]
    assert api.count(Order) == 0
