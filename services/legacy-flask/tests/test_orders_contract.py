"""The service answers as its own OpenAPI document says.

``Api`` (conftest) already checks every ``/api/orders`` response of the whole suite against
the document with openapi-core, and every request the service accepted. The tests here
make the pairs that matter explicit, and show the check is not vacuous.
"""

from __future__ import annotations

import json

import httpx
import pytest
from openapi_core.exceptions import OpenAPIError

ORDERS = "/api/orders"


def test_the_happy_paths_match_the_document(api, body) -> None:
    member, staff = api.member(), api.staff()
    created = api.create(member, body(), key="contract-1")
    order_id = created.get_json()["id"]
    second = api.place(member)
    responses = [
        created,
        api.create(member, body(), key="contract-1"),  # replayed
        api.get(ORDERS, query_string={"limit": 1}, headers=member.headers),
        api.get(ORDERS, query_string={"user_id": str(member.id)}, headers=staff.headers),
        api.get(f"{ORDERS}/{order_id}", headers=member.headers),
        api.get(f"{ORDERS}/{order_id}", headers=api.service("admin-django", acting_for="sam")),
        api.post(f"{ORDERS}/{order_id}/cancel", headers=member.headers),
        api.post(
            f"{ORDERS}/{second['id']}/refund", json={"reason": "Damaged"}, headers=staff.headers
        ),
    ]

    for response in responses:
        assert response.status_code in {200, 201}, response.text
        api.contract.check_request(response)
        api.contract.check_response(response)


def test_error_responses_match_the_document(api, body) -> None:
    member = api.member()
    order = api.place(member)
    admin = api.service("admin-django", acting_for="sam")
    refund = f"{ORDERS}/{order['id']}/refund"
    assert api.post(refund, json={"reason": "Damaged"}, headers=admin).status_code == 200
    api.users.accounts[member.id] = False
    responses = {
        401: api.post(ORDERS, json=body()),
        403: api.create(member),
        404: api.get(f"{ORDERS}/00000000-0000-0000-0000-000000000000", headers=member.headers),
        409: api.post(refund, json={"reason": "Twice"}, headers=admin),
        413: api.post(
            ORDERS,
            data="{}" + " " * 70_000,
            content_type="application/json",
            headers=member.headers,
        ),
        415: api.post(ORDERS, data="x", content_type="text/plain", headers=member.headers),
        422: api.create(member, {"currency": "eur", "items": []}),
    }
    api.users.accounts[member.id] = True
    api.users.lookup_error = httpx.ConnectError
    responses[503] = api.create(member)

    for status, response in responses.items():
        assert response.status_code == status, response.text
        api.contract.check_response(response)


def test_the_contract_check_catches_a_wrong_answer(api, body) -> None:
    response = api.create(api.member(), body())
    order = response.get_json()

    response.set_data(json.dumps({**order, "total_cents": "3097"}))
    with pytest.raises(OpenAPIError):
        api.contract.check_response(response)

    response.set_data(json.dumps({key: v for key, v in order.items() if key != "status"}))
    with pytest.raises(OpenAPIError):
        api.contract.check_response(response)

    response.set_data(json.dumps({**order, "internal_note": "x"}))
    with pytest.raises(OpenAPIError):
        api.contract.check_response(response)


def test_the_contract_check_catches_an_undocumented_status(api) -> None:
    response = api.get(
        f"{ORDERS}/00000000-0000-0000-0000-000000000000", headers=api.member().headers
    )
    assert response.status_code == 404

    response.status_code = 418
    with pytest.raises(OpenAPIError):
        api.contract.check_response(response)
