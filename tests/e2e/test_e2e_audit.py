"""The audit trail through the ingress: every change arrives once, even across an outage.

Producers (users-fastapi, legacy-flask) write outbox rows in the transaction of
the change; their dispatchers deliver them to admin-django, which records each
event id once. These tests read the trail at ``/api/audit/events`` with a
producer's service credential (any trusted service may read it).

The outage test freezes admin-django (SIGSTOP: connections hang, as with a
stuck peer) and kills both dispatchers in the middle (a producer restart), on a
second local platform kept for such tests (``isolated_platform``).
"""

from __future__ import annotations

import sqlite3
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

AUDIT = "/api/audit/events"
ORDERS = "/api/orders"
USERS = "/api/users"
#: Any service admin-django trusts may read the trail; the orders service is one.
READER = "legacy-flask"
PRODUCER = "users-fastapi"
#: Bounds, not performance assertions: normal delivery takes well under a second;
#: after an outage the dispatchers' backoff (at most 60 s, here a few seconds) decides.
DELIVERY_TIMEOUT = 30.0
RECOVERY_TIMEOUT = 90.0
MEASURED_ORDERS = 10
ORDER = {"currency": "EUR", "items": [{"sku": "BOOK-42", "quantity": 1, "unit_price_cents": 2_990}]}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _events(client: httpx.Client, headers: dict[str, str], **filters: str) -> list[dict[str, Any]]:
    """Every event matching ``filters``, following the cursor (bounded)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(50):
        params = {**filters, "limit": "100", **({"cursor": cursor} if cursor else {})}
        response = client.get(AUDIT, params=params, headers=headers)
        assert response.status_code == 200, (response.status_code, response.text)
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    pytest.fail(f"{AUDIT} kept handing out cursors after 50 pages")


def _wait_for_events(
    client: httpx.Client,
    headers: dict[str, str],
    count: int,
    timeout: float = DELIVERY_TIMEOUT,
    **filters: str,
) -> list[dict[str, Any]]:
    """Poll until ``count`` events match ``filters`` (never more); return them."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = _events(client, headers, **filters)
        assert len(found) <= count, f"more events than changes for {filters}: {found}"
        if len(found) == count:
            return found
        time.sleep(0.1)
    pytest.fail(
        f"{len(found)} of {count} audit event(s) for {filters} after {timeout:g}s", pytrace=False
    )


