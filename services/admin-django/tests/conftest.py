"""Fixtures of the admin service's in-process tests (pytest-django).

Settings
    ``admin_django.settings`` derives everything from ``ADMIN_*`` variables at
    import, so :func:`pytest_configure` sets them (fresh random secrets, the
    trusted services, a placeholder database no test touches), sets Django up,
    and then puts the process environment back: the whole repository is tested
    in one process (``pytest libs services tools``), and the other packages'
    tests, and the processes they start, must not inherit ``ADMIN_*`` or
    ``DJANGO_SETTINGS_MODULE``. The logging configuration Django applies from
    the settings (the service's JSON handler on the root logger) is undone the
    same way. pytest-django sees Django as configured from then on; nothing is
    added to the repository-wide pytest configuration.

Two backends in one run
    Django's ``DATABASES`` is fixed per process, but the connection it makes is
    not: :func:`database_at` re-points the ``default`` connection at another
    database URL (through ``admin_django.settings._database``, the parser
    production uses). ``django_db_setup``, pytest-django's "make the test
    database" fixture, is overridden here and depends on the session-scoped,
    parametrized ``backend`` fixture, so every test that touches the database
    (``db``, ``transactional_db``, ``admin_client``, ``django_user_model`` …)
    runs twice: ``[sqlite]`` on a fresh file and ``[postgres]`` on a fresh
    database from :func:`polyframe_testing.databases.fresh_postgres_database` (skipped
    locally without PostgreSQL, a failure in CI). pytest orders the tests by
    backend, so each database is made and migrated once, by ``migrate``, the
    command production runs (its ``post_migrate`` creates the support groups).
    Each test runs in a transaction that is rolled back (``transactional_db``:
    the tables are flushed afterwards). A test meant for one backend
    parametrizes ``backend`` indirectly. Ask for the database with the ``db``
    fixture (or ``pytest.mark.usefixtures("db")``), not ``pytest.mark.django_db``:
    the marker loads the database fixtures only when the test runs, too late
    for the parametrization, and is refused at collection.

Test modules cannot import this file (``--import-mode=importlib``), so the
helpers are handed out as fixtures.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from polyframe_testing.databases import BACKENDS, fresh_postgres_database
from polyframe_testing.logs import loggers_restored
from polyframe_testing.peers import as_service
from polyframe_testing.problems import check_problem, problem_response
from polyframe_testing.telemetry import SAMPLER
from service_kit.credentials import basic_credential
from service_kit.problems import PROBLEM_CONTENT_TYPE

PRODUCERS = ("users-fastapi", "legacy-flask")
#: Trusted by admin-django but not an audit producer: may read the trail, not write it.
READER = "admin-django"
EVENTS = "/api/audit/events"
PASSWORD = "correct horse battery staple"
#: Where the fake peers live (never contacted: the MockTransport answers).
USERS_URL = "http://users.invalid"
ORDERS_URL = "http://orders.invalid"


# -- Django settings -------------------------------------------------------------------------


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def pytest_configure(config: pytest.Config) -> None:
    import django
    from django.conf import settings

    if settings.configured:  # pragma: no cover - configured by --ds or another conftest
        return
    scratch = Path(tempfile.mkdtemp(prefix="admin-django-tests-"))
    config.add_cleanup(lambda: shutil.rmtree(scratch, ignore_errors=True))
    (scratch / "static").mkdir()  # WhiteNoise warns about a missing STATIC_ROOT
    trusted = {name: secrets.token_urlsafe(24) for name in (*PRODUCERS, READER)}
    environment = {
        "DJANGO_SETTINGS_MODULE": "admin_django.settings",
        "ADMIN_ENVIRONMENT": "test",
        "ADMIN_SECRET_KEY": secrets.token_urlsafe(48),
        "ADMIN_SERVICE_SECRET": secrets.token_urlsafe(24),
        "ADMIN_TRUSTED_SERVICES": json.dumps(trusted),
        # A placeholder: django_db_setup points the connection at the backend under test.
        "ADMIN_DATABASE_URL": "sqlite:///:memory:",
        "ADMIN_STATIC_ROOT": str(scratch / "static"),
        "ADMIN_USERS_URL": USERS_URL,
        "ADMIN_ORDERS_URL": ORDERS_URL,
        # Spans recorded, as in a deployment that names a sampler (the tracer provider is
        # made here, once per process, when Django starts the audit app).
        SAMPLER[0]: os.environ.get(*SAMPLER),
    }
    with _environment(environment), loggers_restored():
        django.setup()


# -- the database ----------------------------------------------------------------------------


def pytest_itemcollected(item: pytest.Item) -> None:
    fixtures = getattr(item, "fixturenames", ())
    if item.get_closest_marker("django_db") and "django_db_setup" not in fixtures:
        raise pytest.UsageError(
            f"{item.nodeid}: use the `db` fixture (or pytest.mark.usefixtures('db')) instead "
            "of pytest.mark.django_db, so that the test runs on both backends"
        )


@contextmanager
def database_at(url: str) -> Iterator[dict[str, Any]]:
    """Point the ``default`` connection (of every thread) at ``url``; put it back afterwards."""
    from django.conf import settings
    from django.db import connections

    from admin_django.settings import _database

    def forget() -> None:
        # Only this thread's connection object exists here; others are closed by their thread.
        connections["default"].close()
        with suppress(AttributeError):  # never opened in this thread
            del connections["default"]

    previous = connections.settings["default"]
    forget()
    entry = connections.configure_settings({"default": _database(url)})["default"]
    connections.settings["default"] = settings.DATABASES["default"] = entry
    try:
        yield entry
    finally:
        forget()
        connections.settings["default"] = settings.DATABASES["default"] = previous


@contextmanager
def fresh_database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database of ``backend``: its URL, as ``ADMIN_DATABASE_URL`` would name it."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('admin-db') / 'admin.db'}"
    else:
        with fresh_postgres_database("admin_test") as url:
            yield url


def migrate(*args: str) -> None:
    from django.core.management import call_command

    call_command("migrate", *args, interactive=False, verbosity=0)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgres``: every database test runs on both."""
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def django_db_setup(
    backend: str,
    django_test_environment: None,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """Overrides pytest-django's: a fresh database of ``backend``, migrated by ``migrate``."""
    with fresh_database(backend, tmp_path_factory) as url, database_at(url):
        with django_db_blocker.unblock():
            migrate()
        yield


@pytest.fixture(scope="session", autouse=True)
def _database_blocked(django_db_blocker: Any) -> Iterator[None]:
    """No test reaches the database without asking for it (``db`` and friends unblock).

    pytest-django blocks it itself only when Django is configured before pytest's own
    ``pytest_configure`` ends, which is not the case in the repository-wide run.
    """
    django_db_blocker.block()
    yield
    django_db_blocker.restore()


@pytest.fixture
def point_database(django_db_blocker: Any) -> Callable[[str], Any]:
    """``with point_database(url):`` the ``default`` connection uses ``url`` (unblocked)."""

    @contextmanager
    def pointed(url: str) -> Iterator[None]:
        with database_at(url), django_db_blocker.unblock():
            yield

    return pointed


@pytest.fixture
def empty_database(
    backend: str, tmp_path_factory: pytest.TempPathFactory, django_db_blocker: Any
) -> Iterator[str]:
    """The ``default`` connection pointed at a fresh, unmigrated database of ``backend``."""
    with (
        fresh_database(backend, tmp_path_factory) as url,
        database_at(url),
        django_db_blocker.unblock(),
    ):
        yield url


# -- the audit API ---------------------------------------------------------------------------


@pytest.fixture
def service_headers() -> Callable[..., dict[str, str]]:
    """``service_headers("users-fastapi")``: the Basic credential of a trusted service."""
    from django.conf import settings

    def headers(name: str, *, secret: str | None = None) -> dict[str, str]:
        if secret is None:
            secret = settings.CONFIG.trusted_services[name].get_secret_value()
        return as_service(name, secret)

    return headers


BASE_TIME = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def event_body() -> Callable[..., dict[str, Any]]:
    """One event as a producer posts it; keyword arguments replace top-level fields."""

    def body(**overrides: Any) -> dict[str, Any]:
        event: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "occurred_at": BASE_TIME.isoformat(),
            "service": "users-fastapi",
            "actor": {"type": "user", "id": "alice"},
            "action": "user.registered",
            "subject": {"type": "user", "id": str(uuid.uuid4())},
            "trace_id": uuid.uuid4().hex,
            "payload": {"email": "alice@example.com"},
        }
        event.update(overrides)
        return event

    return body


