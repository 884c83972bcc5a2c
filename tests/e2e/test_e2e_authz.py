"""The authorization matrix (``authz_matrix.yaml``) driven through the ingress, cell by cell.

Each rule of the matrix is one test: every principal makes the rule's request through
Traefik and must get the status the matrix names; a mutating rule's effect (an order's
status, a user's active flag) must change exactly for the principals that were allowed;
a 200 marked ``own`` must hold only the caller's own data; every answer carries the
security headers, and every ``/api/`` error is problem+json. The matrix cannot go stale:
a route in a service's URL table or OpenAPI document that no rule covers fails the run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from polyframe_dev.routes import load_routes
from service_kit.credentials import ACTING_FOR_HEADER
from service_kit.headers import missing as missing_security_headers

pytestmark = pytest.mark.e2e

MATRIX_FILE = Path(__file__).with_name("authz_matrix.yaml")
MATRIX: dict[str, Any] = yaml.safe_load(MATRIX_FILE.read_text())
PRINCIPALS: list[str] = MATRIX["principals"]
RULES: list[dict[str, Any]] = MATRIX["rules"]
SERVICES = ("users-fastapi", "legacy-flask", "admin-django")
USER_PRINCIPALS = ("user-a", "user-b", "staff-user")
STAFF_GROUPS = ("support-readonly", "support-acting")
LOGIN_PATH = "/admin/login/"
#: Django primary keys the admin's object URLs need: the first audit event recorded and the
#: first staff member seeded (a missing object would answer a redirect, not the rule's status).
AUDIT_PK = "1"
STAFF_PK = "1"
ORDER = {"currency": "EUR", "items": [{"sku": "MATRIX-1", "quantity": 1, "unit_price_cents": 100}]}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def _rule_id(index: int, rule: dict[str, Any]) -> str:
    return f"{index:02d} {rule['request']}"


def expected(rule: dict[str, Any], principal: str) -> int | str:
    answer: int | str = rule["expect"].get(principal, rule["expect"]["others"])
    return answer


def _allowed(answer: int | str) -> bool:
    return isinstance(answer, int) and (200 <= answer < 300 or answer == 302)


# -- principals and the objects the rules act on ----------------------------------------------


@dataclass
class Principal:
    name: str
    client: httpx.Client
    headers: dict[str, str] = field(default_factory=dict)
    #: The users-service id of a user principal.
    user_id: str | None = None
    #: A Django session principal: how to make a fresh one (its session ends by logging out).
    relogin: Callable[[], httpx.Client] | None = None

    def csrf_token(self) -> str:
        """The CSRF token of this client (Django sets its cookie on the log-in page)."""
        if "csrftoken" not in self.client.cookies:
            self.client.get(LOGIN_PATH)
        token = self.client.cookies.get("csrftoken")
        assert token, f"{self.name}: admin-django set no csrftoken cookie"
        return token


def secure_cookies_over_http(base_url: str, response: httpx.Response) -> str:
    """Why a cookie jar would never send the console's cookies back over ``base_url``, or ''."""
    if not base_url.startswith("http://"):
        return ""
    secure = sorted(
        header.split("=", 1)[0]
        for header in response.headers.get_list("set-cookie")
        if "; secure" in header.lower()
    )
    if not secure:
        return ""
    return (
        f"admin-django marks its cookies {secure} Secure, but the ingress is plain HTTP "
        f"({base_url}): a browser or cookie jar never sends a Secure cookie back over http://, so "
        "every staff log-in answers 403 (CSRF cookie not set). Behind a plain-HTTP ingress the "
        "release needs admin-django.secureCookies: false (as deploy/kind/values.yaml sets); "
        "anywhere else, serve the console over TLS"
    )


def django_login(base_url: str, username: str, password: str) -> httpx.Client:
    """A client holding a Django admin session, logged in through the real form (with CSRF)."""
    client = httpx.Client(base_url=base_url, timeout=15, follow_redirects=False)
    try:
        page = client.get(LOGIN_PATH)
        assert page.status_code == 200, page.text[:300]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, "the log-in form has no CSRF token"
        response = client.post(
            LOGIN_PATH,
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": token.group(1),
                "next": "/admin/",
            },
        )
        assert response.status_code == 302, secure_cookies_over_http(base_url, page) or (
            username,
            response.status_code,
            response.text[:300],
        )
        assert response.headers["location"] == "/admin/", response.headers
    except BaseException:
        client.close()
        raise
    return client


