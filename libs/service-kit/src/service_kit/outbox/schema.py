"""The ``outbox`` table of a producer: its ORM columns and its migrations.

Both producers' Alembic revisions call the migration functions here, so the table is defined
once; each function is one applied revision and never changes (add a new one instead).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import JSON, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from service_kit.sqla import UTCDateTime

TABLE = "outbox"
#: What the dispatcher looks up: the pending rows that are due.
PENDING_INDEX = "ix_outbox_pending"


def utcnow() -> datetime:
    """The outbox's clock (tests replace it to step through backoff)."""
    return datetime.now(UTC)


class OutboxMixin:
    """Columns of a producer's ``outbox`` table; the producer declares the class."""

    #: The event id, chosen here by the producer; admin-django is idempotent on it.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    action: Mapped[str] = mapped_column(String(100))
    subject_type: Mapped[str] = mapped_column(String(50))
    subject_id: Mapped[str] = mapped_column(String(100))
    #: ``user``, ``staff`` or ``service``.
    actor_type: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str] = mapped_column(String(150))
    #: For a service actor: the staff member it acted for.
    acting_for: Mapped[str | None] = mapped_column(String(150), default=None)
    trace_id: Mapped[str | None] = mapped_column(String(32), default=None)
    #: The span that wrote the event: its delivery and recording join that trace.
    span_id: Mapped[str | None] = mapped_column(String(16), default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Index]:  # noqa: N805 - a class-level directive
        return (Index(PENDING_INDEX, "delivered_at", "next_attempt_at"),)


# --- the migrations: one function per applied revision, never edited --------------------------


def create_outbox() -> None:
    """Revision ``0002_outbox`` of both producers: the table, without ``span_id``."""
    from alembic import op  # only migrations pay for importing alembic

    op.create_table(
        TABLE,
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("subject_type", sa.String(50), nullable=False),
        sa.Column("subject_id", sa.String(100), nullable=False),
        sa.Column("actor_type", sa.String(20), nullable=False),
        sa.Column("actor_id", sa.String(150), nullable=False),
        sa.Column("acting_for", sa.String(150), nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_index(PENDING_INDEX, TABLE, ["delivered_at", "next_attempt_at"])


def drop_outbox() -> None:
    """Undoes :func:`create_outbox`."""
    from alembic import op

    op.drop_index(PENDING_INDEX, table_name=TABLE)
    op.drop_table(TABLE)


def add_span_id() -> None:
    """Revision ``0003_outbox_span``: the span that wrote each event."""
    from alembic import op

    with op.batch_alter_table(TABLE) as batch:
        batch.add_column(sa.Column("span_id", sa.String(16), nullable=True))


def drop_span_id() -> None:
    """Undoes :func:`add_span_id`."""
    from alembic import op

    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column("span_id")