@pytest.fixture
def event_row() -> Callable[..., dict[str, Any]]:
    """One event as ``audit_event_record_many`` takes it; keyword arguments replace fields."""

    def row(**overrides: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "event_id": uuid.uuid4(),
            "occurred_at": BASE_TIME,
            "service": "users-fastapi",
            "actor_type": "user",
            "actor_id": "alice",
            "acting_for": "",
            "action": "user.registered",
            "subject_type": "user",
            "subject_id": str(uuid.uuid4()),
            "trace_id": "",
            "payload": {},
        }
        values.update(overrides)
        return values

    return row


@pytest.fixture
def base_time() -> datetime:
    return BASE_TIME


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert response["X-Request-ID"]
    return check_problem(response.json(), status)


@pytest.fixture
def problem() -> Callable[[Any, int], dict[str, Any]]:
    """``problem(response, 422)``: asserts a problem+json answer and returns its body."""
    return assert_problem


# -- staff -----------------------------------------------------------------------------------


@pytest.fixture
def password() -> str:
    """The password of the staff members ``make_staff(..., with_password=True)`` creates."""
    return PASSWORD


@pytest.fixture
def make_staff(django_user_model: Any) -> Callable[..., Any]:
    """``make_staff("sam", group=ACTING)``: an active staff member (group: none by default).

    Without ``with_password`` the account has no usable password (hashing one costs
    a noticeable fraction of a second); ``login`` logs in without one.
    """
    from django.contrib.auth.models import Group

    def make(
        username: str,
        *,
        group: str | None = None,
        is_staff: bool = True,
        with_password: bool = False,
    ) -> Any:
        user = django_user_model.objects.create_user(
            username=username, password=PASSWORD if with_password else None, is_staff=is_staff
        )
        if group is not None:
            user.groups.add(Group.objects.get(name=group))
        return user

    return make


