"""Rate limits on log-in and registration, through Traefik, on a platform with low limits.

The session's platform allows 100000 log-ins and registrations a minute per address (every
local request comes from 127.0.0.1); this one is started with ``--rate-limit`` so that a few
requests reach each limit. A limit answers 429 problem+json with ``Retry-After``; after that
many seconds it resets; a client's own ``X-Forwarded-For`` does not get it a new address; one
account's failed log-ins lock that account only.

The platform's own start-up logs in the demo members (its demo orders), so the first window
of log-ins is not empty: each check first runs into the limit, waits ``Retry-After``, and
counts exactly from a fresh window.

Another platform runs users-fastapi with two uvicorn workers counting in the Redis every
development and CI machine runs (``--rate-limit-storage``): one limit for both, not one each.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from polyframe_testing.tools import unavailable

pytestmark = pytest.mark.e2e

LOGIN_LIMIT = 6
REGISTER_LIMIT = 3
FAILURE_LIMIT = 2
WINDOW = 10
#: Requests sent while looking for the first 429 (a bound, far above every limit).
SEARCH = 40
PASSWORD = "a long passphrase for the limits"


def _rate_limits(**limits: int) -> list[str]:
    """``--rate-limit NAME=VALUE`` options of ``polyframe-dev up`` (``login_limit_per_ip=6``)."""
    return [
        option
        for name, value in limits.items()
        for option in ("--rate-limit", f"{name.replace('_', '-')}={value}")
    ]


@pytest.fixture(scope="module")
def limited(platform_with: Callable[..., Any]) -> Any:
    return platform_with(
        "--no-prometheus",
        *_rate_limits(
            login_limit_per_ip=LOGIN_LIMIT,
            register_limit_per_ip=REGISTER_LIMIT,
            ip_limit_window_seconds=WINDOW,
            login_failure_limit=FAILURE_LIMIT,
            login_failure_window_seconds=WINDOW,
        ),
    )


def _register(client: httpx.Client, **headers: str) -> httpx.Response:
    email = f"e2e-limit-{uuid.uuid4().hex}@example.com"
    return client.post(
        "/api/users/register",
        json={"email": email, "password": PASSWORD, "full_name": "Limited"},
        headers=headers,
    )


def _login(
    client: httpx.Client, email: str, password: str = PASSWORD, **headers: str
) -> httpx.Response:
    return client.post(
        "/api/users/login", json={"email": email, "password": password}, headers=headers
    )


def _limited(problem: Any, response: httpx.Response, what: str, window: int = WINDOW) -> int:
    """``response`` is the rate limit's 429 (a window of ``window`` s); return its Retry-After."""
    body = problem(response, 429)
    assert body["type"].endswith(":rate-limited"), body
    assert what in body["detail"], body
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= window, retry_after
    return retry_after


#: Seconds of the window a 429 found by ``_until_limited`` leaves at least: the checks
#: that follow it (a spoofed header refused too) must land in the same window.
MARGIN = 3


def _until_limited(send: Callable[[], httpx.Response]) -> httpx.Response:
    """The first 429 of a window with at least MARGIN seconds left (waits out one that ends
    sooner, and finds the limit again in the next)."""
    for _ in range(3):
        for _ in range(SEARCH):
            response = send()
            if response.status_code == 429:
                break
            assert response.status_code in (200, 201), response.text
        else:
            pytest.fail(f"no 429 after {SEARCH} requests")
        retry_after = int(response.headers.get("retry-after", "0"))
        if retry_after >= MARGIN:
            return response
        time.sleep(retry_after)
    pytest.fail(f"every window found had under {MARGIN} s left")


def test_registrations_per_address(limited: Any, problem: Any) -> None:
    with httpx.Client(base_url=limited.base_url, timeout=30) as client:
        first = _until_limited(lambda: _register(client))
        wait = _limited(problem, first, "registrations")
        # A client cannot claim another address: Traefik sets X-Forwarded-For itself.
        _limited(problem, _register(client, **{"X-Forwarded-For": "203.0.113.9"}), "registrations")
        time.sleep(wait)  # the window ends: the limit resets
        fresh = [_register(client) for _ in range(REGISTER_LIMIT)]
        assert [r.status_code for r in fresh] == [201] * REGISTER_LIMIT, [r.text for r in fresh]
        _limited(problem, _register(client), "registrations")


def test_log_ins_per_address_and_failures_per_account(limited: Any, problem: Any) -> None:
    with httpx.Client(base_url=limited.base_url, timeout=30) as client:
        _wait_for_registration_window(client, problem)
        victim, bystander = _registered(client), _registered(client)

        # Per address: into the limit, wait for a fresh window, then exactly the limit.
        wait = _limited(problem, _until_limited(lambda: _login(client, bystander)), "address")
        _limited(
            problem,
            _login(client, bystander, **{"X-Forwarded-For": "203.0.113.9"}),
            "address",
        )
        time.sleep(wait)
        fresh = [_login(client, bystander) for _ in range(LOGIN_LIMIT)]
        assert [r.status_code for r in fresh] == [200] * LOGIN_LIMIT, [r.text for r in fresh]
        wait = _limited(problem, _login(client, bystander), "address")
        time.sleep(wait)

        # Per account (a fresh address window: 4 log-ins of its 6): the victim's failures
        # lock the victim, even with the right password, and nobody else.
        for _ in range(FAILURE_LIMIT):
            problem(_login(client, victim, "not the password"), 401)
        wait = _limited(problem, _login(client, victim), "account")
        assert _login(client, bystander).status_code == 200
        time.sleep(wait)
        assert _login(client, victim).status_code == 200, "the lock did not end"


