"""Account operations (writes and reads); routers stay thin and call these."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service_kit.outbox import Actor, outbox_values
from service_kit.problems import conflict, not_found
from service_kit.sqla import keyset_page, split_page
from users_fastapi.models import OutboxEvent, Role, User, normalize_email
from users_fastapi.security import Passwords


def _audit(session: AsyncSession, user: User, action: str, actor: Actor, **payload: object) -> None:
    """Queue an audit event in this transaction (delivered later by the outbox dispatcher)."""
    session.add(
        OutboxEvent(
            **outbox_values(
                action=action,
                subject_type="user",
                subject_id=str(user.id),
                actor=actor,
                payload={"email": user.email, **payload},
            )
        )
    )


async def user_register(
    session: AsyncSession,
    passwords: Passwords,
    *,
    email: str,
    password: str,
    full_name: str,
    role: Role = Role.MEMBER,
    actor: Actor | None = None,
) -> User:
    user = User(
        id=uuid.uuid4(),
        email=email,
        email_normalized=normalize_email(email),
        full_name=full_name,
        password_hash=await passwords.hash(password),
        role=role.value,
    )
    session.add(user)
    # Self-registration unless someone else (a seed, a service) registers the account.
    _audit(session, user, "user.registered", actor or Actor("user", str(user.id)), role=role.value)
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
    if not await passwords.verify(user.password_hash if user else None, password):
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
    query = select(User)
    if email:
        query = query.where(User.email_normalized == normalize_email(email))
    query = keyset_page(query, User.created_at, User.id, limit=limit, cursor=cursor)
    return split_page(list((await session.execute(query)).scalars()), limit)


async def user_set_active(
    session: AsyncSession, user_id: uuid.UUID, *, active: bool, actor: Actor
) -> User:
    user = await user_get(session, user_id)
    if user.is_active != active:
        user.is_active = active
        _audit(session, user, "user.reactivated" if active else "user.deactivated", actor)
        await session.commit()
    return user
