"""``/api/orders``: create, list, read, cancel (customers); refund (staff). Thin views."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag

from legacy_flask import auth
from legacy_flask.extensions import db, users
from legacy_flask.orders import service
from legacy_flask.schemas import (
    CreateOrderHeaders,
    OrderCreate,
    OrderListQuery,
    OrderPage,
    OrderPath,
    OrderPublic,
    RefundCreate,
)
from legacy_flask.settings import current_settings
from service_kit.outbox import Actor
from service_kit.problems import forbidden, openapi_problem_responses

log = logging.getLogger("legacy_flask.orders")

PREFIX = "/api/orders"


bp = APIBlueprint(
    "orders",
    __name__,
    url_prefix=PREFIX,
    abp_tags=[Tag(name="orders", description="Orders of the legacy system")],
    abp_security=[{"bearer": []}],
    # The app-level ``responses`` of flask-openapi3 apply to the app's own routes only, not
    # to an APIBlueprint's: the problem+json answers are declared here. 422 in particular,
    # or flask-openapi3 documents its own ``application/json`` list of errors instead.
    # 414: a request line over gunicorn's limit, refused (as a problem) before Flask sees it.
    abp_responses=dict(openapi_problem_responses(400, 401, 403, 404, 409, 413, 414, 415, 422, 503)),
)
#: Routes that also accept a trusted service's Basic credential (``auth.current_caller``).
SERVICE_OR_BEARER: list[dict[str, list[str]]] = [{"service": []}]

Reply = tuple[dict[str, Any], int] | tuple[dict[str, Any], int, dict[str, str]]

#: Who may call each view, declared on the view (``@access.allow``); undeclared views are refused.
access = auth.AccessTable(bp)


def _cancel_window() -> timedelta:
    return timedelta(seconds=current_settings().cancel_window_seconds)


@bp.post(
    "",
    summary="Place an order for yourself (a user's token)",
    responses={201: OrderPublic},
)
@access.allow(auth.current_user)
def create_order(body: OrderCreate, header: CreateOrderHeaders) -> Reply:
    caller = auth.caller()
    assert caller.user_id is not None
    key = header.idempotency_key
    if key is not None:
        replay = service.idempotent_replay(
            db.session,
            user_id=caller.user_id,
            key=key,
            fingerprint=service.request_fingerprint(body),
        )
        if replay is not None:
            return replay.body, replay.status, {"Idempotent-Replayed": "true"}
    # Ask the owner of accounts; a users service that is down or slow becomes a 503
    # (ServiceUnavailableError) within the client's bounded time, before anything is written.
    if not users.is_active(caller.user_id):
        raise forbidden("This account is deactivated and cannot place orders")
    result = service.order_create(
        db.session,
        user_id=caller.user_id,
        body=body,
        idempotency_key=key,
        cancel_window=_cancel_window(),
    )
    if result.replayed:
        return result.body, result.status, {"Idempotent-Replayed": "true"}
    log.info("order created", extra={"order_id": result.body["id"], "user_id": str(caller.user_id)})
    return result.body, result.status


@bp.get(
    "",
    summary="List your orders (staff: any user's with user_id)",
    responses={200: OrderPage},
    security=SERVICE_OR_BEARER,
)
@access.allow(auth.current_caller)
def list_orders(query: OrderListQuery) -> Reply:
    caller = auth.caller()
    if query.user_id is not None and query.user_id != caller.user_id:
        if not caller.is_staff:
            raise forbidden("Only staff may list another user's orders")
        user_id = query.user_id
    elif caller.user_id is not None:
        user_id = caller.user_id
    else:
        raise forbidden("Name the user whose orders to list (user_id)")
    orders, next_cursor = service.order_list(
        db.session, user_id=user_id, limit=query.limit, cursor=query.cursor
    )
    window = _cancel_window()
    page = {"items": [service.order_public(o, window) for o in orders], "next_cursor": next_cursor}
    return page, 200


@bp.get(
    "/<uuid:order_id>",
    summary="Read one of your orders (staff: any)",
    responses={200: OrderPublic},
    security=SERVICE_OR_BEARER,
)
@access.allow(auth.current_caller)
def read_order(path: OrderPath) -> Reply:
    caller = auth.caller()
    if caller.user_id is None and not caller.is_staff:
        raise forbidden("Only users and staff may read orders")
    owner = None if caller.is_staff else caller.user_id
    order = service.order_get(db.session, path.order_id, owner=owner)
    return service.order_public(order, _cancel_window()), 200


@bp.post(
    "/<uuid:order_id>/cancel",
    summary="Cancel one of your orders within the cancel window",
    responses={200: OrderPublic},
)
@access.allow(auth.current_user)
def cancel_order(path: OrderPath) -> Reply:
    caller = auth.caller()
    order = service.order_get(db.session, path.order_id, owner=caller.user_id)
    order = service.order_cancel(
        db.session, order, now=datetime.now(UTC), cancel_window=_cancel_window()
    )
    log.info("order cancelled", extra={"order_id": str(order.id)})
    return service.order_public(order, _cancel_window()), 200


@bp.post(
    "/<uuid:order_id>/refund",
    summary="Refund a paid order (staff, or a service acting for staff)",
    responses={200: OrderPublic},
    security=SERVICE_OR_BEARER,
)
@access.allow(auth.current_staff)
def refund_order(path: OrderPath, body: RefundCreate) -> Reply:
    caller = auth.caller()
    if caller.user_id is not None and not users.is_active(caller.user_id):
        raise forbidden("This staff account is deactivated")
    order = service.order_get(db.session, path.order_id, owner=None)
    staff = caller.staff_name or "unknown"
    actor = Actor(caller.actor_type, caller.actor_id, acting_for=caller.acting_for)
    order = service.order_refund(
        db.session, order, now=datetime.now(UTC), reason=body.reason, staff=staff, actor=actor
    )
    log.info(
        "order refunded",
        extra={"order_id": str(order.id), "by_service": caller.service, "acting_for": staff},
    )
    return service.order_public(order, _cancel_window()), 200
