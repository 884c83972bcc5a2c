"""Support roles, as Django groups: who may look, who may act."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

READ_ONLY = "support-readonly"
ACTING = "support-acting"


def can_view(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(
        user.is_active
        and getattr(user, "is_staff", False)
        and (getattr(user, "is_superuser", False) or _in_groups(user, {READ_ONLY, ACTING}))
    )


def can_act(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(
        user.is_active
        and getattr(user, "is_staff", False)
        and (getattr(user, "is_superuser", False) or _in_groups(user, {ACTING}))
    )


def _in_groups(user: AbstractBaseUser | AnonymousUser, names: set[str]) -> bool:
    groups = getattr(user, "groups", None)
    return bool(groups is not None and groups.filter(name__in=names).exists())
