"""Tables owned by the users service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from service_kit.outbox import OutboxMixin
from service_kit.sqla import UTCDateTime
from users_fastapi.db import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


class Role(StrEnum):
    MEMBER = "member"
    STAFF = "staff"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (Index("ix_users_created_at_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    #: As the user typed it; ``email_normalized`` (lower-cased) carries uniqueness.
    email: Mapped[str] = mapped_column(String(320))
    email_normalized: Mapped[str] = mapped_column(String(320), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20), default=Role.MEMBER.value)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


def normalize_email(email: str) -> str:
    return email.strip().lower()


class OutboxEvent(OutboxMixin, Base):
    """Audit events, written in the same transaction as the change they describe."""

    __tablename__ = "outbox"