def _registered(client: httpx.Client) -> str:
    response = _register(client)
    assert response.status_code == 201, response.text
    email: str = response.json()["email"]
    return email


def _wait_for_registration_window(client: httpx.Client, problem: Any) -> None:
    """The other test may have used up this address's registrations: wait for a fresh window."""
    probe = _register(client)
    if probe.status_code == 429:
        time.sleep(_limited(problem, probe, "registrations"))
    else:
        assert probe.status_code == 201, probe.text


# -- two workers, one limit in Redis ------------------------------------------------------------

REDIS = ("127.0.0.1", 6379)
#: Failed log-ins per account, and its window: short, so this test's Redis keys expire soon.
SHARED_FAILURE_LIMIT = 3
SHARED_WINDOW = 30
#: Wrong passwords sent at once per account, each on a connection of its own.
BURST = 8
#: Accounts tried, at most, until one burst was answered by both workers.
ACCOUNTS = 6
LOGIN_ROUTE = "/api/users/login"


@pytest.fixture(scope="module")
def shared(platform_with: Callable[..., Any]) -> Any:
    try:
        socket.create_connection(REDIS, timeout=2).close()
    except OSError as exc:
        unavailable(f"no Redis at {REDIS[0]}:{REDIS[1]}: {exc}")
    return platform_with(
        "--no-prometheus",
        "--workers",
        "2",
        "--rate-limit-storage",
        f"redis://{REDIS[0]}:{REDIS[1]}/0",
        *_rate_limits(
            login_failure_limit=SHARED_FAILURE_LIMIT,
            login_failure_window_seconds=SHARED_WINDOW,
        ),
    )


def _log_ins_per_worker(platform: Any) -> dict[str, float]:
    """Log-in requests each users-fastapi worker answered, from its own metrics file."""
    folder = platform.local.data_dir / "metrics" / "users-fastapi"
    counts: dict[str, float] = {}
    for file in folder.glob("histogram_*.db"):
        with tempfile.TemporaryDirectory() as alone:
            shutil.copy(file, Path(alone) / file.name)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)
            counts[file.stem] = sum(
                sample.value
                for family in registry.collect()
                for sample in family.samples
                if sample.name == "http_server_request_duration_seconds_count"
                and sample.labels.get("http_route") == LOGIN_ROUTE
            )
    return counts


def test_two_workers_enforce_one_limit_in_redis(shared: Any, problem: Any) -> None:
    def guess(email: str) -> httpx.Response:
        with httpx.Client(base_url=shared.base_url, timeout=30) as own:  # a connection each
            return _login(own, email, "not the password")

    with (
        httpx.Client(base_url=shared.base_url, timeout=30) as client,
        ThreadPoolExecutor(BURST) as pool,
    ):
        for _ in range(ACCOUNTS):
            victim = _registered(client)
            before = _log_ins_per_worker(shared)
            answers = list(pool.map(guess, [victim] * BURST))
            after = _log_ins_per_worker(shared)
            statuses = sorted(answer.status_code for answer in answers)
            expected = [401] * SHARED_FAILURE_LIMIT + [429] * (BURST - SHARED_FAILURE_LIMIT)
            assert statuses == expected, f"{statuses}: not one limit for both workers"
            for answer in answers:
                if answer.status_code == 429:
                    _limited(problem, answer, "account", SHARED_WINDOW)
            served = [w for w in after if after[w] - before.get(w, 0) > 0]
            if len(served) == 2:
                break  # shown: a burst both workers answered, within one limit
        else:
            pytest.fail(f"none of {ACCOUNTS} bursts reached both workers: nothing shown")


# -- the session's platform: every replica, one limit ------------------------------------------

#: users-fastapi's own default (UsersSettings.login_failure_limit), which every platform this
#: suite starts keeps: the local one, and the kind release (whose two replicas share Redis).
DEFAULT_FAILURE_LIMIT = 5


def test_one_accounts_failures_are_counted_once_across_the_replicas(
    platform: Any, account: Any, problem: Any
) -> None:
    """Through the ingress, which spreads requests over every users-fastapi pod (two in the
    kind release): an account's failed log-ins reach the limit after exactly the limit, not
    after the limit times the replicas, because the replicas count in one place."""
    statuses = []
    for _ in range(DEFAULT_FAILURE_LIMIT + 3):
        with httpx.Client(base_url=platform.base_url, timeout=30) as own:  # a connection each
            answer = _login(own, account.email, "not the password")
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            _limited(problem, answer, "account", window=900)
    expected = [401] * DEFAULT_FAILURE_LIMIT + [429] * 3
    assert statuses == expected, f"{statuses}: the replicas do not share one limit"
