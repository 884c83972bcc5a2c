"""The orders service (legacy-flask) through the ingress, and how it copes without users-fastapi.

Every order belongs to an account registered by the test itself, so the
tests hold with E2E_BASE_URL too, except those that need the local platform:
the demo data, the users service frozen or killed (on the second local
platform kept for such tests), and a double Ctrl-C of ``polyframe-dev up``.
"""

from __future__ import annotations

import json
import re
import signal
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from polyframe_dev.services import DEMO_ORDERS

pytestmark = pytest.mark.e2e

ORDERS = "/api/orders"
USERS = "/api/users"
IDEMPOTENCY_KEY_REUSED = "urn:polyframe:problem:idempotency-key-reused"
ADMIN_SERVICE = "admin-django"
STAFF_NAME = "e2e-staff"
#: Bounds, not performance assertions: the orders service answers a users-service
#: outage within its client's budget (2 attempts x 2 s); well inside these.
OUTAGE_ANSWER_TIMEOUT = 15.0
RESTART_TIMEOUT = 60.0
RESUME_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
#: Sequential creations measured (after a warm-up) for the report; never asserted on.
MEASURED_CREATIONS = 30

BOOK = {"sku": "BOOK-42", "quantity": 2, "unit_price_cents": 1_999}
PEN = {"sku": "PEN-1", "quantity": 3, "unit_price_cents": 150}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _order_body(*items: dict[str, Any], currency: str = "EUR") -> dict[str, Any]:
    return {"currency": currency, "items": list(items or [BOOK])}


def _create(
    client: httpx.Client, token: str, body: dict[str, Any] | None = None, **headers: str
) -> httpx.Response:
    return client.post(ORDERS, json=body or _order_body(), headers={**_bearer(token), **headers})


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert "idempotent-replayed" not in response.headers
    order: dict[str, Any] = response.json()
    return order


