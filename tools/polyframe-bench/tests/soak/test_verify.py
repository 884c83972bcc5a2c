"""Each check after the load catches what it is there for: a lost or doubled order, a missing
or doubled event (answers made up with httpx's MockTransport)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from polyframe_bench.soak.actors import Member, Staff
from polyframe_bench.soak.ledger import OrderRecord
from polyframe_bench.soak.stats import Stats
from polyframe_bench.soak.verify import expected_events, verify_orders, verify_trail


def _record(order_id: str | None, expected: str = "paid") -> OrderRecord:
    return OrderRecord(0, f"key-{order_id}", {}, order_id=order_id, expected=expected)


def test_lost_doubled_unknown_and_wrong_state_orders_are_each_caught(
    member: Callable[..., Member],
) -> None:
    listed = [
        {"id": "kept", "status": "paid"},
        {"id": "doubled", "status": "paid"},
        {"id": "doubled", "status": "paid"},
        {"id": "refunded", "status": "paid"},  # the refund was acknowledged
        {"id": "stranger", "status": "paid"},  # never acknowledged
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/orders"
        return httpx.Response(200, json={"items": listed, "next_cursor": None})

    stats = Stats()
    ordering = member(0, handler, stats)
    ordering.orders = [
        _record("kept"),
        _record("doubled"),
        _record("lost"),
        _record("refunded", "refunded"),
    ]
    found = verify_orders([ordering], stats)
    assert found["verified"] == 2  # kept, refunded (listed once each)
    problems = "\n".join(found["problems"])
    assert "order doubled listed 2 times" in problems
    assert "acknowledged order lost is missing" in problems
    assert "order stranger of" in problems
    assert "never acknowledged" in problems
    assert "order refunded is paid, expected refunded" in problems


def test_an_uncertain_cancel_accepts_either_state_and_the_trail_follows_the_state(
    member: Callable[..., Member],
) -> None:
    listed = [{"id": "a", "status": "cancelled"}, {"id": "b", "status": "paid"}]
    stats = Stats()
    ordering = member(
        0,
        lambda request: httpx.Response(200, json={"items": listed, "next_cursor": None}),
        stats,
    )
    ordering.orders = [_record("a"), _record("b")]
    for record in ordering.orders:
        record.attempted = "cancelled"
    assert verify_orders([ordering], stats)["problems"] == []
    assert set(expected_events([ordering])) == {
        ("user", "user-0", "user.registered"),
        ("order", "a", "order.created"),
        ("order", "a", "order.cancelled"),
        ("order", "b", "order.created"),
    }


def _event(subject_type: str, subject_id: str, action: str, user: str) -> dict[str, Any]:
    return {
        "subject": {"type": subject_type, "id": subject_id},
        "action": action,
        "payload": {"user_id": user},
    }


def test_missing_doubled_and_unexpected_events_are_each_caught(
    member: Callable[..., Member], staff: Callable[..., Staff]
) -> None:
    stats = Stats()
    ordering = member(0, lambda request: httpx.Response(500), stats)
    ordering.orders = [_record("o1"), _record("o2", "cancelled")]
    trail = [
        _event("user", "user-0", "user.registered", "user-0"),
        _event("order", "o1", "order.created", "user-0"),
        _event("order", "o1", "order.created", "user-0"),  # doubled
        _event("order", "o2", "order.created", "user-0"),
        # o2's order.cancelled is missing
        _event("order", "o1", "order.refunded", "user-0"),  # no such change was made
        _event("order", "other", "order.created", "someone-else"),  # not ours: ignored
    ]
    pages: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/audit/events"
        pages.append(str(request.url))
        return httpx.Response(200, json={"items": trail, "next_cursor": None})

    support = staff([ordering], handler, stats)
    found = verify_trail(support, [ordering], datetime.now(UTC), 0.0, lambda line: None)
    assert (found["expected"], found["verified"]) == (4, 2)
    assert (found["missing"], found["duplicated"], found["unexpected"]) == (1, 1, 1)
    problems = "\n".join(found["problems"])
    assert "missing audit event order o2 order.cancelled" in problems
    assert "audit event order o1 order.created recorded 2 times" in problems
    assert "audit event order o1 order.refunded for no acknowledged change" in problems
    assert "after=" in pages[0]