def _register_and_log_in(client: httpx.Client) -> tuple[str, str]:
    """A new account: (user id, access token)."""
    email, password = f"audit-{uuid.uuid4().hex}@example.com", f"pw-{uuid.uuid4().hex}"
    registered = client.post(
        f"{USERS}/register", json={"email": email, "password": password, "full_name": "Audit E2E"}
    )
    assert registered.status_code == 201, registered.text
    login = client.post(f"{USERS}/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    return registered.json()["id"], login.json()["access_token"]


def _order(client: httpx.Client, token: str, **headers: str) -> dict[str, Any]:
    response = client.post(ORDERS, json=ORDER, headers={**_bearer(token), **headers})
    assert response.status_code == 201, (response.status_code, response.text)
    order: dict[str, Any] = response.json()
    return order


def _parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


# -- normal operation ------------------------------------------------------------------------


def test_an_order_is_in_the_trail_with_its_actor_and_trace_id(
    client: httpx.Client, service_headers: Any
) -> None:
    reader = service_headers(READER)
    user_id, token = _register_and_log_in(client)
    trace_id = uuid.uuid4().hex
    order = _order(client, token, traceparent=f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01")

    (event,) = _wait_for_events(client, reader, 1, subject_type="order", subject_id=order["id"])
    assert event["action"] == "order.created"
    assert event["service"] == "legacy-flask"
    assert event["actor"] == {"type": "user", "id": user_id, "acting_for": None}
    assert event["trace_id"] == trace_id
    assert event["payload"]["user_id"] == user_id
    assert event["payload"]["total_cents"] == order["total_cents"]
    assert _parse(event["occurred_at"]) <= _parse(event["recorded_at"])
    # The trace id finds it too: the way from a trace to what it changed.
    assert [e["id"] for e in _events(client, reader, trace_id=trace_id)] == [event["id"]]

    (registered,) = _wait_for_events(client, reader, 1, subject_type="user", subject_id=user_id)
    assert registered["action"] == "user.registered"
    assert registered["service"] == "users-fastapi"
    assert registered["actor"]["type"] == "user"


def test_a_staff_action_names_the_staff_member(client: httpx.Client, service_headers: Any) -> None:
    reader = service_headers(READER)
    user_id, _token = _register_and_log_in(client)
    # A staff name of this run's own: the suite may run again against the same deployment
    # (make kind-e2e runs it from the host, then in the cluster), whose trail keeps the last.
    auditor = f"e2e-auditor-{uuid.uuid4().hex[:8]}"
    acting = service_headers("admin-django", acting_for=auditor)

    deactivated = client.post(f"{USERS}/{user_id}/deactivate", headers=acting)
    assert deactivated.status_code == 200, deactivated.text

    events = _wait_for_events(client, reader, 2, subject_type="user", subject_id=user_id)
    assert [e["action"] for e in events] == ["user.registered", "user.deactivated"]
    assert events[1]["actor"] == {
        "type": "service",
        "id": "admin-django",
        "acting_for": auditor,
    }
    assert [e["id"] for e in _events(client, reader, actor=auditor)] == [events[1]["id"]]


def test_audit_delay_under_normal_operation(
    client: httpx.Client, service_headers: Any, report_measurement: Any
) -> None:
    """Reports how long an order takes to reach the trail (measured, never asserted)."""
    reader = service_headers(READER)
    _user_id, token = _register_and_log_in(client)
    delays = []
    for _ in range(MEASURED_ORDERS):
        order = _order(client, token)
        (event,) = _wait_for_events(client, reader, 1, subject_type="order", subject_id=order["id"])
        delays.append((_parse(event["recorded_at"]) - _parse(event["occurred_at"])).total_seconds())
    delays.sort()
    report_measurement(
        "order created -> audit event recorded",
        f"{len(delays)} orders, one at a time: median {statistics.median(delays) * 1000:.0f} ms, "
        f"min {delays[0] * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms",
    )


def test_a_redelivered_batch_is_recorded_once(client: httpx.Client, service_headers: Any) -> None:
    producer = service_headers(PRODUCER)
    subject = f"e2e-{uuid.uuid4().hex}"
    now = datetime.now(UTC).isoformat()

    def event() -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "occurred_at": now,
            "service": PRODUCER,
            "actor": {"type": "service", "id": PRODUCER},
            "action": "e2e.probe",
            "subject": {"type": "e2e-probe", "id": subject},
            "payload": {"probe": True},
        }

    batch = [event(), event(), event()]
    first = client.post(AUDIT, json={"events": batch}, headers=producer)
    assert first.status_code == 201, first.text
    assert first.json() == {"recorded": 3, "duplicates": 0}

    again = client.post(AUDIT, json={"events": batch}, headers=producer)
    assert again.status_code == 200, again.text
    assert again.json() == {"recorded": 0, "duplicates": 3}

    extra = event()
    partly = client.post(AUDIT, json={"events": [batch[0], extra]}, headers=producer)
    assert partly.status_code == 201, partly.text
    assert partly.json() == {"recorded": 1, "duplicates": 1}

    recorded = _events(client, producer, subject_type="e2e-probe", subject_id=subject)
    assert sorted(e["id"] for e in recorded) == sorted(e["id"] for e in [*batch, extra])


# -- an outage of admin-django and a restart of the producers ---------------------------------


def _undelivered(database: Path) -> int:
    """Rows of a producer's outbox not yet delivered (read-only, straight from its SQLite)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=15) as connection:
        (count,) = connection.execute(
            "SELECT count(*) FROM outbox WHERE delivered_at IS NULL"
        ).fetchone()
    return int(count)


def _oldest_pending(target: str) -> float | None:
    """A dispatcher's oldest-pending timestamp, from its /metrics (None before its first)."""
    text = httpx.get(f"http://{target}/metrics", timeout=15).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "polyframe_outbox_oldest_pending_timestamp_seconds":
                return float(sample.value)
    return None


def _check_dispatchers_run_while_delivery_fails(targets: list[str]) -> None:
    """Each dispatcher's loop goes on while no delivery succeeds: alive (/livez), and the time
    of its oldest held event exported, though no round delivered anything."""
    for target in targets:
        assert httpx.get(f"http://{target}/livez", timeout=15).status_code == 200, target
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while not (_oldest_pending(target) or float("inf")) < time.time():
            assert time.monotonic() < deadline, f"{target}: no oldest pending event exported"
            time.sleep(0.25)


@pytest.fixture
def outage(isolated_platform: Any) -> Iterator[tuple[Any, httpx.Client]]:
    with httpx.Client(base_url=isolated_platform.base_url, timeout=15) as client:
        yield isolated_platform, client


def test_an_admin_outage_and_producer_restarts_lose_and_duplicate_nothing(
    outage: tuple[Any, httpx.Client], service_headers: Any, report_measurement: Any
) -> None:
    platform, client = outage
    local = platform.local
    data_dir = Path(platform.ready["data_dir"])
    reader = service_headers(READER, of=platform)
    expected: Counter[tuple[str, str]] = Counter()
    subjects: dict[str, str] = {}  # subject id -> subject type

    with local.frozen("admin-django"):
        for _ in range(3):
            user_id, token = _register_and_log_in(client)
            expected["user.registered", user_id] += 1
            subjects[user_id] = "user"
            for number in range(2):
                order = _order(client, token)
                expected["order.created", order["id"]] += 1
                subjects[order["id"]] = "order"
                if number == 0:
                    cancelled = client.post(
                        f"{ORDERS}/{order['id']}/cancel", headers=_bearer(token)
                    )
                    assert cancelled.status_code == 200, cancelled.text
                    expected["order.cancelled", order["id"]] += 1
        # The events are held back, not lost: they wait in the producers' outboxes.
        held = _undelivered(data_dir / "users-fastapi.db") + _undelivered(
            data_dir / "legacy-flask.db"
        )
        assert held >= sum(expected.values()), (held, expected)
        _check_dispatchers_run_while_delivery_fails(platform.ready["metrics_targets"]["outbox"])
        # Both producers' dispatchers die in the middle and are restarted.
        for dispatcher in ("users-outbox", "orders-outbox"):
            local.wait_restarted(dispatcher, local.kill(dispatcher))
        frozen_at = time.monotonic()

    local.wait_service_ready("admin-django")
    recorded: Counter[tuple[str, str]] = Counter()
    ids: list[str] = []
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while time.monotonic() < deadline:
        recorded.clear()
        ids.clear()
        for subject_id, subject_type in subjects.items():
            for event in _events(client, reader, subject_type=subject_type, subject_id=subject_id):
                recorded[event["action"], subject_id] += 1
                ids.append(event["id"])
        if recorded == expected:
            break
        assert all(recorded[key] <= count for key, count in expected.items()), recorded
        time.sleep(0.25)
    drained_after = time.monotonic() - frozen_at
    assert recorded == expected, f"missing: {expected - recorded}, extra: {recorded - expected}"
    assert len(ids) == len(set(ids)) == sum(expected.values())

    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while _undelivered(data_dir / "users-fastapi.db") + _undelivered(data_dir / "legacy-flask.db"):
        assert time.monotonic() < deadline, "outbox rows recorded but never marked delivered"
        time.sleep(0.1)
    report_measurement(
        "audit backlog after an admin-django outage",
        f"{sum(expected.values())} held events recorded exactly once "
        f"{drained_after:.1f} s after admin-django resumed",
    )
