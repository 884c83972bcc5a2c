"""Request and response bodies of the orders API (pydantic, documented by flask-openapi3).

Model names matter: the kit reports a validation error's location from the
model's suffix (``…Query`` → query string, ``…Path`` → path, else body).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from service_kit.inputs import StrictInput, Trimmed
from service_kit.pagination import DEFAULT_PAGE_SIZE, MAX_CURSOR_LENGTH, MAX_PAGE_SIZE

Sku = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", examples=["BOOK-42"])]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])]


class _Strict(StrictInput):
    """Unknown fields refused, no NUL in any text (PostgreSQL stores none). Nothing is
    stripped before the limits are checked (see service_kit.inputs): " EUR" breaks the
    documented pattern, so it is refused, as the document says."""


class OrderItemIn(_Strict):
    sku: Sku
    # strict: JSON integers only, as documented; lax mode would take "2", true or 2.0.
    quantity: int = Field(ge=1, le=1_000, strict=True)
    #: Integer cents: no floating point anywhere near money.
    unit_price_cents: int = Field(ge=0, le=10_000_000, strict=True)


class OrderCreate(_Strict):
    currency: Currency
    items: list[OrderItemIn] = Field(min_length=1, max_length=100)


class RefundCreate(_Strict):
    reason: Trimmed = Field(min_length=3, max_length=500)


class OrderItemPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int


class OrderPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    status: str
    currency: str
    total_cents: int
    items: list[OrderItemPublic]
    created_at: datetime
    cancellable_until: datetime | None
    cancelled_at: datetime | None
    refunded_at: datetime | None
    refund_reason: str | None


class OrderPage(BaseModel):
    items: list[OrderPublic]
    next_cursor: str | None = None


class OrderPath(BaseModel):
    order_id: uuid.UUID


class OrderListQuery(_Strict):
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = Field(default=None, max_length=MAX_CURSOR_LENGTH)
    #: Staff and services only: whose orders to list (default: the caller's own).
    user_id: uuid.UUID | None = None


class CreateOrderHeaders(BaseModel):
    idempotency_key: str | None = Field(
        default=None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retry-safe creation: the same key and body replay the first answer.",
    )