@dataclass
class World:
    """The session's principals and shared objects; ``make(name)`` makes fresh ones."""

    platform: Any
    principals: dict[str, Principal]
    values: dict[str, str]
    acting_staff: str

    def principal(self, name: str) -> Principal:
        return self.principals[name]

    def _client(self) -> httpx.Client:
        return self.principals["anonymous"].client

    def _member(self) -> str:
        email = f"e2e-authz-{uuid.uuid4().hex}@example.com"
        response = self._client().post(
            "/api/users/register",
            json={"email": email, "password": f"pw-{uuid.uuid4().hex}", "full_name": "Victim"},
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def set_active(self, user_id: str, active: bool) -> None:
        acting = self.principal("admin-django-acting")
        action = "reactivate" if active else "deactivate"
        response = acting.client.post(f"/api/users/{user_id}/{action}", headers=acting.headers)
        assert response.status_code == 200, response.text

    def order_of(self, principal: str) -> str:
        caller = self.principal(principal)
        response = caller.client.post(
            "/api/orders",
            json=ORDER,
            headers={**caller.headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def make(self, name: str) -> str:
        if name == "victim":
            return self._member()
        if name == "inactive_victim":
            user_id = self._member()
            self.set_active(user_id, False)
            return user_id
        if name == "order_a":
            return self.order_of("user-a")
        if name == "email":
            return f"e2e-authz-{uuid.uuid4().hex}@example.com"
        if name == "event_id":
            return str(uuid.uuid4())
        raise AssertionError(f"the matrix asks for a fresh {name!r}, which the test cannot make")

    def state(self, effect: str, values: dict[str, str]) -> Any:
        """What ``effect`` (``order_a.status``, ``victim.is_active`` …) reads now."""
        name, _, attribute = effect.partition(".")
        if name.startswith("order"):
            reader = self.principal("admin-django-acting")
            response = reader.client.get(f"/api/orders/{values[name]}", headers=reader.headers)
        else:
            reader = self.principal("legacy-flask")
            response = reader.client.get(f"/api/users/{values[name]}", headers=reader.headers)
        assert response.status_code == 200, response.text
        return response.json()[attribute]


@pytest.fixture(scope="module")
def world(
    platform: Any,
    register: Any,
    log_in: Any,
    service_headers: Any,
    staff_account: Any,
) -> Iterator[World]:
    clients: list[httpx.Client] = []

    def new_client() -> httpx.Client:
        clients.append(httpx.Client(base_url=platform.base_url, timeout=15, follow_redirects=False))
        return clients[-1]

    principals: dict[str, Principal] = {"anonymous": Principal("anonymous", new_client())}
    values: dict[str, str] = {}
    for name in ("user-a", "user-b"):
        client = new_client()
        account = register(client)
        token = log_in(client, account.email, account.password)
        principals[name] = Principal(
            name, client, {"Authorization": f"Bearer {token}"}, user_id=account.user["id"]
        )
        if name == "user-a":
            values["user_a_email"], values["user_a_password"] = account.email, account.password
    if platform.ready is not None:
        demo = json.loads(Path(platform.ready["demo_accounts_file"]).read_text())
        staff = next(entry for entry in demo if entry["role"] == "staff")
        client = new_client()
        token = log_in(client, staff["email"], staff["password"])
        me = client.get("/api/users/me", headers={"Authorization": f"Bearer {token}"}).json()
        principals["staff-user"] = Principal(
            "staff-user", client, {"Authorization": f"Bearer {token}"}, user_id=me["id"]
        )
    for group in STAFF_GROUPS:
        username, password = staff_account(group)

        def relogin(username: str = username, password: str = password) -> httpx.Client:
            clients.append(django_login(platform.base_url, username, password))
            return clients[-1]

        principals[group] = Principal(group, relogin(), relogin=relogin)
    acting_staff = staff_account("support-acting")[0]
    for service in SERVICES:
        principals[service] = Principal(service, new_client(), service_headers(service))
    principals["admin-django-acting"] = Principal(
        "admin-django-acting", new_client(), service_headers("admin-django", acting_staff)
    )
    assert principals["admin-django-acting"].headers[ACTING_FOR_HEADER] == acting_staff
    values["user_a"] = str(principals["user-a"].user_id)
    values["user_b"] = str(principals["user-b"].user_id)
    result = World(platform, principals, values, acting_staff)
    values["order_a"] = result.order_of("user-a")
    values["order_b"] = result.order_of("user-b")
    values["audit_pk"], values["staff_pk"] = AUDIT_PK, STAFF_PK
    values["acting_staff"] = acting_staff
    try:
        yield result
    finally:
        for client in clients:
            client.close()


# -- one request --------------------------------------------------------------------------------


def _fill(template: Any, values: dict[str, str]) -> Any:
    if isinstance(template, str):
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    if isinstance(template, dict):
        return {key: _fill(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [_fill(value, values) for value in template]
    return template


def _send(
    principal: Principal, rule: dict[str, Any], values: dict[str, str], client: httpx.Client
) -> httpx.Response:
    method, _, path = _fill(rule["request"], values).partition(" ")
    headers = dict(principal.headers)
    if "form" in rule:
        form = {**_fill(rule["form"], values), "csrfmiddlewaretoken": principal.csrf_token()}
        return client.request(method, path, data=form, headers=headers)
    if "json" in rule:
        return client.request(method, path, json=_fill(rule["json"], values), headers=headers)
    return client.request(method, path, headers=headers)


def _outcome(response: httpx.Response) -> int | str:
    location = response.headers.get("location", "")
    if response.status_code == 302 and location.startswith(LOGIN_PATH):
        return "login"
    return response.status_code


def _checks(principal: Principal, rule: dict[str, Any], response: httpx.Response) -> list[str]:
    """What else a cell's answer must satisfy, whatever its status."""
    problems: list[str] = []
    absent = missing_security_headers(response.headers.get("content-type"), response.headers)
    if absent:
        problems.append(f"security headers missing: {sorted(absent)}")
    path = response.request.url.path
    if path.startswith("/api/") and response.status_code >= 400:
        media = response.headers.get("content-type", "").split(";")[0]
        if media != "application/problem+json":
            problems.append(f"error answered as {media!r}, not problem+json")
        elif response.json().get("status") != response.status_code:
            problems.append(f"problem status {response.json().get('status')}")
    if rule.get("own") and response.status_code == 200:
        body = response.json()
        whose = response.request.url.params.get("user_id") or principal.user_id
        found = {str(item["user_id"]) for item in body["items"]} if "items" in body else set()
        if "items" not in body:
            found = {str(body["id"])}
        if not whose or found - {whose}:
            problems.append(f"data of others in the answer: {sorted(found - {str(whose)})}")
    return problems


def _cell(world: World, principal: Principal, rule: dict[str, Any]) -> tuple[int | str, list[str]]:
    """Run one cell; return what it answered and what else was wrong with it."""
    values = dict(world.values)
    values["caller_service"] = principal.name if principal.name in SERVICES else "users-fastapi"
    client = principal.client
    fresh = rule.get("fresh", [])
    for name in fresh:
        if name != "session":
            values[name] = world.make(name)
    if "session" in fresh and principal.relogin is not None:
        client = principal.relogin()
        principal = Principal(principal.name, client, principal.headers, principal.user_id)
    effect = rule.get("effect")
    before = world.state(effect, values) if effect else None
    response = _send(principal, rule, values, client)
    answer = _outcome(response)
    problems = _checks(principal, rule, response)
    if effect:
        after = world.state(effect, values)
        if _allowed(answer) and after == before:
            problems.append(f"allowed, but {effect} stayed {before!r}")
        if not _allowed(answer) and after != before:
            problems.append(f"refused, yet {effect} went from {before!r} to {after!r}")
    return answer, problems


@pytest.mark.parametrize(
    "rule", RULES, ids=[_rule_id(index, rule) for index, rule in enumerate(RULES)]
)
def test_matrix_rule(
    world: World, rule: dict[str, Any], report_measurement: Callable[[str, str], None]
) -> None:
    failures: list[str] = []
    ran = 0
    for name in PRINCIPALS:
        if name not in world.principals:
            continue  # staff-user only on the local platform (its demo account)
        want = expected(rule, name)
        got, problems = _cell(world, world.principal(name), rule)
        ran += 1
        if got != want:
            failures.append(f"{name}: expected {want}, got {got}")
        failures.extend(f"{name}: {problem}" for problem in problems)
    assert ran >= len(PRINCIPALS) - 1
    assert not failures, f"{rule['request']}:\n  " + "\n  ".join(failures)


def test_the_matrix_is_well_formed(report_measurement: Callable[[str, str], None]) -> None:
    """Every rule names known principals and answers, and a default for the others."""
    answers = {200, 201, 302, 401, 403, 404, 405, 422, "login"}
    for index, rule in enumerate(RULES):
        where = _rule_id(index, rule)
        assert "others" in rule["expect"], where
        assert set(rule["expect"]) - {"others"} <= set(PRINCIPALS), where
        assert set(rule["expect"].values()) <= answers, where
        assert rule["request"].split(" ")[0] in {"GET", "POST", "PUT", "PATCH", "DELETE"}, where
        if rule.get("effect"):
            assert rule["effect"].split(".")[0] in rule.get("fresh", []), where
    routes = {rule["route"] for rule in RULES if rule["route"]}
    report_measurement(
        "authorization matrix",
        f"{len(RULES)} rules over {len(routes)} routes x {len(PRINCIPALS)} principals "
        f"= {len(RULES) * len(PRINCIPALS)} cells",
    )


# -- the matrix covers every route --------------------------------------------------------------

_URL_TABLE = r"""
import json, os, sys
service = sys.argv[1]
routes = []
if service == "users-fastapi":
    from users_fastapi.main import create_app
    from users_fastapi.settings import UsersSettings

    def walk(items):
        for route in items:
            if hasattr(route, "effective_route_contexts"):
                for context in route.effective_route_contexts():
                    yield context.path, context.methods
            elif hasattr(route, "routes"):
                yield from walk(route.routes)
            elif hasattr(route, "path"):
                yield route.path, getattr(route, "methods", None)

    app = create_app(UsersSettings(environment="development"))
    for path, methods in walk(app.routes):
        for method in sorted(set(methods or {"GET"}) - {"HEAD", "OPTIONS"}):
            routes.append(f"{method} {path}")
elif service == "legacy-flask":
    from legacy_flask.app import create_app
    from legacy_flask.settings import OrdersSettings

    app = create_app(OrdersSettings(environment="development"))
    for rule in app.url_map.iter_rules():
        for method in sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"}):
            routes.append(f"{method} {rule.rule}")
else:
    import django

    django.setup()
    from django.urls import URLResolver, get_resolver

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern)

    routes = sorted(set(walk(get_resolver().url_patterns)))
print("URL-TABLE " + json.dumps(routes))
"""


def _url_table(service: str) -> list[str]:
    """The routes ``service`` serves, from its own URL table (a fresh interpreter per service)."""
    env = {
        **os.environ,
        "USERS_ENVIRONMENT": "development",
        "ORDERS_ENVIRONMENT": "development",
        "ADMIN_ENVIRONMENT": "development",
        "DJANGO_SETTINGS_MODULE": "admin_django.settings",
        # Nothing is opened, but Django's settings would make the default SQLite file's folder.
        "ADMIN_DATABASE_URL": "sqlite:///:memory:",
    }
    for name in ("USERS_DRILLS", "ORDERS_DRILLS", "ADMIN_DRILLS"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", _URL_TABLE, service],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("URL-TABLE "))
    routes: list[str] = json.loads(line.removeprefix("URL-TABLE "))
    return routes


def _public(service: str, route: str) -> bool:
    """Reachable through the ingress: under one of the service's routed prefixes."""
    path = route.split(" ", 1)[1] if " " in route else "/" + route
    prefixes = [r.prefix for r in load_routes() if r.service == service]
    return any(path == p or path.startswith(f"{p}/") for p in prefixes)


@pytest.mark.parametrize("service", SERVICES)
def test_every_public_route_is_in_the_matrix(service: str) -> None:
    package = service.replace("-", "_")
    if importlib.util.find_spec(package) is None:
        pytest.skip(
            f"{package} is not installed here (the e2e image carries the suite, not the "
            "services): the suite's run from a checkout compares the URL tables"
        )
    table = _url_table(service)
    public = {route for route in table if _public(service, route)}
    assert public, f"no public route found in {service}'s URL table: {table}"
    covered = {
        rule["route"].removeprefix(f"{service} ")
        for rule in RULES
        if rule["route"] and rule["route"].startswith(f"{service} ")
    }
    missing = sorted(public - covered)
    assert not missing, (
        f"{service} serves routes the authorization matrix does not cover; add rules for them "
        f"to {MATRIX_FILE.name}: {missing}"
    )
    stale = sorted(covered - set(table))
    assert not stale, f"{MATRIX_FILE.name} names routes {service} no longer has: {stale}"


@pytest.mark.parametrize(
    ("service", "document"),
    [
        ("users-fastapi", "/api/users/openapi.json"),
        ("legacy-flask", "/api/orders/openapi.json"),
        ("admin-django", "/api/audit/openapi.json"),
    ],
)
def test_every_documented_operation_is_in_the_matrix(
    client: httpx.Client, service: str, document: str
) -> None:
    """The OpenAPI document the ingress serves, checked against the matrix as well."""
    response = client.get(document)
    assert response.status_code == 200, response.text[:300]
    operations = {
        f"{method.upper()} {path}"
        for path, item in response.json()["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert operations
    covered = {_operation(rule) for rule in RULES if rule["route"]}
    missing = sorted(op for op in operations if _openapi_form(op) not in covered)
    assert not missing, f"{service} documents operations the matrix does not cover: {missing}"


def _operation(rule: dict[str, Any]) -> str:
    """``METHOD /path`` of the route a rule covers (Django's patterns: the rule's method)."""
    route = rule["route"].split(" ", 1)[1]
    if " " not in route:
        route = f"{rule['request'].split(' ')[0]} /{route}"
    return _openapi_form(route)


def _openapi_form(route: str) -> str:
    """``GET /api/orders/<uuid:order_id>`` and ``GET /api/orders/{order_id}`` compare equal."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", route)


# -- CSRF and the console's cookies -----------------------------------------------------------


def test_a_console_action_without_its_csrf_token_is_refused(world: World, problem: Any) -> None:
    """A real POST from an acting staff member's session, without the token: 403, no effect."""
    acting = world.principal("support-acting")
    victim = world.make("victim")
    for extra in ({}, {"csrfmiddlewaretoken": "x" * 64}):
        response = acting.client.post(
            f"/admin/support/users/{victim}/", data={"action": "deactivate", **extra}
        )
        assert response.status_code == 403, (extra, response.status_code, response.text[:300])
        assert "CSRF" in response.text
        assert world.state("victim.is_active", {"victim": victim}) is True
    # The same request with the token goes through: the refusals above were about CSRF.
    response = acting.client.post(
        f"/admin/support/users/{victim}/",
        data={"action": "deactivate", "csrfmiddlewaretoken": acting.csrf_token()},
    )
    assert response.status_code == 302, response.text[:300]
    assert world.state("victim.is_active", {"victim": victim}) is False


def test_a_cross_site_post_is_refused_even_with_a_token(world: World) -> None:
    """An Origin that is not the console's own is refused (CSRF_TRUSTED_ORIGINS)."""
    acting = world.principal("support-acting")
    victim = world.make("victim")
    response = acting.client.post(
        f"/admin/support/users/{victim}/",
        data={"action": "deactivate", "csrfmiddlewaretoken": acting.csrf_token()},
        headers={"Origin": "http://evil.example"},
    )
    assert response.status_code == 403, response.text[:300]
    assert world.state("victim.is_active", {"victim": victim}) is True


def test_the_console_cookies_come_back_over_the_ingress(platform: Any) -> None:
    """A cookie the console sets must be one the client sends back over the ingress's scheme:
    a Secure cookie behind a plain-HTTP ingress breaks every staff log-in (CSRF)."""
    with httpx.Client(base_url=platform.base_url, timeout=15) as client:
        page = client.get(LOGIN_PATH)
    assert page.status_code == 200, page.text[:300]
    assert page.headers.get_list("set-cookie"), "the log-in page set no cookie (CSRF)"
    problem = secure_cookies_over_http(platform.base_url, page)
    assert not problem, problem


def test_the_session_cookie_is_http_only_and_same_site(platform: Any, staff_account: Any) -> None:
    username, password = staff_account("support-readonly")
    client = httpx.Client(base_url=platform.base_url, timeout=15, follow_redirects=False)
    with client:
        page = client.get(LOGIN_PATH)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token
        response = client.post(
            LOGIN_PATH,
            data={"username": username, "password": password, "csrfmiddlewaretoken": token[1]},
        )
        assert response.status_code == 302
        cookies = {
            header.split("=", 1)[0]: header.lower()
            for header in response.headers.get_list("set-cookie")
        }
    assert "sessionid" in cookies, cookies
    assert "httponly" in cookies["sessionid"]
    assert "samesite=lax" in cookies["sessionid"]
    # make up runs admin-django in development over plain HTTP, without Secure; the Secure
    # flag outside development is checked in services/admin-django/tests.
