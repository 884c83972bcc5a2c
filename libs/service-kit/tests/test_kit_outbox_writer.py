"""What a producer writes: ``outbox_values``, under a stopped clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from service_kit.outbox import Actor, outbox_values, schema
from service_kit.tracecontext import trace_id_var

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The outbox's clock, stopped."""
    monkeypatch.setattr(schema, "utcnow", lambda: NOW)
    return NOW


def event_values(index: int) -> dict[str, Any]:
    return outbox_values(
        action="user.created",
        subject_type="user",
        subject_id=f"subject-{index}",
        actor=Actor("user", f"user-{index}"),
        payload={"index": index},
    )


def test_outbox_values(now: datetime) -> None:
    payload = {"email": "a@example.test"}
    values = outbox_values(
        action="user.role_changed",
        subject_type="user",
        subject_id="42",
        actor=Actor("service", "admin-django", acting_for="staff-7"),
        payload=payload,
    )
    assert isinstance(values["id"], uuid.UUID)
    assert values == {
        "id": values["id"],
        "occurred_at": now,
        "action": "user.role_changed",
        "subject_type": "user",
        "subject_id": "42",
        "actor_type": "service",
        "actor_id": "admin-django",
        "acting_for": "staff-7",
        "trace_id": None,
        "span_id": None,
        "payload": {"email": "a@example.test"},
        "attempts": 0,
        "next_attempt_at": now,
    }
    payload["email"] = "changed@example.test"
    assert values["payload"] == {"email": "a@example.test"}  # a copy
    bare = outbox_values(action="x", subject_type="user", subject_id="1", actor=Actor("user", "1"))
    assert bare["payload"] == {}


def test_outbox_values_new_id_each_time() -> None:
    ids = {event_values(index)["id"] for index in range(20)}
    assert len(ids) == 20


def test_outbox_values_capture_the_current_trace_id() -> None:
    token = trace_id_var.set(TRACE_ID)
    try:
        inside = event_values(1)
    finally:
        trace_id_var.reset(token)
    assert inside["trace_id"] == TRACE_ID
    assert event_values(2)["trace_id"] is None
