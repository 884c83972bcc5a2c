"""Rate limits on log-in and registration, through Traefik, on a platform with low limits.

The session's platform allows 100000 log-ins and registrations a minute per address (every
local request comes from 127.0.0.1); this one is started with ``--rate-limit`` so that a few
requests reach each limit. A limit answers 429 problem+json with ``Retry-After``; after that
many seconds it resets; a client's own ``X-Forwarded-For`` does not get it a new address; one
account's failed log-ins lock that account only.

The platform's own start-up logs in the demo members (its demo orders), so the first window
of log-ins is not empty: each check first runs into the limit, waits ``Retry-After``, and
counts exactly from a fresh window.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

LOGIN_LIMIT = 6
REGISTER_LIMIT = 3
FAILURE_LIMIT = 2
WINDOW = 10
#: Requests sent while looking for the first 429 (a bound, far above every limit).
SEARCH = 40
PASSWORD = "a long passphrase for the limits"


@pytest.fixture(scope="module")
def limited(platform_with: Callable[..., Any]) -> Any:
    return platform_with(
        "--no-prometheus",
        "--rate-limit",
        f"login-limit-per-ip={LOGIN_LIMIT}",
        "--rate-limit",
        f"register-limit-per-ip={REGISTER_LIMIT}",
        "--rate-limit",
        f"ip-limit-window-seconds={WINDOW}",
        "--rate-limit",
        f"login-failure-limit={FAILURE_LIMIT}",
        "--rate-limit",
        f"login-failure-window-seconds={WINDOW}",
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


def _limited(problem: Any, response: httpx.Response, what: str) -> int:
    """``response`` is the rate limit's 429; return its Retry-After (seconds)."""
    body = problem(response, 429)
    assert body["type"].endswith(":rate-limited"), body
    assert what in body["detail"], body
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= WINDOW, retry_after
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
