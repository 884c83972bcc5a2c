"""Races, as gunicorn's gthread worker runs them: one Flask app shared by many threads.

Every thread has its own test client; a barrier releases them together. The
PostgreSQL variant is the one that matters (it is what production runs); on SQLite
the writers are serialised by the database lock, which must not turn into errors either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from werkzeug.test import TestResponse

from legacy_flask.models import IdempotencyRecord, Order, OrderItem, OrderStatus

ORDERS = "/api/orders"
THREADS = 8
#: Only a guard against a hung thread: the test never measures time.
HANG_GUARD_SECONDS = 60


def race(api, requests: list[Callable[[Any], TestResponse]]) -> list[TestResponse]:
    """Run each ``request(client)`` in its own thread, all released at once."""
    barrier = threading.Barrier(len(requests), timeout=HANG_GUARD_SECONDS)
    results: list[TestResponse | BaseException | None] = [None] * len(requests)

    def run(index: int, request: Callable[[Any], TestResponse]) -> None:
        client = api.app.test_client()
        try:
            barrier.wait()
            results[index] = request(client)
        except BaseException as exc:
            results[index] = exc

    threads = [
        threading.Thread(target=run, args=(n, request), name=f"race-{n}")
        for n, request in enumerate(requests)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD_SECONDS)
        assert not thread.is_alive(), f"{thread.name} hung"
    responses: list[TestResponse] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        responses.append(result)
    for response in responses:
        assert response.status_code < 500, response.get_data(as_text=True)
        api.contract.check_response(response)
    return responses


def test_concurrent_retries_with_one_key_make_one_order(api, body) -> None:
    """Released together, some threads may find the first one's record already (and replay
    it before asking the users service); the others race to insert it."""
    member = api.member()
    payload = body(("BOOK-42", 2, 1250), ("PEN-1", 1, 199))
    headers = {**member.headers, "Idempotency-Key": "double-click"}
    # Fetch the keys first, so the threads race on the database and not on the JWKS.
    assert api.get(ORDERS, headers=member.headers).status_code == 200

    responses = race(
        api,
        [lambda client: client.post(ORDERS, json=payload, headers=headers)] * THREADS,
    )

    assert [r.status_code for r in responses] == [201] * THREADS
    ids = {r.get_json()["id"] for r in responses}
    assert len(ids) == 1
    bodies = [r.get_json() for r in responses]
    assert all(b == bodies[0] for b in bodies)
    replayed = [r for r in responses if r.headers.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == THREADS - 1
    assert api.count(Order) == 1
    assert api.count(IdempotencyRecord) == 1
    assert api.count(OrderItem) == 2
    assert str(api.order_row(ids.pop()).user_id) == str(member.id)


def test_concurrent_inserts_with_one_key_make_one_order(api, body) -> None:
    """The hard case, forced: every thread has passed the "is this key known?" check (the
    users service answers none of them until all have asked), so all of them insert, and
    the unique (user_id, key) constraint must turn all but one into replays."""
    member = api.member()
    payload = body(("BOOK-42", 1, 1000))
    headers = {**member.headers, "Idempotency-Key": "lined-up"}
    assert api.get(ORDERS, headers=member.headers).status_code == 200
    api.users.hold_lookups(THREADS)

    responses = race(
        api,
        [lambda client: client.post(ORDERS, json=payload, headers=headers)] * THREADS,
    )

    assert api.users.lookups(member.id) == THREADS
    assert [r.status_code for r in responses] == [201] * THREADS
    assert len({r.get_json()["id"] for r in responses}) == 1
    replayed = [r for r in responses if r.headers.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == THREADS - 1
    assert api.count(Order) == 1
    assert api.count(IdempotencyRecord) == 1
    assert api.count(OrderItem) == 1


def test_a_cancel_racing_a_refund_changes_the_order_once(api) -> None:
    member, staff = api.member(), api.staff()
    order = api.place(member)
    assert api.get(ORDERS, headers=staff.headers).status_code == 200  # keys fetched
    cancel = f"{ORDERS}/{order['id']}/cancel"
    refund = f"{ORDERS}/{order['id']}/refund"

    responses = race(
        api,
        [lambda client: client.post(cancel, headers=member.headers)] * (THREADS // 2)
        + [
            lambda client: client.post(
                refund, json={"reason": "Racing the customer"}, headers=staff.headers
            )
        ]
        * (THREADS // 2),
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * (THREADS - 1)
    winner = next(r for r in responses if r.status_code == 200).get_json()
    row = api.order_row(order["id"])
    assert row.status == winner["status"]
    assert row.status in {OrderStatus.CANCELLED, OrderStatus.REFUNDED}
    if row.status == OrderStatus.CANCELLED:
        assert (row.refunded_at, row.refund_reason) == (None, None)
    else:
        assert row.cancelled_at is None
