"""Connections PostgreSQL drops under load: no read fails, no write is a 500.

No service pings its pooled connection before use (``pool_pre_ping``, Django's
``CONN_HEALTH_CHECKS``): a connection the server dropped is found by the statement that
fails on it, discarded with the rest of the pool, and an idempotent read (GET) is run once
more on a fresh connection; a write is not run twice but answered as the 503 problem. Here
the real servers (uvicorn, gunicorn gthread, gunicorn) run on PostgreSQL, two workers each,
while every backend of their databases is terminated (``pg_terminate_backend``) several
times during a bounded stream of reads and writes straight to each service.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from polyframe_dev.services import SERVICES, database_name, drop_postgres_databases
from polyframe_testing.databases import ADMIN_URL
from polyframe_testing.peers import as_service
from polyframe_testing.tools import unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

#: Rounds of terminations, and the reads each service answers before each round.
TERMINATIONS = 5
READS_PER_ROUND = 5
#: Every answer within this, or the client's timeout fails the test (no hang).
CLIENT_TIMEOUT = 15.0
#: Bound of each stream, whatever happens.
MAX_REQUESTS = 1_000
ORDER = {"currency": "EUR", "items": [{"sku": "BOOK-42", "quantity": 1, "unit_price_cents": 999}]}


@pytest.fixture(scope="module")
def on_postgres(platform_with: Callable[..., Any]) -> Iterator[Any]:
    """A platform of this module's own on the test server's PostgreSQL, two workers per
    server; stopped (checked to stop cleanly) and its databases dropped at the end."""
    try:
        psycopg.connect(ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL is not reachable at {ADMIN_URL}: {str(exc).strip()[:120]}")
    started = platform_with("--no-prometheus", "--workers", "2", "--postgres", ADMIN_URL)
    try:
        yield started
    finally:
        started.local.stop_and_check()
        drop_postgres_databases(ADMIN_URL, Path(started.ready["data_dir"]), SERVICES)


def _terminate_backends(databases: list[str]) -> int:
    """End every server process serving ``databases`` (as a failover or an admin would)."""
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
            (databases,),
        ).fetchone()
    return int(row[0]) if row else 0


def _wait_for_reads(
    answers: Counter[tuple[str, str, int]], lock: threading.Lock, services: list[str]
) -> None:
    """Until every service has answered ``READS_PER_ROUND`` more reads (bounded)."""

    def done() -> dict[str, int]:
        with lock:
            counts: dict[str, int] = {}
            for (service, method, _status), n in answers.items():
                if method == "GET":
                    counts[service] = counts.get(service, 0) + n
            return counts

    before = done()
    deadline = time.monotonic() + CLIENT_TIMEOUT
    while time.monotonic() < deadline:
        now = done()
        if all(now.get(s, 0) - before.get(s, 0) >= READS_PER_ROUND for s in services):
            return
        time.sleep(0.05)
    pytest.fail(f"reads stalled: {before} then {done()}")


def test_terminated_backends_fail_no_read_and_no_write_is_a_500(
    on_postgres: Any,
    register: Any,
    log_in: Any,
    problem: Any,
    report_measurement: Any,
) -> None:
    services = on_postgres.ready["services"]
    data_dir = Path(on_postgres.ready["data_dir"])
    databases = [database_name(data_dir, service) for service in SERVICES]
    with httpx.Client(base_url=on_postgres.base_url, timeout=CLIENT_TIMEOUT) as ingress:
        account = register(ingress)
        bearer = {"Authorization": f"Bearer {log_in(ingress, account.email, account.password)}"}
        order = ingress.post("/api/orders", json=ORDER, headers=bearer)
        assert order.status_code == 201, order.text
    order_id = order.json()["id"]
    secret = (data_dir / "secrets" / "service-legacy-flask.secret").read_text().strip()
    reader = as_service("legacy-flask", secret)
    audit = (
        f"{services['admin-django']}/api/audit/events"
        f"?limit=5&subject_type=order&subject_id={order_id}"
    )

    def audit_events(client: httpx.Client) -> list[str]:
        response = client.get(audit, headers=reader)
        assert response.status_code == 200, response.text
        return [event["id"] for event in response.json()["items"]]

    with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
        deadline = time.monotonic() + 30
        while not (events := audit_events(client)) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert events, "the order's audit event never arrived"

    # Each read and what it must answer, every time.
    reads: dict[str, tuple[str, dict[str, str], Callable[[Any], bool]]] = {
        "users-fastapi": (
            f"{services['users-fastapi']}/api/users/me",
            bearer,
            lambda body: body["email"] == account.email,
        ),
        "legacy-flask": (
            f"{services['legacy-flask']}/api/orders/{order_id}",
            bearer,
            lambda body: body["id"] == order_id,
        ),
        "admin-django": (audit, reader, lambda body: [e["id"] for e in body["items"]] == events),
    }
    writes: dict[str, Callable[[httpx.Client], httpx.Response]] = {
        "users-fastapi": lambda client: client.post(
            f"{services['users-fastapi']}/api/users/register",
            json={
                "email": f"e2e-{uuid.uuid4().hex}@example.com",
                "password": f"pw-{uuid.uuid4().hex}",
                "full_name": "Dropped Connections",
            },
        ),
        "legacy-flask": lambda client: client.post(
            f"{services['legacy-flask']}/api/orders",
            json=ORDER,
            headers={**bearer, "Idempotency-Key": str(uuid.uuid4())},
        ),
    }
    stop = threading.Event()
    lock = threading.Lock()
    failed_reads: list[str] = []
    answers: Counter[tuple[str, str, int]] = Counter()
    write_answers: list[tuple[str, httpx.Response]] = []

    def read_stream(service: str) -> None:
        url, headers, right = reads[service]
        with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
            for _ in range(MAX_REQUESTS):
                if stop.is_set():
                    return
                response = client.get(url, headers=headers)
                with lock:
                    answers[(service, "GET", response.status_code)] += 1
                    if response.status_code != 200 or not right(response.json()):
                        failed_reads.append(f"{service}: {response.status_code} {response.text}")

    def write_stream(service: str) -> None:
        with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
            for _ in range(MAX_REQUESTS // 10):
                if stop.is_set():
                    return
                response = writes[service](client)
                with lock:
                    answers[(service, "POST", response.status_code)] += 1
                    write_answers.append((service, response))
                time.sleep(0.1)  # a registration hashes a password: leave CPU to the reads

    terminated = 0
    with ThreadPoolExecutor(len(reads) + len(writes)) as pool:
        streams = [pool.submit(read_stream, service) for service in reads]
        streams += [pool.submit(write_stream, service) for service in writes]
        try:
            for _ in range(TERMINATIONS):
                _wait_for_reads(answers, lock, list(reads))
                terminated += _terminate_backends(databases)
            _wait_for_reads(answers, lock, list(reads))  # each meets the last round's
        finally:
            stop.set()
            for stream in streams:
                stream.result(timeout=CLIENT_TIMEOUT * 2)

    assert terminated >= TERMINATIONS, "no backend was ever terminated"
    assert not failed_reads, failed_reads[:5]
    for service, response in write_answers:
        assert response.status_code in {200, 201} or response.status_code == 503, (
            service,
            response.status_code,
            response.text,
        )
        if response.status_code == 503:
            problem(response, 503)
    for service in reads:
        assert answers[(service, "GET", 200)] > 0, f"{service} answered no read"
    report_measurement(
        "terminated backends under load",
        f"{terminated} backends terminated in {TERMINATIONS} rounds; "
        + ", ".join(f"{s} {m} {code}: {n}" for (s, m, code), n in sorted(answers.items())),
    )
