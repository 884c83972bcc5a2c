"""Support roles: the groups ``migrate`` creates, who may look and act, and ``seed_staff``."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import AnonymousUser, Group, Permission
from django.core.management import call_command

from admin_django.support.apps import ensure_support_groups
from admin_django.support.roles import ACTING, READ_ONLY, can_act, can_view

pytestmark = pytest.mark.usefixtures("db")


def _group_permissions() -> dict[str, set[str]]:
    return {
        group.name: {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
        for group in Group.objects.prefetch_related("permissions__content_type")
    }


def test_migrate_created_both_groups_allowed_to_view_the_trail() -> None:
    # django_db_setup ran `migrate`: the groups come from its post_migrate signal.
    assert _group_permissions() == {
        READ_ONLY: {"audit.view_auditevent"},
        ACTING: {"audit.view_auditevent"},
    }


def test_ensuring_the_groups_again_changes_nothing() -> None:
    ensure_support_groups()
    ensure_support_groups()

    assert _group_permissions() == {
        READ_ONLY: {"audit.view_auditevent"},
        ACTING: {"audit.view_auditevent"},
    }


def test_the_groups_are_restored_if_deleted_and_migrate_runs_again() -> None:
    Group.objects.all().delete()

    call_command("migrate", interactive=False, verbosity=0)

    assert set(_group_permissions()) == {READ_ONLY, ACTING}
    assert Permission.objects.filter(codename="view_auditevent").count() == 1


@pytest.mark.parametrize(
    ("group", "is_superuser", "is_active", "view", "act"),
    [
        (None, False, True, False, False),
        (READ_ONLY, False, True, True, False),
        (ACTING, False, True, True, True),
        (ACTING, False, False, False, False),
        (None, True, True, True, True),
    ],
    ids=["no-group", "read-only", "acting", "acting-inactive", "superuser"],
)
def test_who_may_view_and_act(
    make_staff: Callable[..., Any],
    group: str | None,
    is_superuser: bool,
    is_active: bool,
    view: bool,
    act: bool,
) -> None:
    user = make_staff("sam", group=group)
    user.is_superuser = is_superuser
    user.is_active = is_active
    user.save()

    assert (can_view(user), can_act(user)) == (view, act)


def test_a_group_without_staff_status_grants_nothing(make_staff: Callable[..., Any]) -> None:
    user = make_staff("customer", group=ACTING, is_staff=False)

    assert (can_view(user), can_act(user)) == (False, False)
    assert (can_view(AnonymousUser()), can_act(AnonymousUser())) == (False, False)


def _seed(accounts_file: Path) -> str:
    err = io.StringIO()
    call_command("seed_staff", accounts_file=accounts_file, stderr=err)
    return err.getvalue()


def test_seed_staff_creates_the_accounts_once(
    tmp_path: Path, django_user_model: Any, password: str
) -> None:
    accounts = [
        {"username": "reader", "password": password, "group": READ_ONLY},
        {"username": "agent", "password": password, "group": ACTING},
    ]
    accounts_file = tmp_path / "staff.json"
    accounts_file.write_text(json.dumps(accounts), encoding="utf-8")

    first = _seed(accounts_file)
    # Changed in the file after seeding: an existing account is left alone.
    accounts[0]["password"] = "another password entirely"
    accounts_file.write_text(json.dumps(accounts), encoding="utf-8")
    second = _seed(accounts_file)

    assert "2 demo staff account(s) created" in first
    assert "0 demo staff account(s) created" in second
    assert django_user_model.objects.count() == 2
    for account in ("reader", "agent"):
        user = authenticate(username=account, password=password)
        assert user is not None
        assert user.is_staff
        assert not user.is_superuser
    assert [g.name for g in django_user_model.objects.get(username="agent").groups.all()] == [
        ACTING
    ]
    assert can_view(django_user_model.objects.get(username="reader"))
    assert not can_act(django_user_model.objects.get(username="reader"))


def test_seed_staff_makes_the_groups_it_needs(tmp_path: Path, password: str) -> None:
    Group.objects.all().delete()
    accounts_file = tmp_path / "staff.json"
    accounts_file.write_text(
        json.dumps([{"username": "agent", "password": password, "group": ACTING}]),
        encoding="utf-8",
    )

    assert "1 demo staff account(s) created" in _seed(accounts_file)
    assert set(_group_permissions()) == {READ_ONLY, ACTING}
