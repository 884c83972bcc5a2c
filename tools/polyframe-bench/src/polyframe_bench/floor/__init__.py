"""The floor apps: what each framework and its database driver cost alone for a service's read.

Each answers the same read as its service's read scenario, from the same database
(the benchmarked platform's own, migrated by the service), with the same JSON, but
with the raw driver on a pool and nothing else: no ORM, no telemetry, no
authentication (the row is named in the path). Its ``/readyz`` runs one query
(``SELECT 1`` on the pool), so its cold start is the readiness floor: an app that
also waits for its database.

- ``users-fastapi`` ``GET /api/users/me`` -> FastAPI ``GET /users/{id}``, asyncpg pool.
- ``legacy-flask`` ``GET /api/orders/{id}`` -> Flask ``GET /orders/{id}``, psycopg_pool.
- ``admin-django`` ``GET /api/audit/events?limit=N`` -> Django ``GET /audit/events?limit=N``,
  Django's persistent connections (``CONN_MAX_AGE``) over psycopg, as the service.

The SQL and the shaping of rows into JSON are here, shared by the three apps.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import datetime, timedelta
from typing import Any

#: The database the floor reads (``postgresql://…``), set by the bench.
DATABASE_ENV = "FLOOR_DATABASE_URL"

#: The pools of the services when the bench runs them on PostgreSQL (per worker process), and
#: of their floors, alike. Two whole platforms (the tax needs one without instrumentation)
#: and three floors share one server's ``max_connections`` (100 by default): with the
#: services' defaults (users 5 + 5 overflow a worker, orders 8 + 8) they held more than 100
#: after the warm-up and the run failed with "too many clients". users-fastapi: 3 + 3
#: overflow; legacy-flask: 4 + 4, its 8 threads' worth. admin-django keeps one connection per
#: thread (4 a worker) as it does by default.
SERVICE_POOLS = {"USERS_DATABASE_POOL_SIZE": "3", "ORDERS_DATABASE_POOL_SIZE": "4"}
#: The floors' largest pool per worker: the same as their service's (pool + overflow).
FASTAPI_POOL_MAX = 6
FLASK_POOL_MAX = 8
#: legacy-flask's default cancel window (``LEGACY_CANCEL_WINDOW_SECONDS``): the platform the
#: bench starts keeps it.
CANCEL_WINDOW = timedelta(seconds=1800)

USER_SQL = "SELECT id, email, full_name, role, is_active, created_at FROM users WHERE id = $1"
ORDER_SQL = (
    "SELECT id, user_id, status, currency, total_cents, created_at, cancelled_at, "
    "refunded_at, refund_reason FROM orders WHERE id = %s"
)
ORDER_ITEMS_SQL = (
    "SELECT sku, quantity, unit_price_cents, line_total_cents FROM order_items "
    "WHERE order_id = %s ORDER BY position"
)
AUDIT_SQL = (
    "SELECT event_id, occurred_at, recorded_at, service, actor_type, actor_id, acting_for, "
    "action, subject_type, subject_id, trace_id, payload FROM audit_auditevent "
    "ORDER BY occurred_at, event_id LIMIT %s"
)
MAX_PAGE_SIZE = 100


def database_url() -> str:
    url = os.environ.get(DATABASE_ENV)
    if not url:
        raise RuntimeError(f"{DATABASE_ENV} is not set: the floor app needs its database")
    return url


def pydantic_time(value: datetime | None) -> str | None:
    """A UTC time as pydantic writes it in JSON (``…Z``), as users and orders answer."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def user_public(row: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "email": row["email"],
        "full_name": row["full_name"],
        "role": row["role"],
        "is_active": row["is_active"],
        "created_at": pydantic_time(row["created_at"]),
    }


def order_public(row: tuple[Any, ...], items: list[tuple[Any, ...]]) -> dict[str, Any]:
    order_id, user_id, status, currency, total, created, cancelled, refunded, reason = row
    return {
        "id": str(order_id),
        "user_id": str(user_id),
        "status": status,
        "currency": currency,
        "total_cents": total,
        "items": [
            {"sku": s, "quantity": q, "unit_price_cents": u, "line_total_cents": t}
            for s, q, u, t in items
        ],
        "created_at": pydantic_time(created),
        "cancellable_until": pydantic_time(created + CANCEL_WINDOW) if status == "paid" else None,
        "cancelled_at": pydantic_time(cancelled),
        "refunded_at": pydantic_time(refunded),
        "refund_reason": reason,
    }


def audit_page(rows: list[tuple[Any, ...]], limit: int) -> dict[str, Any]:
    """A page of the trail (``rows``: up to ``limit + 1``), as admin-django answers it."""
    items = [_event(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        occurred_at, event_id = rows[limit - 1][1], rows[limit - 1][0]
        raw = json.dumps([occurred_at.isoformat(), str(event_id)]).encode()
        next_cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return {"items": items, "next_cursor": next_cursor}


def _event(row: tuple[Any, ...]) -> dict[str, Any]:
    (event_id, occurred, recorded, service, actor_type, actor_id, acting_for, action,
     subject_type, subject_id, trace_id, payload) = row  # fmt: skip
    return {
        "id": str(event_id),
        "occurred_at": occurred.isoformat(),
        "recorded_at": recorded.isoformat(),
        "service": service,
        "actor": {"type": actor_type, "id": actor_id, "acting_for": acting_for or None},
        "action": action,
        "subject": {"type": subject_type, "id": subject_id},
        "trace_id": trace_id or None,
        "payload": json.loads(payload) if isinstance(payload, str) else payload,
    }


def page_size(value: str | None) -> int | None:
    """``?limit=`` as the service takes it (1-100, default 20); None if it is not one."""
    try:
        limit = int(value) if value is not None else 20
    except ValueError:
        return None
    return limit if 1 <= limit <= MAX_PAGE_SIZE else None


def uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
