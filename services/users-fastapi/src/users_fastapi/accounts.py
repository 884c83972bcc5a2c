"""Account operations (writes and reads); routers stay thin and call these."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service_kit.problems import conflict, invalid_field, not_found
from users_fastapi.models import Role, User, normalize_email
from users_fastapi.security import Passwords


async def user_register(
    session: AsyncSession,
    passwords: Passwords,
    *,
    email: str,
    password: str,
    full_name: str,
    role: Role = Role.MEMBER,
) -> User:
    user = User(
        email=email,
        email_normalized=normalize_email(email),
        full_name=full_name,
        password_hash=passwords.hash(password),
        role=role.value,
    )
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise conflict("An account with this e-mail address already exists") from None
    return user


async def user_authenticate(
    session: AsyncSession, passwords: Passwords, *, email: str, password: str
) -> User | None:
    """The user if the password matches and the account is active, else ``None``."""
    user = await user_by_email(session, email)
    if not passwords.verify(user.password_hash if user else None, password):
        return None
    if user is None or not user.is_active:
        return None
    return user


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(
        select(User).where(User.email_normalized == normalize_email(email))
    )
    return result.scalar_one_or_none()


async def user_find(session: AsyncSession, subject: str) -> User | None:
    """The user a token's ``sub`` names, or ``None`` (also for a malformed subject)."""
    try:
        user_id = uuid.UUID(subject)
    except ValueError:
        return None
    return await session.get(User, user_id)


async def user_get(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise not_found("No such user")
    return user


async def user_list(
    session: AsyncSession, *, limit: int, cursor: str | None, email: str | None
) -> tuple[list[User], str | None]:
    """Keyset pagination over (created_at, id): stable under concurrent inserts."""
    query = select(User).order_by(User.created_at, User.id).limit(limit + 1)
    if email:
        query = query.where(User.email_normalized == normalize_email(email))
    if cursor:
        after_created, after_id = decode_cursor(cursor)
        query = query.where(
            or_(
                User.created_at > after_created,
                and_(User.created_at == after_created, User.id > after_id),
            )
        )
    users = list((await session.execute(query)).scalars())
    if len(users) <= limit:
        return users, None
    last = users[limit - 1]
    return users[:limit], encode_cursor(last.created_at, last.id)


async def user_set_active(session: AsyncSession, user_id: uuid.UUID, *, active: bool) -> User:
    user = await user_get(session, user_id)
    if user.is_active != active:
        user.is_active = active
        await session.commit()
    return user


def encode_cursor(created_at: datetime, user_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(user_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, user_id = json.loads(base64.urlsafe_b64decode(padded))
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is None:
            # Issued cursors always carry a zone; a naive one would fail in the query (500).
            raise ValueError("naive timestamp")
        return created_at, uuid.UUID(user_id)
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        raise invalid_field(
            "cursor", "The cursor is not one this service issued", location="query"
        ) from None
