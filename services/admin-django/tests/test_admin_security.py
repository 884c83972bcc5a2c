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
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps([s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, "
    "s.DEBUG]))"
)


def _start(environment: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """A fresh process that starts Django (settings, logging, apps) for ``ADMIN_ENVIRONMENT``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADMIN_", "DJANGO_"))}
    env |= {
        "ADMIN_ENVIRONMENT": environment,
        "ADMIN_SECRET_KEY": secrets.token_urlsafe(48),
        "ADMIN_SERVICE_SECRET": secrets.token_urlsafe(24),
        "ADMIN_DATABASE_URL": "sqlite:///:memory:",
        "DJANGO_SETTINGS_MODULE": "admin_django.settings",
        **extra,
    }
    return subprocess.run(
        [sys.executable, "-c", _SETTINGS], env=env, capture_output=True, text=True, check=False
    )


def _cookie_settings(environment: str, **extra: str) -> tuple[list[bool], list[dict[str, Any]]]:
    """The cookie settings a fresh start derives, and the warnings it logs (JSON lines)."""
    result = _start(environment, **extra)
    assert result.returncode == 0, result.stderr[-2000:]
    values: list[bool] = json.loads(result.stdout.strip().splitlines()[-1])
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return values, [entry for entry in logged if entry.get("level") == "warning"]


@pytest.mark.parametrize(
    ("environment", "secure"), [("production", True), ("test", True), ("development", False)]
)
def test_cookies_are_secure_outside_development(environment: str, secure: bool) -> None:
    (session_secure, csrf_secure, http_only, debug), warnings = _cookie_settings(environment)
    assert (session_secure, csrf_secure) == (secure, secure)
    assert http_only is True
    assert debug is False
    assert warnings == []


@pytest.mark.parametrize(
    ("environment", "setting", "secure"),
    [
        ("production", "false", False),  # a plain-HTTP ingress on a developer's kind cluster
        ("test", "false", False),
        ("development", "true", True),
        ("production", "true", True),
    ],
)
def test_admin_secure_cookies_says_so_explicitly(
    environment: str, setting: str, secure: bool
) -> None:
    (session_secure, csrf_secure, http_only, _debug), _warnings = _cookie_settings(
        environment, ADMIN_SECURE_COOKIES=setting
    )
    assert (session_secure, csrf_secure) == (secure, secure)
    assert http_only is True  # never readable by scripts, Secure or not


def test_production_with_cookies_that_are_not_secure_warns_at_start() -> None:
    """Nothing is refused silently: production may run so (kind's plain-HTTP ingress), and says
    it in its log at every start; other environments and Secure cookies say nothing."""
    _values, warnings = _cookie_settings("production", ADMIN_SECURE_COOKIES="false")
    (warning,) = warnings
    assert warning["logger"] == "admin_django.support"
    assert warning["message"].startswith("ADMIN_SECURE_COOKIES=false in production: ")
    assert _cookie_settings("test", ADMIN_SECURE_COOKIES="false")[1] == []
    assert _cookie_settings("production", ADMIN_SECURE_COOKIES="true")[1] == []


def test_a_malformed_secure_cookies_setting_stops_the_start() -> None:
    result = _start("production", ADMIN_SECURE_COOKIES="sometimes")
    assert result.returncode != 0
    assert "secure_cookies" in result.stderr


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
