"""The floor apps start on PostgreSQL, wait for it in /readyz, and answer their service's JSON.

The rows here are written by hand into a minimal copy of the services' tables; every bench
run also checks each floor against its real service (``bench.check_floors``) before it
measures, and the quick run of the whole harness (test_bench.py) does that on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from polyframe_bench.floor import DATABASE_ENV
from polyframe_bench.platform import BareProcess
from polyframe_bench.servers import floor_servers
from polyframe_testing.databases import fresh_postgres_database

USER = "3f1c1d1e-0000-4000-8000-000000000001"
ORDER = "3f1c1d1e-0000-4000-8000-000000000002"
EVENTS = ("3f1c1d1e-0000-4000-8000-0000000000e1", "3f1c1d1e-0000-4000-8000-0000000000e2")

SCHEMA = f"""
CREATE TABLE users (id uuid PRIMARY KEY, email varchar(320), full_name varchar(200),
    role varchar(20), is_active boolean, created_at timestamptz);
CREATE TABLE orders (id uuid PRIMARY KEY, user_id uuid, status varchar(20), currency varchar(3),
    total_cents bigint, created_at timestamptz, cancelled_at timestamptz,
    refunded_at timestamptz, refund_reason text);
CREATE TABLE order_items (id serial PRIMARY KEY, order_id uuid, position int, sku varchar(64),
    quantity int, unit_price_cents bigint, line_total_cents bigint);
CREATE TABLE audit_auditevent (id bigserial PRIMARY KEY, event_id uuid UNIQUE,
    occurred_at timestamptz, recorded_at timestamptz, service varchar(50),
    actor_type varchar(20), actor_id varchar(150), acting_for varchar(150),
    action varchar(100), subject_type varchar(50), subject_id varchar(100),
    trace_id varchar(32), payload jsonb);
INSERT INTO users VALUES ('{USER}', 'ada@example.com', 'Ada', 'member', true,
    '2026-12-01 10:00:00.123456+00');
INSERT INTO orders VALUES ('{ORDER}', '{USER}', 'paid', 'EUR', 300,
    '2026-12-01 10:00:00+00', NULL, NULL, NULL);
INSERT INTO order_items (order_id, position, sku, quantity, unit_price_cents, line_total_cents)
    VALUES ('{ORDER}', 1, 'B', 1, 200, 200), ('{ORDER}', 0, 'A', 1, 100, 100);
INSERT INTO audit_auditevent (event_id, occurred_at, recorded_at, service, actor_type, actor_id,
    acting_for, action, subject_type, subject_id, trace_id, payload) VALUES
    ('{EVENTS[0]}', '2026-12-01 10:00:00.5+00', '2026-12-01 10:00:01+00', 'legacy-flask',
     'user', '{USER}', '', 'order.created', 'order', '{ORDER}', '', '{{"total_cents": 300}}'),
    ('{EVENTS[1]}', '2026-12-01 10:00:02+00', '2026-12-01 10:00:03+00', 'legacy-flask',
     'service', 'legacy-flask', 'staff1', 'order.refunded', 'order', '{ORDER}',
     '0123456789abcdef0123456789abcdef', '{{}}');
"""  # noqa: S608 - the test's own constants

#: What each service answers for these rows (users and orders: pydantic's JSON times, ``Z``;
#: the audit trail: ``isoformat()``, ``+00:00``).
EXPECTED = {
    "floor-fastapi": (
        f"/users/{USER}",
        {
            "id": USER,
            "email": "ada@example.com",
            "full_name": "Ada",
            "role": "member",
            "is_active": True,
            "created_at": "2026-12-01T10:00:00.123456Z",
        },
    ),
    "floor-flask": (
        f"/orders/{ORDER}",
        {
            "id": ORDER,
            "user_id": USER,
            "status": "paid",
            "currency": "EUR",
            "total_cents": 300,
            "items": [
                {"sku": "A", "quantity": 1, "unit_price_cents": 100, "line_total_cents": 100},
                {"sku": "B", "quantity": 1, "unit_price_cents": 200, "line_total_cents": 200},
            ],
            "created_at": "2026-12-01T10:00:00Z",
            "cancellable_until": "2026-12-01T10:30:00Z",
            "cancelled_at": None,
            "refunded_at": None,
            "refund_reason": None,
        },
    ),
    "floor-django": (
        "/audit/events?limit=1",
        {
            "items": [
                {
                    "id": EVENTS[0],
                    "occurred_at": "2026-12-01T10:00:00.500000+00:00",
                    "recorded_at": "2026-12-01T10:00:01+00:00",
                    "service": "legacy-flask",
                    "actor": {"type": "user", "id": USER, "acting_for": None},
                    "action": "order.created",
                    "subject": {"type": "order", "id": ORDER},
                    "trace_id": None,
                    "payload": {"total_cents": 300},
                }
            ],
            "next_cursor": "WyIyMDI2LTEyLTAxVDEwOjAwOjAwLjUwMDAwMCswMDowMCIsICIzZjFjMWQxZS0wMDAw"
            "LTQwMDAtODAwMC0wMDAwMDAwMDAwZTEiXQ",
        },
    ),
}


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_postgres_database("bench_floor") as url:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(SCHEMA.encode())
        yield url


@pytest.mark.parametrize("server", floor_servers(1), ids=lambda server: server.name)
def test_a_floor_answers_its_services_json_from_postgresql(
    server: object, database: str, tmp_path: Path
) -> None:
    floor = BareProcess(server, env={DATABASE_ENV: database})  # type: ignore[arg-type]
    path, expected = EXPECTED[floor.server.name]
    floor.start(tmp_path / "floor.log")  # waits for /readyz: one query on its pool
    try:
        answer = httpx.get(floor.url + path, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json() == expected
        again = httpx.get(floor.url + path, timeout=30)  # a pooled connection, reused
        assert again.json() == expected
    finally:
        floor.stop()
    cursor = expected.get("next_cursor")
    if cursor:  # the service's own cursor format (service_kit.pagination)
        from base64 import urlsafe_b64decode

        decoded = json.loads(urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        assert decoded == ["2026-12-01T10:00:00.500000+00:00", EVENTS[0]]
