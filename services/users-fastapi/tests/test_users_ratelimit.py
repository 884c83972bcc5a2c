"""Rate limits on log-in and registration: the counters, and the app's 429 answers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from limits import RateLimitItemPerSecond
from limits.aio.strategies import FixedWindowRateLimiter
from pydantic import ValidationError

from service_kit.problems import PROBLEM_CONTENT_TYPE
from users_fastapi.main import create_app
from users_fastapi.ratelimit import BoundedMemoryStorage, FixedWindow, RateLimits
from users_fastapi.settings import UsersSettings

PASSWORD = "correct horse battery staple"
LABELS = ("users-fastapi", "fastapi")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _window(
    limit: int, seconds: int, clock: Clock, max_keys: int = 100_000
) -> tuple[FixedWindow, BoundedMemoryStorage]:
    storage = BoundedMemoryStorage(max_keys, clock)
    item = RateLimitItemPerSecond(limit, seconds, namespace="test")
    return FixedWindow(item, FixedWindowRateLimiter(storage), clock), storage


async def test_a_window_allows_its_limit_then_says_how_long_to_wait() -> None:
    clock = Clock()
    window, _ = _window(3, 60, clock)
    assert [await window.hit("a") for _ in range(3)] == [None, None, None]
    clock.now += 20
    assert await window.hit("a") == pytest.approx(40)
    assert await window.hit("a") == pytest.approx(40)
    assert await window.hit("b") is None  # another key has its own count
    clock.now += 40
    assert await window.hit("a") is None  # a new window


async def test_a_refused_hit_does_not_extend_the_window() -> None:
    clock = Clock()
    window, _ = _window(1, 10, clock)
    assert await window.hit("a") is None
    for _ in range(5):
        clock.now += 1
        assert await window.hit("a") is not None
    clock.now += 5
    assert await window.hit("a") is None


async def test_clear_forgets_a_key_and_memory_is_bounded() -> None:
    clock = Clock()
    window, _ = _window(1, 60, clock, max_keys=2)
    await window.hit("a")
    await window.clear("a")
    assert await window.hit("a") is None
    await window.hit("b")
    await window.hit("c")  # "a" is the least recently used: dropped
    assert await window.hit("a") is None
    assert await window.hit("c") is not None


async def test_hostile_keys_cannot_grow_memory() -> None:
    """A flood of made-up keys (e-mails, for the per-account limit) inside one window."""
    window, storage = _window(5, 900, Clock(), max_keys=100)
    for number in range(5_000):
        await window.hit(f"made-up-{number}@example.com")
    assert await storage.reset() == 100  # the number of counters it held


async def test_a_fractional_window_is_rounded_up_to_whole_seconds() -> None:
    settings = UsersSettings(
        environment="development", ip_limit_window_seconds=1.5, login_limit_per_ip=1
    )
    limits = RateLimits.from_settings(settings, LABELS, clock=Clock())
    assert await limits.login_per_ip.hit("a") is None
    assert await limits.login_per_ip.hit("a") == pytest.approx(2)


def test_limits_are_settings_with_real_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = UsersSettings(environment="development")
    assert defaults.login_limit_per_ip == 30
    assert defaults.register_limit_per_ip == 10
    assert defaults.ip_limit_window_seconds == 60
    assert defaults.login_failure_limit == 5
    assert defaults.login_failure_window_seconds == 900
    monkeypatch.setenv("USERS_LOGIN_LIMIT_PER_IP", "7")
    monkeypatch.setenv("USERS_LOGIN_FAILURE_WINDOW_SECONDS", "30")
    configured = UsersSettings(environment="development")
    assert configured.login_limit_per_ip == 7
    assert configured.login_failure_window_seconds == 30


@asynccontextmanager
async def _client(settings: UsersSettings, **limits: float) -> AsyncIterator[Any]:
    """The app with ``limits``, and ``connect(ip)``: a client whose address is ``ip``."""
    app = create_app(settings.model_copy(update=limits))
    async with LifespanManager(app) as manager:
        clients: list[httpx.AsyncClient] = []

        def connect(ip: str = "203.0.113.7") -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=manager.app, client=(ip, 40_000))
            clients.append(httpx.AsyncClient(transport=transport, base_url="http://test"))
            return clients[-1]

        try:
            connect.app = app  # type: ignore[attr-defined]
            yield connect
        finally:
            for each in clients:
                await each.aclose()


async def _register(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post(
        "/api/users/register",
        json={"email": email, "password": PASSWORD, "full_name": "Ada Lovelace"},
    )


async def _login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/users/login", json={"email": email, "password": password})


def _assert_429(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert int(response.headers["retry-after"]) >= 1
    body: dict[str, Any] = response.json()
    assert body["status"] == 429
    assert body["type"].endswith(":rate-limited")
    return body


async def test_registrations_per_address_are_limited(settings: UsersSettings) -> None:
    async with _client(settings, register_limit_per_ip=2) as connect:
        first, other = connect("203.0.113.7"), connect("198.51.100.9")
        for number in range(2):
            assert (await _register(first, f"r{number}@example.com")).status_code == 201
        body = _assert_429(await _register(first, "r2@example.com"))
        assert "registrations" in body["detail"]
        # A client's own X-Forwarded-For is not believed: the server resolves the address.
        spoofed = await first.post(
            "/api/users/register",
            json={"email": "r3@example.com", "password": PASSWORD, "full_name": "A"},
            headers={"X-Forwarded-For": "192.0.2.99"},
        )
        _assert_429(spoofed)
        # Another address is not affected.
        assert (await _register(other, "r4@example.com")).status_code == 201


async def test_log_ins_per_address_are_limited(settings: UsersSettings) -> None:
    async with _client(settings, login_limit_per_ip=3) as connect:
        client, other = connect("203.0.113.7"), connect("198.51.100.9")
        assert (await _register(client, "l@example.com")).status_code == 201
        for _ in range(3):
            assert (await _login(client, "l@example.com")).status_code == 200
        body = _assert_429(await _login(client, "l@example.com"))
        assert "address" in body["detail"]
        assert (await _login(other, "l@example.com")).status_code == 200


async def test_failures_lock_one_account_only_until_the_window_ends(
    settings: UsersSettings,
) -> None:
    async with _client(settings, login_failure_limit=2) as connect:
        client = connect()
        for email in ("victim@example.com", "bystander@example.com"):
            assert (await _register(client, email)).status_code == 201
        for _ in range(2):
            assert (await _login(client, "victim@example.com", "wrong password")).status_code == 401
        # Now even the right password is refused, without being checked.
        body = _assert_429(await _login(client, "VICTIM@example.com"))
        assert "account" in body["detail"]
        assert int((await _login(client, "victim@example.com")).headers["retry-after"]) <= 900
        # Another account, from the same address, logs in.
        assert (await _login(client, "bystander@example.com")).status_code == 200
        # An unknown account is locked the same way (nothing tells which accounts exist).
        for _ in range(2):
            assert (await _login(client, "nobody@example.com", "wrong password")).status_code == 401
        _assert_429(await _login(client, "nobody@example.com", "wrong password"))


async def test_a_burst_of_guesses_sent_together_gets_no_more_than_the_limit(
    settings: UsersSettings,
) -> None:
    """The password check awaits (the hash runs off the loop): guesses sent at once must
    not all pass the account's check before the first of them has failed."""
    async with _client(settings, login_failure_limit=2) as connect:
        client = connect()
        assert (await _register(client, "burst@example.com")).status_code == 201
        answers = await asyncio.gather(
            *(_login(client, "burst@example.com", f"guess {n}") for n in range(6))
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [401, 401, 429, 429, 429, 429], statuses


async def test_a_success_clears_the_failures(settings: UsersSettings) -> None:
    async with _client(settings, login_failure_limit=2) as connect:
        client = connect()
        assert (await _register(client, "s@example.com")).status_code == 201
        for _ in range(3):
            assert (await _login(client, "s@example.com", "wrong password")).status_code == 401
            assert (await _login(client, "s@example.com")).status_code == 200


async def test_the_window_ends(settings: UsersSettings) -> None:
    now = [5_000.0]
    async with _client(settings, login_limit_per_ip=1, ip_limit_window_seconds=30) as connect:
        state = connect.app.state.users
        state.limits = RateLimits.from_settings(state.settings, LABELS, clock=lambda: now[0])
        client = connect()
        assert (await _register(client, "w@example.com")).status_code == 201
        assert (await _login(client, "w@example.com")).status_code == 200
        assert _assert_429(await _login(client, "w@example.com"))
        assert (await _login(client, "w@example.com")).headers["retry-after"] == "30"
        now[0] += 30
        assert (await _login(client, "w@example.com")).status_code == 200


async def test_the_openapi_document_names_the_429(settings: UsersSettings) -> None:
    async with _client(settings) as connect:
        paths = (await connect().get("/api/users/openapi.json")).json()["paths"]
    for path in ("/api/users/login", "/api/users/register"):
        assert "429" in paths[path]["post"]["responses"], path


async def test_two_workers_on_redis_share_one_limit(
    settings: UsersSettings, redis_space: Any
) -> None:
    """Two apps, as two uvicorn workers (or replicas) are, counting in one Redis."""
    shared = {"rate_limit_storage_url": redis_space.url, "register_limit_per_ip": 3}
    async with _client(settings, **shared) as first, _client(settings, **shared) as second:
        for connect in (first, second):  # this test's own keys in Redis
            state = connect.app.state.users
            state.limits = RateLimits.from_settings(
                state.settings, LABELS, key_prefix=redis_space.prefix
            )
        answers = [
            (await _register(connect(), f"two{n}@example.com")).status_code
            for n, connect in enumerate([first, second, first, second])
        ]
        assert answers == [201, 201, 201, 429], answers
        _assert_429(await _register(first(), "two4@example.com"))
    assert redis_space.keys() == {"register-per-ip/203.0.113.7/3/60/second": 5}


async def test_a_redis_that_is_down_never_answers_500(
    settings: UsersSettings, dead_redis_url: str
) -> None:
    limits = {"rate_limit_storage_url": dead_redis_url, "register_limit_per_ip": 2}
    async with _client(settings, **limits) as connect:
        client = connect()
        for number in range(2):
            assert (await _register(client, f"down{number}@example.com")).status_code == 201
        _assert_429(await _register(client, "down2@example.com"))  # still limited, in process
        assert (await _login(client, "down0@example.com")).status_code == 200
        assert (await _login(client, "down0@example.com", "wrong")).status_code == 401


def test_the_storage_is_a_setting_and_only_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    assert UsersSettings(environment="development").rate_limit_storage_url == ""
    monkeypatch.setenv("USERS_RATE_LIMIT_STORAGE_URL", "redis://127.0.0.1:6379/3")
    assert UsersSettings(environment="development").rate_limit_storage_url.endswith("/3")
    monkeypatch.setenv("USERS_RATE_LIMIT_STORAGE_URL", "memcached://127.0.0.1:11211")
    with pytest.raises(ValidationError, match="rate_limit_storage_url"):
        UsersSettings(environment="development")


def test_the_redis_client_is_imported_only_for_a_shared_storage() -> None:
    """A worker without a shared storage never loads the Redis client (cold start, memory)."""
    code = "import sys, users_fastapi.main; print('redis' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "False"
