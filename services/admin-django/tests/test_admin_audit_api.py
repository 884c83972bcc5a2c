"""``/api/audit/events``: producers post batches, staff and services read the trail."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from admin_django.audit.models import AuditEvent
from admin_django.support.roles import ACTING, READ_ONLY
from service_kit.problems import MALFORMED_BODY, UNAUTHENTICATED, VALIDATION

pytestmark = pytest.mark.usefixtures("db")

EVENTS = "/api/audit/events"
Headers = Callable[..., dict[str, str]]
Body = Callable[..., dict[str, Any]]
ProblemCheck = Callable[[Any, int], dict[str, Any]]


def post(client: Client, body: Any, headers: dict[str, str], **kwargs: Any) -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    return client.post(EVENTS, data=data, headers=headers, **kwargs)


def fields(body: dict[str, Any]) -> list[str]:
    return [error["field"] for error in body["errors"]]


# -- POST: who may write ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer some.jwt.token",
        "Basic " + base64.b64encode(b"users-fastapi:wrong-secret").decode(),
        "Basic " + base64.b64encode(b"stranger:whatever").decode(),
        "Basic !!!not-base64!!!",
    ],
    ids=["none", "bearer", "wrong-secret", "unknown-service", "malformed"],
)
def test_post_without_a_valid_service_credential_is_401(
    client: Client, event_body: Body, problem: ProblemCheck, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = post(client, {"events": [event_body()]}, headers)

    body = problem(response, 401)
    assert body["type"] == UNAUTHENTICATED
    assert response["WWW-Authenticate"].startswith("Basic ")
    assert not AuditEvent.objects.exists()


def test_a_producer_posts_without_a_csrf_token(event_body: Body, service_headers: Headers) -> None:
    """Services authenticate with their credential, not a cookie: CSRF does not apply."""
    client = Client(enforce_csrf_checks=True)

    response = post(client, {"events": [event_body()]}, service_headers("users-fastapi"))

    assert response.status_code == 201, response.content[:300]
    assert AuditEvent.objects.count() == 1


def test_post_from_a_trusted_service_that_is_no_producer_is_403(
    client: Client, event_body: Body, service_headers: Headers, problem: ProblemCheck
) -> None:
    assert "admin-django" in settings.CONFIG.trusted_services
    assert "admin-django" not in settings.CONFIG.audit_producers

    response = post(
        client, {"events": [event_body(service="admin-django")]}, service_headers("admin-django")
    )

    assert "admin-django" in problem(response, 403)["detail"]
    assert not AuditEvent.objects.exists()


# -- POST: what may be written ---------------------------------------------------------------


def test_post_needs_a_json_content_type(
    client: Client, event_body: Body, service_headers: Headers, problem: ProblemCheck
) -> None:
    response = post(
        client,
        {"events": [event_body()]},
        service_headers("users-fastapi"),
        content_type="text/plain",
    )

    assert "application/json" in problem(response, 415)["detail"]


def test_post_with_malformed_json_is_422(
    client: Client, service_headers: Headers, problem: ProblemCheck
) -> None:
    response = post(client, '{"events": [', service_headers("users-fastapi"))

    assert problem(response, 422)["type"] == MALFORMED_BODY


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = event
        for part in parents:
            target = target[part]
        target[last] = value

    return change


def _drop(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda event: event.pop(name)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (_set("id", "not-a-uuid"), "events.1.id"),
        (_set("occurred_at", "2025-03-01T12:00:00"), "events.1.occurred_at"),
        (_set("occurred_at", "yesterday"), "events.1.occurred_at"),
        # A date-time string, as documented: not seconds since 1970 (pydantic's lax mode).
        (_set("occurred_at", 1_700_000_000), "events.1.occurred_at"),
        (_set("action", "User.Registered"), "events.1.action"),
        (_set("action", "user registered"), "events.1.action"),
        (_set("trace_id", "abc123"), "events.1.trace_id"),
        (_set("trace_id", "AB" * 16), "events.1.trace_id"),
        (_set("colour", "red"), "events.1.colour"),
        (_set("actor.type", "robot"), "events.1.actor.type"),
        (_set("actor.rank", 3), "events.1.actor.rank"),
        (_set("subject.id", ""), "events.1.subject.id"),
        (_set("payload", ["not", "an", "object"]), "events.1.payload"),
        # PostgreSQL stores no NUL in text or jsonb (a 500 there before; SQLite kept it).
        (_set("subject.id", "a\x00b"), "events.1.subject.id"),
        (_set("actor.id", "\x00"), "events.1.actor.id"),
        (_set("payload", {"note": ["a\x00b"]}), "events.1.payload"),
        (_drop("occurred_at"), "events.1.occurred_at"),
        (_drop("subject"), "events.1.subject"),
    ],
    ids=[
        "bad-uuid",
        "naive-datetime",
        "not-a-datetime",
        "epoch-number",
        "action-uppercase",
        "action-space",
        "trace-id-short",
        "trace-id-uppercase",
        "unknown-field",
        "unknown-actor-type",
        "unknown-actor-field",
        "empty-subject-id",
        "payload-not-object",
        "nul-in-subject-id",
        "nul-in-actor-id",
        "nul-in-payload",
        "missing-occurred-at",
        "missing-subject",
    ],
)
def test_post_names_the_invalid_field(
    client: Client,
    event_body: Body,
    service_headers: Headers,
    problem: ProblemCheck,
    change: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    bad = event_body()
    change(bad)

    response = post(client, {"events": [event_body(), bad]}, service_headers("users-fastapi"))

    body = problem(response, 422)
    assert body["type"] == VALIDATION
    assert fields(body) == [field]
    assert field in body["detail"]
    assert body["errors"][0]["location"] == "body"
    assert body["errors"][0]["pointer"] == "#/" + field.replace(".", "/")
    assert not AuditEvent.objects.exists()  # nothing of a refused batch is recorded


@pytest.mark.parametrize(
    ("batch", "field"),
    [({"events": []}, "events"), ({}, "events"), ({"events": [], "extra": 1}, "events")],
    ids=["empty", "missing", "empty-and-extra"],
)
def test_post_needs_a_non_empty_events_list(
    client: Client,
    service_headers: Headers,
    problem: ProblemCheck,
    batch: dict[str, Any],
    field: str,
) -> None:
    response = post(client, batch, service_headers("users-fastapi"))

    assert field in fields(problem(response, 422))


def test_an_event_must_name_the_sending_service(
    client: Client, event_body: Body, service_headers: Headers, problem: ProblemCheck
) -> None:
    batch = {"events": [event_body(), event_body(service="legacy-flask")]}

    response = post(client, batch, service_headers("users-fastapi"))

    body = problem(response, 422)
    assert fields(body) == ["events.1.service"]
    assert "users-fastapi" in body["errors"][0]["detail"]
    assert not AuditEvent.objects.exists()


def test_a_batch_larger_than_the_limit_is_422_naming_events(
    client: Client,
    event_body: Body,
    service_headers: Headers,
    problem: ProblemCheck,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings.CONFIG, "audit_max_batch", 3)

    too_many = post(
        client, {"events": [event_body() for _ in range(4)]}, service_headers("users-fastapi")
    )
    at_limit = post(
        client, {"events": [event_body() for _ in range(3)]}, service_headers("users-fastapi")
    )

    body = problem(too_many, 422)
    assert fields(body) == ["events"]
    assert "3" in body["errors"][0]["detail"]
    assert at_limit.status_code == 201
    assert AuditEvent.objects.count() == 3


def test_a_body_over_the_size_limit_is_413(
    client: Client, event_body: Body, service_headers: Headers, problem: ProblemCheck
) -> None:
    padding = "x" * settings.CONFIG.max_body_bytes
    response = post(
        client, {"events": [event_body(payload={"pad": padding})]}, service_headers("legacy-flask")
    )

    problem(response, 413)
    assert not AuditEvent.objects.exists()


# -- POST: recording -------------------------------------------------------------------------


def test_post_records_the_batch_and_a_redelivery_reports_duplicates(
    client: Client, event_body: Body, service_headers: Headers
) -> None:
    acted = event_body(
        service="legacy-flask",
        actor={"type": "service", "id": "admin-django", "acting_for": "sam"},
        action="order.refunded",
        subject={"type": "order", "id": "o-1"},
        payload={"reason": "damaged"},
    )
    plain = event_body(service="legacy-flask", trace_id=None)
    batch = {"events": [acted, plain]}

    first = post(client, batch, service_headers("legacy-flask"))
    again = post(client, batch, service_headers("legacy-flask"))
    partly = post(
        client,
        {"events": [acted, event_body(service="legacy-flask")]},
        service_headers("legacy-flask"),
    )

    assert (first.status_code, first.json()) == (201, {"recorded": 2, "duplicates": 0})
    assert first["Content-Type"] == "application/json"
    assert (again.status_code, again.json()) == (200, {"recorded": 0, "duplicates": 2})
    assert (partly.status_code, partly.json()) == (201, {"recorded": 1, "duplicates": 1})
    # The batches themselves are not recorded as admin-django requests.
    assert AuditEvent.objects.count() == 3
    assert not AuditEvent.objects.filter(service="admin-django").exists()

    stored = AuditEvent.objects.get(event_id=acted["id"])
    assert stored.service == "legacy-flask"
    assert (stored.actor_type, stored.actor_id, stored.acting_for) == (
        "service",
        "admin-django",
        "sam",
    )
    assert (stored.subject_type, stored.subject_id) == ("order", "o-1")
    assert stored.trace_id == acted["trace_id"]
    assert stored.payload == {"reason": "damaged"}
    assert stored.occurred_at.isoformat() == acted["occurred_at"]
    unset = AuditEvent.objects.get(event_id=plain["id"])
    assert (unset.acting_for, unset.trace_id) == ("", "")


# -- GET: who may read -----------------------------------------------------------------------


def test_get_anonymous_is_401(client: Client, problem: ProblemCheck) -> None:
    response = client.get(EVENTS)

    assert problem(response, 401)["type"] == UNAUTHENTICATED
    # The challenge names a scheme this route accepts: a service's Basic credential.
    assert response["WWW-Authenticate"].startswith("Basic ")


def test_get_as_a_logged_in_user_who_is_not_staff_is_403(
    login: Callable[..., Client], problem: ProblemCheck
) -> None:
    response = login("customer", is_staff=False).get(EVENTS)

    problem(response, 403)


@pytest.mark.parametrize("group", [READ_ONLY, ACTING])
def test_get_as_support_staff_by_session(login: Callable[..., Client], group: str) -> None:
    response = login("sam", group=group).get(EVENTS)

    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


def test_get_as_staff_outside_the_support_groups_is_403(
    login: Callable[..., Client], problem: ProblemCheck
) -> None:
    """As in the console: being staff (for some other part of Django's admin) is not enough."""
    problem(login("sam").get(EVENTS), 403)


@pytest.mark.parametrize("service", ["admin-django", "users-fastapi", "legacy-flask"])
def test_get_with_any_trusted_service_credential(
    client: Client, service_headers: Headers, service: str
) -> None:
    response = client.get(EVENTS, headers=service_headers(service))

    assert response.status_code == 200


def test_get_with_a_wrong_service_credential_is_401_even_when_logged_in(
    login: Callable[..., Client], service_headers: Headers, problem: ProblemCheck
) -> None:
    response = login("sam").get(EVENTS, headers=service_headers("admin-django", secret="nope"))

    problem(response, 401)


# -- GET: what is read -----------------------------------------------------------------------


@pytest.fixture
def posted(
    client: Client, event_body: Body, service_headers: Headers, base_time: Any
) -> dict[str, dict[str, Any]]:
    events = {
        "registered": event_body(occurred_at=base_time.isoformat()),
        "refund": event_body(
            service="legacy-flask",
            occurred_at=(base_time + timedelta(minutes=1)).isoformat(),
            actor={"type": "service", "id": "admin-django", "acting_for": "sam"},
            action="order.refunded",
            subject={"type": "order", "id": "o-7"},
        ),
        "deactivated": event_body(
            occurred_at=(base_time + timedelta(minutes=2)).isoformat(),
            actor={"type": "staff", "id": "sam"},
            action="user.deactivated",
        ),
    }
    for name, event in events.items():
        producer = event["service"]
        response = post(client, {"events": [event]}, service_headers(producer))
        assert response.status_code == 201, name
    return events


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["items"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ["registered", "refund", "deactivated"]),
        ({"subject_type": "order"}, ["refund"]),
        ({"subject_type": "order", "subject_id": "o-7"}, ["refund"]),
        ({"subject_id": "o-8"}, []),
        ({"actor": "sam"}, ["refund", "deactivated"]),
        ({"actor": "admin-django"}, ["refund"]),
        ({"action": "user.deactivated"}, ["deactivated"]),
        ({"service": "legacy-flask"}, ["refund"]),
        ({"after": "2025-03-01T12:01:00+00:00"}, ["refund", "deactivated"]),
        ({"before": "2025-03-01T12:01:00Z"}, ["registered"]),
        ({"after": "2025-03-01T13:00:30+01:00", "before": "2025-03-01T12:02:00Z"}, ["refund"]),
    ],
)
def test_get_filters(
    client: Client,
    service_headers: Headers,
    posted: dict[str, dict[str, Any]],
    query: dict[str, str],
    expected: list[str],
) -> None:
    response = client.get(EVENTS, query, headers=service_headers("admin-django"))

    assert _ids(response) == [posted[name]["id"] for name in expected]