def _list_all(client: httpx.Client, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    """Every order of the listing, following the cursor (bounded)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get(ORDERS, params=query, headers=headers)
        assert response.status_code == 200, (response.status_code, response.text)
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    pytest.fail(f"{ORDERS} kept handing out cursors after 100 pages")


def _ids(orders: list[dict[str, Any]]) -> list[str]:
    return [order["id"] for order in orders]


def _me(client: httpx.Client, token: str) -> dict[str, Any]:
    me = client.get(f"{USERS}/me", headers=_bearer(token))
    assert me.status_code == 200, me.text
    body: dict[str, Any] = me.json()
    return body


def _assert_unavailable(problem: Any, response: httpx.Response) -> None:
    problem(response, 503)
    retry_after = response.headers.get("retry-after", "")
    assert retry_after.isdigit(), f"503 without a usable Retry-After: {response.headers}"
    assert int(retry_after) > 0


# -- the order lifecycle ------------------------------------------------------------------------


def test_order_lifecycle_through_the_ingress(
    client: httpx.Client, register: Any, log_in: Any, problem: Any
) -> None:
    account = register(client)
    token = log_in(client, account.email, account.password)

    response = _create(client, token, _order_body(BOOK, PEN))
    order = _created(response)
    assert order["user_id"] == account.user["id"]
    assert order["status"] == "paid"
    assert order["currency"] == "EUR"
    # Totals come from the server, in integer cents.
    assert [
        (item["sku"], item["quantity"], item["unit_price_cents"], item["line_total_cents"])
        for item in order["items"]
    ] == [("BOOK-42", 2, 1_999, 3_998), ("PEN-1", 3, 150, 450)]
    assert order["total_cents"] == 4_448
    assert order["cancellable_until"] is not None
    assert order["cancelled_at"] is None
    assert order["refunded_at"] is None

    listed = _list_all(client, _bearer(token))
    assert _ids(listed) == [order["id"]]
    assert listed[0] == order

    read = client.get(f"{ORDERS}/{order['id']}", headers=_bearer(token))
    assert read.status_code == 200, read.text
    assert read.json() == order

    cancelled = client.post(f"{ORDERS}/{order['id']}/cancel", headers=_bearer(token))
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["id"] == order["id"]
    assert body["status"] == "cancelled"
    assert body["cancelled_at"] is not None
    assert body["cancellable_until"] is None
    assert body["total_cents"] == order["total_cents"]

    again = client.post(f"{ORDERS}/{order['id']}/cancel", headers=_bearer(token))
    assert "cancelled" in problem(again, 409)["detail"]

    read = client.get(f"{ORDERS}/{order['id']}", headers=_bearer(token))
    assert read.json()["status"] == "cancelled"


def test_client_supplied_totals_are_refused(client: httpx.Client, token: str, problem: Any) -> None:
    body = {**_order_body(BOOK), "total_cents": 1}
    errors = problem(_create(client, token, body), 422).get("errors")
    assert isinstance(errors, list), errors
    assert "total_cents" in {error["field"] for error in errors}, errors
    assert _list_all(client, _bearer(token)) == []


def test_orders_need_a_token(client: httpx.Client, problem: Any) -> None:
    for response in (client.post(ORDERS, json=_order_body()), client.get(ORDERS)):
        problem(response, 401)
        assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


def test_another_users_order_is_invisible(
    client: httpx.Client, register: Any, log_in: Any, token: str, problem: Any
) -> None:
    order = _created(_create(client, token))
    other = register(client)
    other_token = log_in(client, other.email, other.password)

    problem(client.get(f"{ORDERS}/{order['id']}", headers=_bearer(other_token)), 404)
    problem(client.post(f"{ORDERS}/{order['id']}/cancel", headers=_bearer(other_token)), 404)
    assert _list_all(client, _bearer(other_token)) == []
    forbidden = client.get(
        ORDERS, params={"user_id": order["user_id"]}, headers=_bearer(other_token)
    )
    problem(forbidden, 403)
    # Nothing happened to it.
    read = client.get(f"{ORDERS}/{order['id']}", headers=_bearer(token))
    assert read.json()["status"] == "paid"


def test_listing_pages_through_every_order_once(
    client: httpx.Client, token: str, report_measurement: Callable[[str, str], None]
) -> None:
    """Sequential creations through the ingress; their latency is reported, not asserted."""
    warm_up = _created(_create(client, token))  # warm-up: connections, caches
    durations_ms: list[float] = []
    created: list[str] = []
    for number in range(MEASURED_CREATIONS):
        item = {"sku": f"SKU-{number}", "quantity": 1, "unit_price_cents": 100 + number}
        started = time.perf_counter()
        response = _create(client, token, _order_body(item))
        durations_ms.append((time.perf_counter() - started) * 1000)
        created.append(_created(response)["id"])

    pages: list[list[str]] = []
    cursor: str | None = None
    while len(pages) <= MEASURED_CREATIONS:  # bounded: more pages than orders is a bug
        params: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        response = client.get(ORDERS, params=params, headers=_bearer(token))
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(_ids(page["items"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    listed = [order_id for page in pages for order_id in page]
    # Oldest first, each exactly once, in full pages but the last.
    assert listed == [warm_up["id"], *created]
    assert all(len(page) == 7 for page in pages[:-1]), pages

    quantiles = statistics.quantiles(durations_ms, n=20, method="inclusive")
    report_measurement(
        "order creation through the ingress",
        f"{MEASURED_CREATIONS} sequential after a warm-up: "
        f"median {statistics.median(durations_ms):.1f} ms, p95 {quantiles[18]:.1f} ms, "
        f"min {min(durations_ms):.1f} ms, max {max(durations_ms):.1f} ms",
    )


# -- idempotency ---------------------------------------------------------------------------------


def test_idempotency_key_replays_the_first_answer(
    client: httpx.Client, token: str, problem: Any
) -> None:
    key = f"e2e-{uuid.uuid4().hex}"
    body = _order_body(BOOK, PEN)

    first = _create(client, token, body, **{"Idempotency-Key": key})
    order = _created(first)
    second = _create(client, token, body, **{"Idempotency-Key": key})

    assert second.status_code == 201, second.text
    assert second.headers.get("idempotent-replayed") == "true", second.headers
    assert second.json()["id"] == order["id"]
    assert second.json() == order
    assert _ids(_list_all(client, _bearer(token))) == [order["id"]]

    other_body = _order_body({**BOOK, "quantity": 3})
    reused = _create(client, token, other_body, **{"Idempotency-Key": key})
    assert problem(reused, 422)["type"] == IDEMPOTENCY_KEY_REUSED
    assert _ids(_list_all(client, _bearer(token))) == [order["id"]]


# -- a deactivated user --------------------------------------------------------------------------


@pytest.fixture
def admin_service(service_headers: Any) -> dict[str, str]:
    """Headers of admin-django acting for a staff member (its service credential)."""
    return service_headers(ADMIN_SERVICE, acting_for=STAFF_NAME)


def test_a_deactivated_user_cannot_order(
    client: httpx.Client,
    register: Any,
    log_in: Any,
    admin_service: dict[str, str],
    problem: Any,
) -> None:
    account = register(client)
    token = log_in(client, account.email, account.password)
    user_id = _me(client, token)["id"]

    deactivated = client.post(f"{USERS}/{user_id}/deactivate", headers=admin_service)
    assert deactivated.status_code == 200, deactivated.text
    assert deactivated.json()["is_active"] is False

    # The token is still well-formed and unexpired: the orders service asks the users service.
    refused = _create(client, token)
    assert "deactivated" in problem(refused, 403)["detail"]

    assert _list_all(client, _bearer(token)) == []
    # Staff (a service acting for staff) sees no order for them either.
    assert _list_all(client, admin_service, user_id=user_id) == []


# -- the demo data and the documentation ------------------------------------------------------


def test_the_demo_orders_are_visible_to_alice(
    local_ready: dict[str, Any], client: httpx.Client, log_in: Any
) -> None:
    accounts = json.loads(Path(local_ready["demo_accounts_file"]).read_text())
    alice = next(a for a in accounts if a["email"] == "alice@example.com")
    token = log_in(client, alice["email"], alice["password"])

    orders = _list_all(client, _bearer(token))

    assert {order["user_id"] for order in orders} == {_me(client, token)["id"]}
    seen = {
        (item["sku"], item["quantity"], item["unit_price_cents"])
        for order in orders
        for item in order["items"]
    }
    assert set(DEMO_ORDERS) <= seen, (DEMO_ORDERS, orders)


def test_docs_and_schema_are_served_under_the_prefix(client: httpx.Client) -> None:
    docs = client.get(f"{ORDERS}/docs")
    assert docs.is_redirect, (docs.status_code, docs.text[:300])
    # Relative or absolute, the target stays on the ingress and under the prefix.
    target = client.base_url.join(docs.headers["location"])
    assert (target.host, target.port) == (client.base_url.host, client.base_url.port), target
    assert target.path.startswith(f"{ORDERS}/"), target

    ui = client.get(f"{ORDERS}/docs", follow_redirects=True)
    assert ui.status_code == 200, ui.text[:300]
    assert ui.headers["content-type"].startswith("text/html")
    assert ui.url.path.startswith(f"{ORDERS}/")
    assert "swagger" in ui.text.lower()

    schema = client.get(f"{ORDERS}/openapi.json")
    assert schema.status_code == 200, schema.text[:300]
    assert schema.headers["content-type"].startswith("application/json")
    paths = schema.json()["paths"]
    assert ORDERS in paths
    assert f"{ORDERS}/{{order_id}}" in paths
    assert f"{ORDERS}/{{order_id}}/cancel" in paths
    assert not {"/healthz", "/readyz", "/metrics"} & paths.keys()


def test_unknown_route_under_the_prefix_is_404(client: httpx.Client, problem: Any) -> None:
    problem(client.get(f"{ORDERS}/does/not/exist"), 404)


# -- polyframe-dev up: two Ctrl-C at once -----------------------------------------------------


def test_two_sigints_at_once_stop_up_cleanly(start_platform: Any) -> None:
    """Regression: two SIGINTs arriving together used to deadlock ``up`` in a log-write lock."""
    local = start_platform("double-sigint")
    local.wait_ready()

    local.stop_and_check(signum=signal.SIGINT, times=2)  # bounded; exit 0; nothing left behind

    log = local.log()
    assert log.count("SIGINT received: stopping everything") == 1, local.log_tail()
    assert re.search(r"^polyframe +\| stopped$", log, re.MULTILINE), local.log_tail()


# -- the users service frozen, then killed (on ``isolated_platform``, left whole again) -------

USERS_SERVICE = "users-fastapi"


@pytest.fixture
def outage(isolated_platform: Any) -> Iterator[tuple[Any, httpx.Client]]:
    """The isolated platform and a client of its ingress, bounded by OUTAGE_ANSWER_TIMEOUT."""
    with httpx.Client(base_url=isolated_platform.base_url, timeout=OUTAGE_ANSWER_TIMEOUT) as c:
        yield isolated_platform, c


def test_a_slow_users_service_is_a_bounded_503_and_no_order(
    outage: tuple[Any, httpx.Client], register: Any, log_in: Any, problem: Any
) -> None:
    platform, client = outage
    account = register(client)
    token = log_in(client, account.email, account.password)  # before the freeze
    # A first order caches the JWKS in the orders service: afterwards only the
    # "is this user active?" call needs the users service.
    warm_up = _created(_create(client, token))

    with platform.local.frozen(USERS_SERVICE):
        # The httpx timeout is the bound: no answer within it fails the test.
        response = _create(client, token)
        _assert_unavailable(problem, response)

    platform.local.wait_service_ready(USERS_SERVICE, RESUME_TIMEOUT)
    assert _ids(_list_all(client, _bearer(token))) == [warm_up["id"]]
    # And the platform works again.
    _created(_create(client, token))


def test_a_killed_users_service_is_a_503_then_restarted(
    outage: tuple[Any, httpx.Client], register: Any, log_in: Any, problem: Any
) -> None:
    platform, client = outage
    local = platform.local
    account = register(client)
    token = log_in(client, account.email, account.password)  # before the kill
    warm_up = _created(_create(client, token))

    pid = local.kill(USERS_SERVICE)

    # Refused connections: the answer comes at once (the supervisor restarts the
    # server in the meantime, but it needs a while to listen again).
    response = _create(client, token)
    _assert_unavailable(problem, response)
    assert _ids(_list_all(client, _bearer(token))) == [warm_up["id"]]

    new_pid = local.wait_restarted(USERS_SERVICE, pid, RESTART_TIMEOUT)
    local.wait_service_ready(USERS_SERVICE, RESTART_TIMEOUT)
    assert local.service_pid(USERS_SERVICE) == new_pid
    assert f"restarting {USERS_SERVICE}" in local.log()

    assert _me(client, token)["id"] == account.user["id"]  # same signing key after the restart
    again = _created(_create(client, token))
    assert _ids(_list_all(client, _bearer(token))) == [warm_up["id"], again["id"]]
