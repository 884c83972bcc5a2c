"""Fixtures of the orders service's in-process tests.

Every test that asks for ``database_url`` (directly or through ``api``) runs
twice: on a fresh, migrated SQLite file and on PostgreSQL. The PostgreSQL
database is created and migrated once per session; each test leaves it empty
again. Migrations always go through ``legacy_flask.cli.migrate``, the path
production uses.

The users service is not running here: :class:`FakeUsersService`, an
``httpx.MockTransport`` handler behind the app's real ``ServiceClient``, stands
in for it. The real users service is exercised by ``tests/e2e``.

Every response to an ``/api/orders`` operation is checked against the
service's own OpenAPI document (openapi-core); see :class:`Contract`.

Test modules cannot import this file (``--import-mode=importlib``), so the
helpers are handed out as fixtures.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask.testing import FlaskClient
from flask_openapi3.openapi import OpenAPI
from openapi_core import Config
from openapi_core import OpenAPI as CoreOpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from legacy_flask import extensions
from legacy_flask.app import create_app
from legacy_flask.cli import migrate
from legacy_flask.models import Order
from legacy_flask.settings import OrdersSettings
from legacy_flask.users import JWKS_PATH
from polyframe_testing.databases import ServiceDatabases
from polyframe_testing.peers import as_service, generate_private_key
from polyframe_testing.problems import check_problem, problem_response
from polyframe_testing.telemetry import record_spans
from service_kit.client import ClientConfig, ServiceClient
from service_kit.credentials import basic_credential
from service_kit.problems import PROBLEM_CONTENT_TYPE
from service_kit.tokens import key_id, public_jwk, sign_access_token

ORDERS = "/api/orders"
USERS_URL = "http://users.test"
ISSUER = "polyframe-users"
AUDIENCE = "polyframe"
#: Deleted after each PostgreSQL test, children first; then any other table the migrations
#: made (the audit outbox, …) except alembic's own.
TABLES = ("idempotency_records", "order_items", "orders")


def pytest_configure(config: pytest.Config) -> None:
    record_spans()  # the observability tests read the spans


@dataclass(frozen=True)
class Secrets:
    """Credentials of this test session: ours towards users, and the services we trust."""

    service_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    trusted: dict[str, str] = field(
        default_factory=lambda: {
            "admin-django": secrets.token_urlsafe(24),
            "users-fastapi": secrets.token_urlsafe(24),
        }
    )


def make_settings(database_url: str, secrets_: Secrets, **overrides: Any) -> OrdersSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "service_secret": secrets_.service_secret,
        "trusted_services": dict(secrets_.trusted),
        "users_url": USERS_URL,
        "cancel_window_seconds": 1800,
    }
    values.update(overrides)
    return OrdersSettings(**values)


# -- the users service -----------------------------------------------------------------------


_USER_PATH = re.compile(r"/api/users/(?P<user_id>[^/]+)")


class FakeUsersService:
    """Stands in for the users service (``users-fastapi``) behind ``httpx.MockTransport``.

    It serves the two things the orders service asks of it: the JWKS (``GET
    /api/users/.well-known/jwks.json``, built from a key the tests own, so they
    can sign user tokens) and "is this user active?" (``GET /api/users/{id}``,
    answered from :attr:`accounts`; 404 for an unknown id). Like the real one
    it refuses a caller without legacy-flask's Basic credential (401). It counts
    what it is asked and can pretend to be down (:attr:`lookup_error` /
    :attr:`jwks_error` = ``httpx.ConnectError``) or slow (``httpx.ReadTimeout``).

    The real users service is exercised by ``tests/e2e``.
    """

    def __init__(self, signing_key: rsa.RSAPrivateKey, credential: str) -> None:
        self.signing_key = signing_key
        self.kid = key_id(signing_key.public_key())
        self.jwks = {"keys": [public_jwk(signing_key.public_key(), kid=self.kid)]}
        self.credential = credential
        #: user id → is_active; an id not in here is unknown to the users service (404).
        self.accounts: dict[uuid.UUID, bool] = {}
        #: Raised (as if by the network) for user look-ups / the JWKS, when set.
        self.lookup_error: type[httpx.TransportError] | None = None
        self.jwks_error: type[httpx.TransportError] | None = None
        #: When set, every user look-up waits here: races can be lined up (see hold_lookups).
        self.lookup_gate: threading.Barrier | None = None
        self.requests: list[httpx.Request] = []
        self.refused = 0
        self._lock = threading.Lock()

    def hold_lookups(self, parties: int, timeout: float = 60) -> None:
        """Answer no user look-up until ``parties`` of them are waiting (then all at once)."""
        self.lookup_gate = threading.Barrier(parties, timeout=timeout)

    def handler(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        if request.headers.get("Authorization") != self.credential:
            with self._lock:
                self.refused += 1
            return problem_response(401, "Unknown service or wrong service credential")
        path = request.url.path
        if request.method == "GET" and path == JWKS_PATH:
            if self.jwks_error is not None:
                raise self.jwks_error("users service unavailable (simulated)", request=request)
            return httpx.Response(200, json=self.jwks)
        match = _USER_PATH.fullmatch(path)
        if request.method == "GET" and match:
            if self.lookup_error is not None:
                raise self.lookup_error("users service unavailable (simulated)", request=request)
            if self.lookup_gate is not None:
                self.lookup_gate.wait()
            try:
                user_id = uuid.UUID(match["user_id"])
            except ValueError:
                return problem_response(404, "No such user")
            active = self.accounts.get(user_id)
            if active is None:
                return problem_response(404, "No such user")
            return httpx.Response(200, json={"id": str(user_id), "is_active": active})
        return problem_response(404, "Not Found")

    def lookups(self, user_id: uuid.UUID | None = None) -> int:
        """How many "is this user active?" calls arrived (for one user, if given)."""
        with self._lock:
            paths = [r.url.path for r in self.requests if r.url.path != JWKS_PATH]
        if user_id is None:
            return len(paths)
        return paths.count(f"/api/users/{user_id}")

    def jwks_fetches(self) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.url.path == JWKS_PATH)


# -- the OpenAPI contract --------------------------------------------------------------------


class Contract:
    """The service's own OpenAPI document, as an openapi-core validator."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.spec = CoreOpenAPI.from_dict(
            document,
            config=Config(
                # openapi-core parses only application/json bodies by itself.
                extra_media_type_deserializers={PROBLEM_CONTENT_TYPE: json.loads},
                # A property the document does not name is a mismatch too.
                additional_properties_default_policy="forbid",
            ),
        )

    @staticmethod
    def openapi_request(response: TestResponse) -> WerkzeugOpenAPIRequest:
        # The test client hands back the request it sent; the app read its body stream
        # already, so rewind it for openapi-core (WerkzeugOpenAPIRequest.body reads it).
        request = response.request
        stream = request.environ.get("wsgi.input")
        if stream is not None and hasattr(stream, "seek"):
            stream.seek(0)
        return WerkzeugOpenAPIRequest(request)

    def check_response(self, response: TestResponse) -> None:
        """The response is one the document describes for this operation and status."""
        self.spec.validate_response(
            self.openapi_request(response), WerkzeugOpenAPIResponse(response)
        )

    def check_request(self, response: TestResponse) -> None:
        """The request (which the service accepted) is one the document allows."""
        self.spec.validate_request(self.openapi_request(response))