def test_get_filters_by_trace_id(
    client: Client, service_headers: Headers, posted: dict[str, dict[str, Any]]
) -> None:
    trace_id = posted["refund"]["trace_id"]

    response = client.get(EVENTS, {"trace_id": trace_id}, headers=service_headers("admin-django"))

    assert _ids(response) == [posted["refund"]["id"]]


def test_get_item_shape(
    client: Client, service_headers: Headers, posted: dict[str, dict[str, Any]]
) -> None:
    response = client.get(
        EVENTS, {"service": "legacy-flask"}, headers=service_headers("admin-django")
    )

    [item] = response.json()["items"]
    sent = posted["refund"]
    assert item.pop("recorded_at")
    assert item == {
        "id": sent["id"],
        "occurred_at": "2025-03-01T12:01:00+00:00",
        "service": "legacy-flask",
        "actor": {"type": "service", "id": "admin-django", "acting_for": "sam"},
        "action": "order.refunded",
        "subject": {"type": "order", "id": "o-7"},
        "trace_id": sent["trace_id"],
        "payload": sent["payload"],
    }
    plain = client.get(
        EVENTS, {"action": "user.deactivated"}, headers=service_headers("admin-django")
    )
    assert plain.json()["items"][0]["actor"]["acting_for"] is None