@pytest.fixture
def login(make_staff: Callable[..., Any]) -> Callable[..., Any]:
    """``login("sam", group=READ_ONLY)``: a fresh test client logged in as a new staff member."""
    from django.test import Client

    def client_for(username: str, *, group: str | None = None, is_staff: bool = True) -> Client:
        client = Client()
        client.force_login(make_staff(username, group=group, is_staff=is_staff))
        return client

    return client_for


# -- the users and orders services -----------------------------------------------------------


_USER = re.compile(r"/api/users/(?P<id>[^/]+)(?:/(?P<action>deactivate|reactivate))?")
_REFUND = re.compile(r"/api/orders/(?P<id>[^/]+)/refund")


class FakePeers:
    """STANDS IN for the users service (users-fastapi) and the orders service (legacy-flask).

    Behind ``httpx.MockTransport`` and the console's real ``ServiceClient``, it
    answers the calls the support console makes (list / read / deactivate /
    reactivate users; list / refund orders) from :attr:`users` and
    :attr:`orders`, refuses a caller without admin-django's Basic credential
    (401) and a change without ``X-Acting-For`` (403), records every request,
    and can be down (:attr:`down`: peer name → ``httpx.TransportError`` class
    raised as if by the network). The real services are exercised by
    ``tests/e2e``.
    """

    def __init__(self, credential: str) -> None:
        self.credential = credential
        self.users: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.down: dict[str, type[httpx.TransportError]] = {}
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def add_user(self, email: str, *, is_active: bool = True) -> dict[str, Any]:
        user = {
            "id": str(uuid.uuid4()),
            "email": email,
            "full_name": email.split("@")[0].title(),
            "role": "member",
            "is_active": is_active,
            "created_at": BASE_TIME.isoformat(),
        }
        self.users[user["id"]] = user
        return user

    def add_order(self, user_id: str, *, status: str = "paid") -> dict[str, Any]:
        order = {
            "id": str(uuid.uuid4()),
            "user_id": user_id,
            "status": status,
            "currency": "EUR",
            "total_cents": 2_500 + len(self.orders),
            "items": [],
            "created_at": (BASE_TIME + timedelta(minutes=len(self.orders))).isoformat(),
            "cancellable_until": None,
            "cancelled_at": None,
            "refunded_at": None,
            "refund_reason": None,
        }
        self.orders[order["id"]] = order
        return order

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.url.path == path]

    def handler(self, peer: str) -> Callable[[httpx.Request], httpx.Response]:
        def handle(request: httpx.Request) -> httpx.Response:
            with self._lock:
                self.requests.append(request)
            error = self.down.get(peer)
            if error is not None:
                raise error(f"{peer} is down (simulated)", request=request)
            if request.headers.get("Authorization") != self.credential:
                return problem_response(401, "Unknown service or wrong service credential")
            if request.method == "POST" and not request.headers.get("X-Acting-For"):
                return problem_response(403, "Name the staff member you act for")
            if peer == "users-fastapi":
                return self._users(request)
            return self._orders(request)

        return handle

    def _users(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path == "/api/users":
            email = request.url.params.get("email")
            items = [u for u in self.users.values() if email is None or u["email"] == email]
            return httpx.Response(200, json={"items": items, "next_cursor": None})
        match = _USER.fullmatch(path)
        if match is None:
            return problem_response(404, "Not Found")
        user = self.users.get(match["id"])
        if user is None:
            return problem_response(404, "No such user")
        if request.method == "GET" and match["action"] is None:
            return httpx.Response(200, json=user)
        if request.method == "POST" and match["action"] is not None:
            user["is_active"] = match["action"] == "reactivate"
            return httpx.Response(200, json=user)
        return problem_response(405, "Method Not Allowed")

    def _orders(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path == "/api/orders":
            user_id = request.url.params.get("user_id")
            items = [o for o in self.orders.values() if o["user_id"] == user_id]
            return httpx.Response(200, json={"items": items, "next_cursor": None})
        match = _REFUND.fullmatch(path)
        if request.method == "POST" and match is not None:
            order = self.orders.get(match["id"])
            if order is None:
                return problem_response(404, "No such order")
            if order["status"] != "paid":
                return problem_response(
                    409, f"Only a paid order can be refunded ({order['status']})"
                )
            reason = json.loads(request.content).get("reason", "")
            order.update(status="refunded", refund_reason=reason, refunded_at=BASE_TIME.isoformat())
            return httpx.Response(200, json=order)
        return problem_response(404, "Not Found")


@pytest.fixture(autouse=True)
def _no_real_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches a real users or orders service by accident (see ``peers``)."""
    from admin_django.support import clients

    def refuse(peer: str) -> Any:
        raise AssertionError(f"a test called {peer} without the `peers` fixture")

    monkeypatch.setattr(clients, "_client", refuse)


@pytest.fixture
def peers(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePeers]:
    """The support console's peers, replaced by :class:`FakePeers` (see its docstring).

    The console's clients are built as production builds them
    (``admin_django.support.clients._client``), with the MockTransport as the only change.
    """
    from django.conf import settings

    from admin_django.support import clients
    from service_kit.client import ClientConfig, ServiceClient

    config = settings.CONFIG
    assert config.service_secret is not None
    secret = config.service_secret.get_secret_value()
    fake = FakePeers(basic_credential(config.service_name, secret))
    made: dict[str, ServiceClient] = {}

    def client(peer: str) -> ServiceClient:
        if peer not in made:
            base_url = {"users-fastapi": config.users_url, "legacy-flask": config.orders_url}[peer]
            made[peer] = ServiceClient(
                ClientConfig(
                    peer=peer,
                    base_url=base_url,
                    caller=config.service_name,
                    secret=secret,
                    timeout_seconds=config.client_timeout_seconds,
                    max_attempts=config.client_max_attempts,
                ),
                transport=httpx.MockTransport(fake.handler(peer)),
            )
        return made[peer]

    monkeypatch.setattr(clients, "_client", client)
    yield fake
    for made_client in made.values():
        made_client.close()
