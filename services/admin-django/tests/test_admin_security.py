"""The console's cookies and CSRF: Secure cookies outside development, CSRF enforced."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from admin_django.support.roles import ACTING

_SETTINGS = (
    "import json, admin_django.settings as s; print(json.dumps([s.SESSION_COOKIE_SECURE, "
    "s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.DEBUG]))"
)


def _cookie_settings(environment: str) -> list[bool]:
    """``admin_django.settings`` as a fresh process derives it for ``ADMIN_ENVIRONMENT``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADMIN_", "DJANGO_"))}
    env |= {
        "ADMIN_ENVIRONMENT": environment,
        "ADMIN_SECRET_KEY": secrets.token_urlsafe(48),
        "ADMIN_SERVICE_SECRET": secrets.token_urlsafe(24),
        "ADMIN_DATABASE_URL": "sqlite:///:memory:",
    }
    result = subprocess.run(
        [sys.executable, "-c", _SETTINGS], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    values: list[bool] = json.loads(result.stdout.strip().splitlines()[-1])
    return values


@pytest.mark.parametrize(
    ("environment", "secure"), [("production", True), ("test", True), ("development", False)]
)
def test_cookies_are_secure_outside_development(environment: str, secure: bool) -> None:
    session_secure, csrf_secure, http_only, debug = _cookie_settings(environment)
    assert (session_secure, csrf_secure) == (secure, secure)
    assert http_only is True
    assert debug is False


@pytest.mark.usefixtures("db")
def test_logging_in_sets_secure_http_only_cookies(
    make_staff: Callable[..., Any], password: str
) -> None:
    make_staff("ada", group=ACTING, with_password=True)
    client = Client(enforce_csrf_checks=True)
    page = client.get("/admin/login/")
    token = page.cookies["csrftoken"]
    assert token["secure"]
    response = client.post(
        "/admin/login/",
        {"username": "ada", "password": password, "csrfmiddlewaretoken": token.value},
    )
    assert response.status_code == 302, response.content[:300]
    session = response.cookies["sessionid"]
    assert session["secure"]
    assert session["httponly"]
    assert session["samesite"] == "Lax"


@pytest.mark.usefixtures("db")
def test_a_log_in_without_the_csrf_token_is_refused(
    make_staff: Callable[..., Any], password: str
) -> None:
    make_staff("ada", group=ACTING, with_password=True)
    client = Client(enforce_csrf_checks=True)
    client.get("/admin/login/")
    response = client.post("/admin/login/", {"username": "ada", "password": password})
    assert response.status_code == 403
    assert "sessionid" not in response.cookies


@pytest.mark.usefixtures("db")
def test_a_staff_action_without_the_csrf_token_is_refused(
    make_staff: Callable[..., Any], peers: Any
) -> None:
    user = peers.add_user("carol@example.com")
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_staff("sam", group=ACTING))
    page = client.get(f"/admin/support/users/{user['id']}/")
    assert page.status_code == 200
    refused = client.post(f"/admin/support/users/{user['id']}/", {"action": "deactivate"})
    assert refused.status_code == 403
    assert peers.sent("POST", f"/api/users/{user['id']}/deactivate") == []
    allowed = client.post(
        f"/admin/support/users/{user['id']}/",
        {"action": "deactivate", "csrfmiddlewaretoken": client.cookies["csrftoken"].value},
    )
    assert allowed.status_code == 302
    assert len(peers.sent("POST", f"/api/users/{user['id']}/deactivate")) == 1
