"""Reads of the audit trail: ``audit_event_list`` filters, ``audit_event_page`` keyset pages."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from admin_django.audit.models import AuditEvent
from admin_django.audit.selectors import audit_event_list, audit_event_page
from admin_django.audit.services import audit_event_record_many
from service_kit.problems import ProblemError

pytestmark = pytest.mark.usefixtures("db")

Row = Callable[..., dict[str, Any]]


@pytest.fixture
def trail(event_row: Row, base_time: datetime) -> dict[str, uuid.UUID]:
    """Five events that differ in one field each from the first; name → event id."""
    subject = str(uuid.uuid4())
    rows = {
        "registered": event_row(subject_id=subject, trace_id="a" * 32),
        "other_subject_type": event_row(
            subject_type="order",
            subject_id=subject,
            occurred_at=base_time + timedelta(minutes=1),
            service="legacy-flask",
            action="order.refunded",
            actor_type="service",
            actor_id="admin-django",
            acting_for="sam",
        ),
        "by_bob": event_row(actor_id="bob", occurred_at=base_time + timedelta(minutes=2)),
        "deactivated": event_row(
            subject_id=subject,
            action="user.deactivated",
            actor_type="staff",
            actor_id="sam",
            occurred_at=base_time + timedelta(minutes=3),
            trace_id="b" * 32,
        ),
        "later": event_row(occurred_at=base_time + timedelta(days=1)),
    }
    audit_event_record_many(events=list(rows.values()))
    ids = {name: row["event_id"] for name, row in rows.items()}
    ids["_subject"] = uuid.UUID(subject)
    return ids


def names(events: Any, trail: dict[str, uuid.UUID]) -> set[str]:
    by_id = {event_id: name for name, event_id in trail.items()}
    return {by_id[e.event_id] for e in events}


def test_no_filter_lists_everything(trail: dict[str, uuid.UUID]) -> None:
    assert audit_event_list().count() == 5


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"subject_type": "order"}, {"other_subject_type"}),
        ({"subject_type": "user"}, {"registered", "by_bob", "deactivated", "later"}),
        ({"action": "user.deactivated"}, {"deactivated"}),
        ({"service": "legacy-flask"}, {"other_subject_type"}),
        ({"trace_id": "b" * 32}, {"deactivated"}),
        ({"actor_id": "bob"}, {"by_bob"}),
        # A staff member is found as the actor, and as the one a service acted for.
        ({"actor_id": "sam"}, {"deactivated", "other_subject_type"}),
        ({"actor_id": "nobody"}, set()),
        ({"subject_type": "user", "action": "user.registered"}, {"registered", "by_bob", "later"}),
    ],
)
def test_filters(trail: dict[str, uuid.UUID], filters: dict[str, str], expected: set[str]) -> None:
    assert names(audit_event_list(**filters), trail) == expected


def test_subject_id_filter(trail: dict[str, uuid.UUID]) -> None:
    subject = str(trail["_subject"])

    assert names(audit_event_list(subject_id=subject), trail) == {
        "registered",
        "other_subject_type",
        "deactivated",
    }
    assert names(audit_event_list(subject_type="user", subject_id=subject), trail) == {
        "registered",
        "deactivated",
    }


def test_time_window_includes_after_and_excludes_before(
    trail: dict[str, uuid.UUID], base_time: datetime
) -> None:
    window = audit_event_list(
        occurred_after=base_time + timedelta(minutes=1),
        occurred_before=base_time + timedelta(minutes=3),
    )

    assert names(window, trail) == {"other_subject_type", "by_bob"}
    assert names(audit_event_list(occurred_after=base_time + timedelta(hours=1)), trail) == {
        "later"
    }
    assert names(audit_event_list(occurred_before=base_time), trail) == set()


def test_pages_walk_every_event_once_in_time_then_id_order(
    event_row: Row, base_time: datetime
) -> None:
    # Ties on occurred_at (several events in the same microsecond) are ordered by event id.
    rows = [event_row(occurred_at=base_time + timedelta(seconds=i // 3)) for i in range(11)]
    audit_event_record_many(events=rows)
    expected = sorted((row["occurred_at"], row["event_id"]) for row in rows)

    seen: list[tuple[datetime, uuid.UUID]] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = audit_event_page(audit_event_list(), limit=4, cursor=cursor)
        pages += 1
        seen.extend((e.occurred_at, e.event_id) for e in page)
        if cursor is None:
            break

    assert seen == expected
    assert pages == 3


def test_a_full_last_page_has_no_cursor(event_row: Row) -> None:
    audit_event_record_many(events=[event_row() for _ in range(4)])

    page, cursor = audit_event_page(audit_event_list(), limit=4, cursor=None)

    assert len(page) == 4
    assert cursor is None


def test_pages_respect_the_filters(trail: dict[str, uuid.UUID]) -> None:
    events = audit_event_list(subject_type="user")
    first, cursor = audit_event_page(events, limit=2, cursor=None)
    second, end = audit_event_page(events, limit=2, cursor=cursor)

    assert end is None
    assert [e.event_id for e in first + second] == [
        trail[name] for name in ("registered", "by_bob", "deactivated", "later")
    ]


def test_a_cursor_we_did_not_issue_is_a_problem_naming_cursor() -> None:
    with pytest.raises(ProblemError) as caught:
        audit_event_page(AuditEvent.objects.all(), limit=5, cursor="not-a-cursor")

    assert caught.value.problem.status == 422
    assert [e.field for e in caught.value.problem.errors] == ["cursor"]
