"""Order operations: the business rules, kept out of the views.

The rules: docs/architecture.md, "The orders' rules".
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from legacy_flask.models import IdempotencyRecord, Order, OrderItem, OrderStatus, OutboxEvent
from legacy_flask.schemas import OrderCreate, OrderPublic
from service_kit.outbox import Actor, outbox_values
from service_kit.problems import ProblemError, conflict, not_found
from service_kit.sqla import keyset_page, split_page

IDEMPOTENCY_KEY_REUSED = "urn:polyframe:problem:idempotency-key-reused"


@dataclass(frozen=True, slots=True)
class CreateResult:
    status: int
    body: dict[str, Any]
    replayed: bool


def order_public(order: Order, cancel_window: timedelta) -> dict[str, Any]:
    cancellable_until = (
        order.created_at + cancel_window if order.status == OrderStatus.PAID else None
    )
    public = OrderPublic.model_validate(
        {
            **{c: getattr(order, c) for c in OrderPublic.model_fields if c != "cancellable_until"},
            "cancellable_until": cancellable_until,
        }
    )
    return public.model_dump(mode="json")


def request_fingerprint(body: OrderCreate) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotent_replay(
    session: Session, *, user_id: uuid.UUID, key: str, fingerprint: str
) -> CreateResult | None:
    """The stored answer for this key, or ``None`` if the key is new."""
    record = session.execute(
        select(IdempotencyRecord).where(
            IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key
        )
    ).scalar_one_or_none()
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise ProblemError(
            422,
            "This Idempotency-Key was already used with a different request body",
            title="Idempotency key reused",
            type=IDEMPOTENCY_KEY_REUSED,
        )
    return CreateResult(record.response_status, json.loads(record.response_body), replayed=True)


def order_create(
    session: Session,
    *,
    user_id: uuid.UUID,
    body: OrderCreate,
    idempotency_key: str | None,
    cancel_window: timedelta,
) -> CreateResult:
    fingerprint = request_fingerprint(body)
    order = Order(user_id=user_id, currency=body.currency, status=OrderStatus.PAID.value)
    total = 0
    for position, item in enumerate(body.items):
        line_total = item.quantity * item.unit_price_cents
        total += line_total
        order.items.append(
            OrderItem(
                position=position,
                sku=item.sku,
                quantity=item.quantity,
                unit_price_cents=item.unit_price_cents,
                line_total_cents=line_total,
            )
        )
    order.total_cents = total
    session.add(order)
    session.flush()
    _audit(session, order, "order.created", Actor("user", str(user_id)))
    result = CreateResult(201, order_public(order, cancel_window), replayed=False)
    if idempotency_key is not None:
        session.add(
            IdempotencyRecord(
                user_id=user_id,
                key=idempotency_key,
                request_hash=fingerprint,
                order_id=order.id,
                response_status=result.status,
                response_body=json.dumps(result.body),
            )
        )
    try:
        session.commit()
    except IntegrityError:
        # A concurrent request with the same key committed first: the unique
        # constraint rejected our row, our order rolled back with it.
        session.rollback()
        if idempotency_key is None:
            raise
        replay = idempotent_replay(
            session, user_id=user_id, key=idempotency_key, fingerprint=fingerprint
        )
        if replay is None:
            raise
        return replay
    return result


def order_list(
    session: Session, *, user_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[Order], str | None]:
    query = select(Order).where(Order.user_id == user_id)
    query = keyset_page(query, Order.created_at, Order.id, limit=limit, cursor=cursor)
    return split_page(list(session.execute(query).scalars()), limit)


def order_get(session: Session, order_id: uuid.UUID, *, owner: uuid.UUID | None) -> Order:
    """The order; ``owner`` restricts it to that user (404 otherwise: existence does not leak)."""
    order = session.get(Order, order_id)
    if order is None or (owner is not None and order.user_id != owner):
        raise not_found("No such order")
    return order


def _audit(session: Session, order: Order, action: str, actor: Actor, **payload: Any) -> None:
    """Queue an audit event in this transaction (delivered later by the outbox dispatcher)."""
    session.add(
        OutboxEvent(
            **outbox_values(
                action=action,
                subject_type="order",
                subject_id=str(order.id),
                actor=actor,
                payload={
                    "user_id": str(order.user_id),
                    "total_cents": order.total_cents,
                    "currency": order.currency,
                    **payload,
                },
            )
        )
    )


def _transition(
    session: Session, order: Order, target: OrderStatus, actor: Actor, **values: Any
) -> Order:
    changed = session.execute(
        update(Order)
        .where(Order.id == order.id, Order.status == OrderStatus.PAID.value)
        .values(status=target.value, updated_at=datetime.now(UTC), **values)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        session.refresh(order)
        raise _not_paid(order)
    reason = values.get("refund_reason")
    _audit(session, order, f"order.{target.value}", actor, **({"reason": reason} if reason else {}))
    session.commit()
    session.refresh(order)
    return order


def _not_paid(order: Order) -> ProblemError:
    return conflict(f"The order is {order.status}, not paid")


def order_cancel(
    session: Session, order: Order, *, now: datetime, cancel_window: timedelta
) -> Order:
    if order.status != OrderStatus.PAID:
        raise _not_paid(order)
    if now > order.created_at + cancel_window:
        raise conflict("The cancel window of this order has ended; ask support for a refund")
    return _transition(
        session, order, OrderStatus.CANCELLED, Actor("user", str(order.user_id)), cancelled_at=now
    )


def order_refund(
    session: Session, order: Order, *, now: datetime, reason: str, staff: str, actor: Actor
) -> Order:
    if order.status != OrderStatus.PAID:
        raise _not_paid(order)
    return _transition(
        session,
        order,
        OrderStatus.REFUNDED,
        actor,
        refunded_at=now,
        refund_reason=reason,
        refunded_by=staff,
    )
