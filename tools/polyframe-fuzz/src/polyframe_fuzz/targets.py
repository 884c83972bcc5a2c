"""The three services, each built from its real factory and settings on a fresh, migrated
SQLite database, with its routes and the credentials a real caller would present.

:func:`start` imports a service's code (the caller wraps it in ``atheris.instrument_imports``
when coverage is wanted) and returns a :class:`Target` whose ``call`` sends one
:class:`~polyframe_fuzz.inputs.FuzzRequest` through the app exactly as the production server
would hand it over (ASGI for users-fastapi on one long-lived event loop, WSGI for the other
two) and returns the status. Nothing here listens on a socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyframe_fuzz.inputs import Credentials, FuzzRequest, Route, asgi_scope, wsgi_environ

#: Where the services' peers would be: nothing listens there (connections are refused at
#: once), so a call to a peer fails the way an outage does.
NOWHERE = "http://127.0.0.1:9"
SERVICES = ("users-fastapi", "legacy-flask", "admin-django")
#: The packages instrumented for coverage: the kit, the service, and the framework's request
#: parsing (its HTTP layer, routing and validation), per service.
INSTRUMENTED: dict[str, tuple[str, ...]] = {
    "users-fastapi": ("service_kit", "users_fastapi", "fastapi", "starlette"),
    "legacy-flask": ("service_kit", "legacy_flask", "flask", "flask_openapi3", "werkzeug"),
    "admin-django": ("service_kit", "admin_django", "django"),
}


@dataclass
class Target:
    name: str
    routes: list[Route]
    credentials: Credentials
    call: Callable[[FuzzRequest], int]
    close: Callable[[], None] = field(default=lambda: None)


def start(service: str, scratch: Path) -> Target:
    """Build ``service`` on a fresh database under ``scratch`` (imports its code here)."""
    if service == "users-fastapi":
        return _users(scratch)
    if service == "legacy-flask":
        return _orders(scratch)
    if service == "admin-django":
        return _admin(scratch)
    raise ValueError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")


# -- users-fastapi (ASGI) --------------------------------------------------------------------


def _users(scratch: Path) -> Target:
    from asgi_lifespan import LifespanManager

    from polyframe_testing.peers import as_service, generate_private_key, private_pem
    from users_fastapi import accounts
    from users_fastapi.cli import migrate
    from users_fastapi.main import create_app
    from users_fastapi.models import Role
    from users_fastapi.settings import UsersSettings

    trusted = {"admin-django": secrets.token_urlsafe(24), "legacy-flask": secrets.token_urlsafe(24)}
    settings = UsersSettings(
        environment="test",
        database_url=f"sqlite+aiosqlite:///{scratch / 'users.db'}",
        jwt_private_key=private_pem(generate_private_key()),
        trusted_services=trusted,
        admin_url=NOWHERE,
        log_level="ERROR",  # the checker reads error-level records; the rest is noise
        argon2_time_cost=1,
        argon2_memory_cost_kib=32,
        # The fuzzer is one client sending thousands of log-ins: limits that high are
        # still limits (reached by some inputs), yet leave the handlers reachable.
        login_limit_per_ip=1_000_000,
        register_limit_per_ip=1_000_000,
    )
    migrate(settings)  # before the loop: alembic's env.py runs its own asyncio.run
    app = create_app(settings)
    loop = asyncio.new_event_loop()

    async def lifespan() -> LifespanManager:
        manager = LifespanManager(app)  # it detects the event loop it is made in
        await manager.__aenter__()
        return manager

    manager = loop.run_until_complete(lifespan())
    state = app.state.users
    password = secrets.token_urlsafe(16)

    async def account(email: str, role: Role) -> str:
        async with state.sessions() as session:
            user = await accounts.user_register(
                session,
                state.passwords,
                email=email,
                password=password,
                full_name="Fuzz",
                role=role,
            )
            return str(user.id)

    member_id = loop.run_until_complete(account("member@example.com", Role.MEMBER))
    staff_id = loop.run_until_complete(account("staff@example.com", Role.STAFF))

    async def send(request: FuzzRequest) -> int:
        body = request.body
        sent_body = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # the client stays connected
            return {"type": "http.disconnect"}

        async def respond(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])

        await manager.app(asgi_scope(request), receive, respond)
        return status

    def call(request: FuzzRequest) -> int:
        return loop.run_until_complete(send(request))

    def login(email: str) -> str:
        payload = json.dumps({"email": email, "password": password}).encode()
        token: dict[str, str] = {}

        async def go() -> None:
            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": payload, "more_body": False}

            chunks: list[bytes] = []

            async def respond(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.body":
                    chunks.append(message.get("body", b""))

            scope = asgi_scope(
                FuzzRequest(
                    "POST",
                    b"/api/users/login",
                    b"",
                    [(b"host", b"localhost"), (b"content-type", b"application/json")],
                    payload,
                )
            )
            await manager.app(scope, receive, respond)
            token.update(json.loads(b"".join(chunks)))

        loop.run_until_complete(go())
        return f"Bearer {token['access_token']}"

    credentials = Credentials(
        authorizations=[
            login("member@example.com"),
            login("staff@example.com"),
            as_service("admin-django", trusted["admin-django"], "staff@example.com")[
                "Authorization"
            ],
            as_service("legacy-flask", trusted["legacy-flask"])["Authorization"],
        ],
        known_ids=[member_id, staff_id],
    )
    prefix = "/api/users"
    user = {"email": "x@example.com", "password": "correct horse battery", "full_name": "X"}
    routes = [
        Route("POST", f"{prefix}/register", tuple(user), user),
        Route("POST", f"{prefix}/login", ("email", "password"), user),
        Route("GET", f"{prefix}/.well-known/jwks.json"),
        Route("GET", f"{prefix}/me"),
        Route("GET", prefix, ("limit", "cursor", "email")),
        Route("GET", f"{prefix}/{{user_id}}"),
        Route("POST", f"{prefix}/{{user_id}}/deactivate"),
        Route("POST", f"{prefix}/{{user_id}}/reactivate"),
        Route("GET", f"{prefix}/openapi.json"),
        Route("GET", "/readyz"),
    ]

    def close() -> None:
        loop.run_until_complete(manager.__aexit__(None, None, None))
        loop.close()

    return Target("users-fastapi", routes, credentials, call, close)


# -- WSGI ------------------------------------------------------------------------------------


def _wsgi_caller(app: Callable[..., Iterable[bytes]]) -> Callable[[FuzzRequest], int]:
    """Call a WSGI app as gunicorn does: start_response, then the whole body read and the
    iterable closed."""

    def call(request: FuzzRequest) -> int:
        status: list[int] = []

        def start_response(line: str, headers: Any, exc_info: Any = None) -> Callable[..., None]:
            status[:] = [int(line.split(" ", 1)[0])]
            return lambda chunk: None

        result = app(wsgi_environ(request), start_response)
        try:
            for _chunk in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return status[0] if status else 0

    return call


# -- legacy-flask ----------------------------------------------------------------------------


def _orders(scratch: Path) -> Target:
    import httpx

    from legacy_flask import extensions
    from legacy_flask.app import create_app
    from legacy_flask.cli import migrate
    from legacy_flask.settings import OrdersSettings
    from legacy_flask.users import JWKS_PATH
    from polyframe_testing.peers import as_service, generate_private_key
    from service_kit.client import ClientConfig, ServiceClient
    from service_kit.tokens import key_id, public_jwk, sign_access_token

    service_secret = secrets.token_urlsafe(24)
    trusted = {
        "admin-django": secrets.token_urlsafe(24),
        "users-fastapi": secrets.token_urlsafe(24),
    }
    settings = OrdersSettings(
        environment="test",
        database_url=f"sqlite:///{scratch / 'orders.db'}",
        service_secret=service_secret,
        trusted_services=trusted,
        users_url="http://users.fuzz",
        admin_url=NOWHERE,
        log_level="ERROR",  # the checker reads error-level records; the rest is noise
    )
    migrate(settings)
    app = create_app(settings)

    # The users service, answered in process: its JWKS (of a key minted here) and "is this
    # user active?" (yes for the users minted here, 404 for any other id).
    signing_key = generate_private_key()
    kid = key_id(signing_key.public_key())
    jwks = {"keys": [public_jwk(signing_key.public_key(), kid=kid)]}
    users = {str(uuid.uuid4()): "member", str(uuid.uuid4()): "staff"}

    def users_service(request: httpx.Request) -> httpx.Response:
        if request.url.path == JWKS_PATH:
            return httpx.Response(200, json=jwks)
        user_id = request.url.path.rsplit("/", 1)[-1]
        if user_id in users:
            return httpx.Response(200, json={"id": user_id, "is_active": True})
        return httpx.Response(404, json={"title": "No such user", "status": 404})

    app.extensions["polyframe.users"].client.close()
    extensions.users.init_app(
        app,
        client=ServiceClient(
            ClientConfig(
                peer="users-fastapi",
                base_url="http://users.fuzz",
                caller="legacy-flask",
                secret=service_secret,
                timeout_seconds=2.0,
                max_attempts=1,
            ),
            transport=httpx.MockTransport(users_service),
        ),
    )
    now = int(time.time())

    def token(subject: str, role: str) -> str:
        claims = {
            "iss": "polyframe-users",
            "aud": "polyframe",
            "sub": subject,
            "role": role,
            "iat": now - 10,
            "nbf": now - 10,
            "exp": now + 7 * 86_400,
        }
        return f"Bearer {sign_access_token(signing_key, kid, claims)}"

    call = _wsgi_caller(app.wsgi_app)
    order = {
        "currency": "EUR",
        "items": [{"sku": "BOOK-42", "quantity": 2, "unit_price_cents": 1250}],
    }
    member = next(user_id for user_id, role in users.items() if role == "member")
    known = []
    client = app.test_client()
    for _ in range(2):  # orders that exist, so reads, cancels and refunds find one
        placed = client.post(
            "/api/orders", json=order, headers={"Authorization": token(member, "member")}
        )
        assert placed.status_code == 201, placed.get_data(as_text=True)
        known.append(placed.get_json()["id"])
    credentials = Credentials(
        authorizations=[
            *(token(user_id, role) for user_id, role in users.items()),
            as_service("admin-django", trusted["admin-django"], "staff@example.com")[
                "Authorization"
            ],
            as_service("users-fastapi", trusted["users-fastapi"])["Authorization"],
        ],
        known_ids=known,
    )
    prefix = "/api/orders"
    routes = [
        Route("POST", prefix, ("currency", "items", "sku", "quantity", "unit_price_cents"), order),
        Route("GET", prefix, ("limit", "cursor", "user_id", "status")),
        Route("GET", f"{prefix}/{{order_id}}"),
        Route("POST", f"{prefix}/{{order_id}}/cancel"),
        Route("POST", f"{prefix}/{{order_id}}/refund", ("reason",), {"reason": "damaged box"}),
        Route("GET", f"{prefix}/openapi.json"),
        Route("GET", "/readyz"),
    ]
    return Target("legacy-flask", routes, credentials, call)


# -- admin-django ----------------------------------------------------------------------------


def _admin(scratch: Path) -> Target:
    trusted = {
        name: secrets.token_urlsafe(24)
        for name in ("users-fastapi", "legacy-flask", "admin-django")
    }
    (scratch / "static").mkdir(exist_ok=True)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "admin_django.settings",
            "ADMIN_ENVIRONMENT": "test",
            "ADMIN_SECRET_KEY": secrets.token_urlsafe(48),
            "ADMIN_SERVICE_SECRET": secrets.token_urlsafe(24),
            "ADMIN_TRUSTED_SERVICES": json.dumps(trusted),
            "ADMIN_DATABASE_URL": f"sqlite:///{scratch / 'admin.db'}",
            "ADMIN_STATIC_ROOT": str(scratch / "static"),
            "ADMIN_USERS_URL": NOWHERE,
            "ADMIN_ORDERS_URL": NOWHERE,
            "ADMIN_LOG_LEVEL": "ERROR",
        }
    )
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from django.test import Client

    from polyframe_testing.peers import as_service

    call_command("migrate", interactive=False, verbosity=0)
    cookies = []
    for group in Group.objects.all():  # one staff member per support group, logged in
        staff = User.objects.create_user(username=f"staff-{group.pk}", is_staff=True)
        staff.groups.add(group)
        client = Client()
        client.force_login(staff)
        cookies.append(f"sessionid={client.cookies['sessionid'].value}")
    credentials = Credentials(
        authorizations=[
            as_service(name, secret)["Authorization"] for name, secret in trusted.items()
        ],
        cookies=cookies,
        known_ids=[str(uuid.uuid4())],
    )
    event = {
        "id": str(uuid.uuid4()),
        "occurred_at": "2025-03-01T12:00:00+00:00",
        "service": "users-fastapi",
        "actor": {"type": "user", "id": "alice"},
        "action": "user.registered",
        "subject": {"type": "user", "id": str(uuid.uuid4())},
        "trace_id": uuid.uuid4().hex,
        "payload": {"email": "alice@example.com"},
    }
    routes = [
        Route("POST", "/api/audit/events", tuple(event), event),
        Route(
            "GET",
            "/api/audit/events",
            (
                "limit",
                "cursor",
                "service",
                "action",
                "actor_id",
                "subject_type",
                "subject_id",
                "since",
                "until",
            ),
        ),
        Route("GET", "/api/audit/openapi.json"),
        Route("GET", "/admin/support/users/", ("q", "email", "cursor")),
        Route("GET", "/admin/support/users/{user_id}/"),
        Route("POST", "/admin/support/users/{user_id}/", ("action", "csrfmiddlewaretoken")),
        Route("GET", "/admin/audit/auditevent/", ("q", "service", "o", "p")),
        Route("POST", "/admin/login/", ("username", "password")),
        Route("GET", "/readyz"),
    ]
    return Target("admin-django", routes, credentials, _wsgi_caller(WSGIHandler()))
