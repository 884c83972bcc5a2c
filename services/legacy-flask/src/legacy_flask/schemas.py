"""Request and response bodies of the orders API (pydantic, documented by flask-openapi3).

Model names matter: the kit reports a validation error's location from the
model's suffix (``…Query`` → query string, ``…Path`` → path, else body).
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from service_kit.inputs import StrictInput, Trimmed
from service_kit.pagination import DEFAULT_PAGE_SIZE, MAX_CURSOR_LENGTH, MAX_PAGE_SIZE

Sku = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", examples=["BOOK-42"])]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])]


#: JSON schemas built so far: (model, arguments) -> schema (see :class:`_SchemaOnce`).
_SCHEMAS: dict[tuple[Any, ...], dict[str, Any]] = {}


class _SchemaOnce(BaseModel):
    """A header or query model whose JSON schema is built once, not on every request.

    flask-openapi3 reads a header or query model's JSON schema on every request it
    validates (``model_json_schema()``, for its properties' types): building it was a
    quarter of legacy-flask's CPU per order creation under load (docs/benchmarks.md,
    "Order creation under load"). Built once per model and arguments; every caller gets
    its own copy, since a document builder may edit what it is given.
    """

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        key = (cls, args, tuple(sorted(kwargs.items())))
        schema = _SCHEMAS.get(key)
        if schema is None:
            schema = _SCHEMAS[key] = super().model_json_schema(*args, **kwargs)
        return copy.deepcopy(schema)


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


class OrderListQuery(_SchemaOnce, _Strict):
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = Field(default=None, max_length=MAX_CURSOR_LENGTH)
    #: Staff and services only: whose orders to list (default: the caller's own).
    user_id: uuid.UUID | None = None


class CreateOrderHeaders(_SchemaOnce):
    idempotency_key: str | None = Field(
        default=None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retry-safe creation: the same key and body replay the first answer.",
    )
