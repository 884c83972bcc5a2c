"""The audit trail in the Django admin: read-only, with filters and search."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client

from admin_django.audit.models import AuditEvent
from admin_django.audit.services import audit_event_record_many
from admin_django.support.roles import ACTING, READ_ONLY

pytestmark = pytest.mark.usefixtures("db")

CHANGELIST = "/admin/audit/auditevent/"


@pytest.fixture
def events(event_row: Callable[..., dict[str, Any]], base_time: Any) -> dict[str, AuditEvent]:
    subject = str(uuid.uuid4())
    rows = {
        "registered": event_row(subject_id=subject, trace_id="c" * 32),
        "refunded": event_row(
            service="legacy-flask",
            action="order.refunded",
            subject_type="order",
            subject_id="order-123",
            actor_type="service",
            actor_id="admin-django",
            acting_for="sam-the-agent",
            occurred_at=base_time + timedelta(days=40),
        ),
    }
    audit_event_record_many(events=list(rows.values()))
    return {name: AuditEvent.objects.get(event_id=row["event_id"]) for name, row in rows.items()}


def shown(response: Any) -> set[uuid.UUID]:
    assert response.status_code == 200, response.status_code
    return {event.event_id for event in response.context["cl"].result_list}


@pytest.fixture
def reader(login: Callable[..., Client]) -> Client:
    return login("rita", group=READ_ONLY)


@pytest.mark.parametrize("group", [READ_ONLY, ACTING])
def test_the_change_list_loads_for_both_support_groups(
    login: Callable[..., Client], events: dict[str, AuditEvent], group: str
) -> None:
    response = login("sam", group=group).get(CHANGELIST)

    assert shown(response) == {e.event_id for e in events.values()}
    assert b"order.refunded" in response.content


def test_staff_in_no_support_group_cannot_see_the_trail(login: Callable[..., Client]) -> None:
    assert login("nobody").get(CHANGELIST).status_code == 403


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"service": "legacy-flask"}, {"refunded"}),
        ({"action": "user.registered"}, {"registered"}),
        ({"actor_type__exact": "service"}, {"refunded"}),
        ({"subject_type": "order"}, {"refunded"}),
        ({"occurred_at__year": "2025", "occurred_at__month": "3"}, {"registered"}),
        (
            {
                "occurred_at__gte": "2025-04-01T00:00:00+00:00",
                "occurred_at__lt": "2025-05-01T00:00:00+00:00",
            },
            {"refunded"},
        ),
    ],
)
def test_filters(
    reader: Client, events: dict[str, AuditEvent], query: dict[str, str], expected: set[str]
) -> None:
    assert shown(reader.get(CHANGELIST, query)) == {events[name].event_id for name in expected}


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("order-123", {"refunded"}),  # =subject_id
        ("sam-the", {"refunded"}),  # acting_for contains
        ("c" * 32, {"registered"}),  # =trace_id
        ("admin-dj", {"refunded"}),  # actor_id contains
        ("no-such-thing", set()),  # not a UUID: the exact event id lookup must not fail
    ],
)
def test_search(
    reader: Client, events: dict[str, AuditEvent], term: str, expected: set[str]
) -> None:
    assert shown(reader.get(CHANGELIST, {"q": term})) == {
        events[name].event_id for name in expected
    }


def test_search_by_event_id_and_by_subject_id(
    reader: Client, events: dict[str, AuditEvent]
) -> None:
    registered = events["registered"]

    by_event = reader.get(CHANGELIST, {"q": str(registered.event_id)})
    by_subject = reader.get(CHANGELIST, {"q": registered.subject_id})

    assert shown(by_event) == {registered.event_id}
    assert shown(by_subject) == {registered.event_id}


def test_nothing_can_be_added_or_deleted(reader: Client, events: dict[str, AuditEvent]) -> None:
    event = events["registered"]

    changelist = reader.get(CHANGELIST)

    assert b"/admin/audit/auditevent/add/" not in changelist.content
    assert b"delete_selected" not in changelist.content
    assert reader.get(f"{CHANGELIST}add/").status_code == 403
    assert reader.get(f"{CHANGELIST}{event.pk}/delete/").status_code == 403
    assert reader.post(f"{CHANGELIST}{event.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = reader.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"}
    )
    assert bulk.status_code in (200, 302)
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_nothing_can_be_deleted_even_by_a_superuser(
    admin_client: Client, events: dict[str, AuditEvent]
) -> None:
    event = events["registered"]

    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.post(f"{CHANGELIST}{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_the_change_view_is_read_only(reader: Client, events: dict[str, AuditEvent]) -> None:
    event = events["refunded"]
    url = f"{CHANGELIST}{event.pk}/change/"

    page = reader.get(url)
    attempt = reader.post(url, {"action": "user.deleted", "actor_id": "mallory"})

    assert page.status_code == 200
    assert b"sam-the-agent" in page.content
    assert b'name="_save"' not in page.content
    assert attempt.status_code == 403
    event.refresh_from_db()
    assert (event.action, event.actor_id) == ("order.refunded", "admin-django")


def test_the_admin_index_links_the_support_console(reader: Client) -> None:
    response = reader.get("/admin/")

    assert response.status_code == 200
    assert b'href="/admin/support/users/"' in response.content
    assert b'href="/admin/audit/auditevent/"' in response.content