_CONTRACTS: dict[str, Contract] = {}


def contract_of(app: OpenAPI) -> Contract:
    """Building a validator is slow and every app has the same document: cache it."""
    document = app.api_doc
    fingerprint = json.dumps(document, sort_keys=True)
    if fingerprint not in _CONTRACTS:
        _CONTRACTS[fingerprint] = Contract(document)
    return _CONTRACTS[fingerprint]


# -- the app ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    token: str
    role: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def order_body(*lines: tuple[str, int, int], currency: str = "EUR") -> dict[str, Any]:
    """An order body from ``(sku, quantity, unit_price_cents)`` lines."""
    lines = lines or (("BOOK-42", 2, 1250), ("PEN.blue_1", 3, 199))
    return {
        "currency": currency,
        "items": [
            {"sku": sku, "quantity": quantity, "unit_price_cents": price}
            for sku, quantity, price in lines
        ],
    }


@dataclass
class Api:
    """The app built from its factory, a test client, the fake users service, and the moves
    most tests make. Every ``/api/orders`` response is validated against the OpenAPI
    document; every request the service accepted (2xx) is too."""

    app: OpenAPI
    client: FlaskClient
    users: FakeUsersService
    secrets: Secrets
    contract: Contract

    # -- callers -----------------------------------------------------------------------------

    def token(
        self,
        subject: uuid.UUID | str,
        role: str = "member",
        *,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        lifetime: int = 600,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(subject),
            "role": role,
            "iat": now - 10,
            "nbf": now - 10,
            "exp": now + lifetime,
        }
        payload.update(claims)
        return sign_access_token(key or self.users.signing_key, kid or self.users.kid, payload)

    def user(self, role: str = "member", *, active: bool = True) -> User:
        """A user the users service knows (active unless told otherwise), with a token."""
        user_id = uuid.uuid4()
        self.users.accounts[user_id] = active
        return User(id=user_id, token=self.token(user_id, role), role=role)

    def member(self, *, active: bool = True) -> User:
        return self.user("member", active=active)

    def staff(self, *, active: bool = True) -> User:
        return self.user("staff", active=active)

    def service(
        self, name: str, *, secret: str | None = None, acting_for: str | None = None
    ) -> dict[str, str]:
        return as_service(name, secret or self.secrets.trusted[name], acting_for)

    # -- requests ----------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> TestResponse:
        response = self.client.open(path, method=method, **kwargs)
        self._validate(response)
        return response

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("POST", path, **kwargs)

    def _validate(self, response: TestResponse) -> None:
        path = response.request.path
        if not path.startswith(ORDERS) or path.startswith(
            (f"{ORDERS}/openapi.json", f"{ORDERS}/docs", f"{ORDERS}/swagger")
        ):
            return
        try:
            self.contract.check_response(response)
        except (PathNotFound, OperationNotFound):
            return  # not an operation of the document (its error shape is tested by itself)
        if 200 <= response.status_code < 300:
            self.contract.check_request(response)

    def create(
        self,
        user: User,
        body: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        all_headers = dict(user.headers)
        if key is not None:
            all_headers["Idempotency-Key"] = key
        all_headers.update(headers or {})
        return self.post(ORDERS, json=body or order_body(), headers=all_headers)

    def place(self, user: User, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create an order that must succeed; return its body."""
        response = self.create(user, body)
        assert response.status_code == 201, response.get_data(as_text=True)
        created: dict[str, Any] = response.get_json()
        return created

    # -- assertions --------------------------------------------------------------------------

    @staticmethod
    def problem(response: TestResponse, status: int, kind: str | None = None) -> dict[str, Any]:
        """Assert ``response`` is an RFC 9457 problem with ``status``; return its body."""
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.headers["Content-Type"] == PROBLEM_CONTENT_TYPE
        assert response.headers.get("X-Request-ID")
        body: dict[str, Any] = json.loads(response.get_data())
        return check_problem(body, status, instance=response.request.path, kind=kind)

    @staticmethod
    def errors(body: dict[str, Any]) -> dict[str, str]:
        """Field → location of a validation problem's errors."""
        return {error["field"]: error["location"] for error in body["errors"]}

    # -- the database ------------------------------------------------------------------------

    def session(self) -> Session:
        with self.app.app_context():
            engine = extensions.db.engine
        return Session(engine, expire_on_commit=False)

    def count(self, model: type[Any] = Order) -> int:
        with self.session() as session:
            return session.scalar(select(func.count()).select_from(model)) or 0

    def order_row(self, order_id: str | uuid.UUID) -> Order:
        with self.session() as session:
            order = session.get(Order, uuid.UUID(str(order_id)))
            assert order is not None
            return order

    def set_created_at(self, order_id: str | uuid.UUID, created_at: datetime) -> None:
        """Move an order in time (the service takes ``now`` from the clock)."""
        with self.session() as session:
            session.execute(
                update(Order)
                .where(Order.id == uuid.UUID(str(order_id)))
                .values(created_at=created_at)
            )
            session.commit()


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_orders_environment(unset_environment: Callable[[str], None]) -> None:
    """Settings come from the fixtures only, never from the developer's shell."""
    unset_environment("ORDERS_")


@pytest.fixture(scope="session")
def test_secrets() -> Secrets:
    return Secrets()


@pytest.fixture(scope="session")
def service_databases(test_secrets: Secrets) -> ServiceDatabases:
    """The orders database, on SQLite and PostgreSQL (psycopg), migrated by ``cli.migrate``
    (the plugin's ``database_url`` and ``empty_database_url`` use it)."""
    return ServiceDatabases(
        name="orders",
        sqlite_scheme="sqlite",
        postgres_scheme="postgresql+psycopg",
        migrate=lambda url: migrate(make_settings(url, test_secrets)),
        tables_first=TABLES,
    )


def build_api(
    settings: OrdersSettings,
    signing_key: rsa.RSAPrivateKey,
    test_secrets: Secrets,
    *,
    client_secret: str | None = None,
) -> Api:
    """``create_app(settings)``, its users client swapped for one on the fake users service."""
    app = create_app(settings)
    users = FakeUsersService(
        signing_key, basic_credential("legacy-flask", test_secrets.service_secret)
    )
    app.extensions["polyframe.users"].client.close()  # the one create_app made: never used
    extensions.users.init_app(
        app,
        client=ServiceClient(
            ClientConfig(
                peer="users-fastapi",
                base_url=USERS_URL,
                caller="legacy-flask",
                secret=client_secret or test_secrets.service_secret,
                timeout_seconds=2.0,
                max_attempts=1,
            ),
            transport=httpx.MockTransport(users.handler),
        ),
    )
    return Api(
        app=app,
        client=app.test_client(),
        users=users,
        secrets=test_secrets,
        contract=contract_of(app),
    )


def close_api(api: Api) -> None:
    api.app.extensions["polyframe.users"].client.close()
    api.app.extensions["polyframe.db"][0].dispose()


ApiFactory = Callable[..., Api]


@pytest.fixture
def make_api(
    database_url: str, signing_key: rsa.RSAPrivateKey, test_secrets: Secrets
) -> Iterator[ApiFactory]:
    """Build the app from its factory on the test's database; settings may be overridden
    (``cancel_window_seconds=0``), and ``client_secret`` is what legacy-flask presents to
    the users service."""
    built: list[Api] = []

    def factory(*, client_secret: str | None = None, **overrides: Any) -> Api:
        settings = make_settings(database_url, test_secrets, **overrides)
        built.append(build_api(settings, signing_key, test_secrets, client_secret=client_secret))
        return built[-1]

    yield factory
    for api in built:
        close_api(api)


@pytest.fixture
def api(make_api: ApiFactory) -> Api:
    return make_api()


@pytest.fixture
def unmigrated_api(
    empty_database_url: str, signing_key: rsa.RSAPrivateKey, test_secrets: Secrets
) -> Iterator[Api]:
    """The app started on a database that nobody migrated."""
    api = build_api(make_settings(empty_database_url, test_secrets), signing_key, test_secrets)
    yield api
    close_api(api)


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    """A key the users service does not publish (a forger's)."""
    return generate_private_key()


@pytest.fixture
def body() -> Callable[..., dict[str, Any]]:
    """``order_body(*(sku, quantity, unit_price_cents), currency="EUR")``."""
    return order_body