def test_get_pages_with_the_cursor(
    client: Client, service_headers: Headers, event_body: Body, base_time: Any
) -> None:
    sent = [
        event_body(occurred_at=(base_time + timedelta(seconds=i % 3)).isoformat()) for i in range(7)
    ]
    post(client, {"events": sent}, service_headers("users-fastapi"))
    headers = service_headers("admin-django")

    seen: list[str] = []
    query: dict[str, Any] = {"limit": 3}
    while True:
        page = client.get(EVENTS, query, headers=headers).json()
        assert len(page["items"]) <= 3
        seen.extend(item["id"] for item in page["items"])
        if page["next_cursor"] is None:
            break
        query["cursor"] = page["next_cursor"]

    order = sorted(sent, key=lambda e: (e["occurred_at"], uuid.UUID(e["id"])))
    assert seen == [e["id"] for e in order]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
        ({"cursor": "x" * 513}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after": "2025-03-01T12:00:00"}, "after"),
        ({"before": "2025-03-01"}, "before"),
        ({"after": "1700000000"}, "after"),
        ({"trace_id": "a" * 33}, "trace_id"),
        ({"colour": "red"}, "colour"),
        # PostgreSQL cannot even compare text with a NUL in it (a 500 before).
        ({"subject_id": "a\x00b"}, "subject_id"),
    ],
)
def test_get_names_the_invalid_query_parameter(
    client: Client,
    service_headers: Headers,
    problem: ProblemCheck,
    query: dict[str, str],
    field: str,
) -> None:
    response = client.get(EVENTS, query, headers=service_headers("admin-django"))

    body = problem(response, 422)
    assert fields(body) == [field]
    assert body["errors"][0]["location"] == "query"


def test_times_with_offsets_postgresql_refuses_are_taken_in_utc(
    client: Client, event_body: Body, service_headers: Headers
) -> None:
    """Python (and RFC 3339) take offsets up to 24 h, PostgreSQL up to 15:59: a 500 there
    before, for a filter and for a recorded event alike."""
    sent = event_body(occurred_at="2026-02-07T02:16:42-22:36")
    recorded = post(client, {"events": [sent]}, service_headers("users-fastapi"))
    assert recorded.status_code == 201, recorded.content

    response = client.get(
        EVENTS,
        {"before": "6684-02-07T02:16:42-22:36", "after": "2026-02-08T00:52:41-00:00"},
        headers=service_headers("admin-django"),
    )

    assert response.status_code == 200, response.content
    [item] = response.json()["items"]
    assert item["occurred_at"] == "2026-02-08T00:52:42+00:00"


def test_get_limits_accepts_the_bounds(client: Client, service_headers: Headers) -> None:
    headers = service_headers("admin-django")

    assert client.get(EVENTS, {"limit": 1}, headers=headers).status_code == 200
    assert client.get(EVENTS, {"limit": 100}, headers=headers).status_code == 200
