"""Faults on the real local platform, through Traefik: nothing lost, every answer bounded.

* users-fastapi SIGKILLed during a stream of order creations: each affected
  creation is a 503 problem at once, the orders service's circuit breaker stops
  calling the dead peer and closes again by itself once it is back, and the
  orders that exist are exactly the acknowledged ones.
* PostgreSQL taken away from legacy-flask alone (a cluster of the test's own,
  stopped and started again): ``/readyz`` 503, requests 503 problems, the other
  services unaffected, and recovery without a restart.
* SIGTERM to each server (uvicorn, both gunicorns) under load: readiness fails
  first while the server serves on, in-flight requests complete, nobody sees a
  5xx or a reset; and ``polyframe-dev up`` stops the same way (servers drain
  first, the ingress last).

The admin service's outage with the audit trail delivered exactly once after it
returns is in test_e2e_audit.py. Every wait is bounded; nothing asserts on speed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

ORDERS = "/api/orders"
USERS = "/api/users"
ORDER = {"currency": "EUR", "items": [{"sku": "BOOK-42", "quantity": 1, "unit_price_cents": 999}]}
#: Every answer within this, or the client's timeout fails the test (no hang).
CLIENT_TIMEOUT = 15.0
#: Bounds of the waits (reached only when something is broken).
RECOVERY_TIMEOUT = 60.0
#: Seconds each server serves on after SIGTERM with /readyz failing (the kit's default).
DRAIN_SECONDS = 2.0
#: A request in flight when SIGTERM arrives outlasts the drain, so that it is still
#: running when the server's real shutdown begins.
IN_FLIGHT_MS = int((DRAIN_SECONDS + 1.5) * 1000)
#: Each server's slow drill (a request that takes ``ms``) and how it is called.
SLOW: dict[str, tuple[str, str]] = {
    "users-fastapi": ("GET", "/api/users/_drills/slow"),
    "legacy-flask": ("POST", "/api/orders/_drills/hold-thread"),
    "admin-django": ("GET", "/api/audit/_drills/slow"),
}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _metric(target: str, name: str, **labels: str) -> float:
    """The sum of samples ``name`` with ``labels`` on ``target``'s /metrics (a host:port)."""
    text = httpx.get(f"http://{target}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def _wait_for(what: str, condition: Callable[[], bool], timeout: float = RECOVERY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.1)


def _status(url: str) -> int | None:
    """The status of GET ``url``, or None when nothing answers."""
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None


def _list_ids(client: httpx.Client, token: str) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    for _ in range(100):  # bounded: far more pages than any test creates
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        response = client.get(ORDERS, params=params, headers=_bearer(token))
        assert response.status_code == 200, response.text
        page = response.json()
        ids += [order["id"] for order in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
    pytest.fail("the order listing never ended")


# -- a PostgreSQL cluster of the test's own ------------------------------------------------------


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


@dataclass
class OwnPostgres:
    """A throw-away PostgreSQL cluster (initdb, trust auth) on a free port of 127.0.0.1."""

    bin: Path
    folder: Path
    port: int = field(init=False)

    def __post_init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"{argv[0]} failed:\n{result.stdout}\n{result.stderr}"

    def init(self) -> None:
        self.folder.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(self.folder.parent, "postgres")
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.folder), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.folder), "-o", options,
                  "-l", str(self.folder / "server.log"))  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.folder))

    def running(self) -> bool:
        return (self.folder / "postmaster.pid").exists()


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    binaries = _postgres_bin()
    if binaries is None:
        message = "PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) are not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    # Not below pytest's tmp_path: that is private to root, and the server runs as postgres.
    parent = Path(tempfile.mkdtemp(prefix="polyframe-e2e-pg-"))
    cluster = OwnPostgres(binaries, parent / "cluster")
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        if cluster.running():
            cluster.stop()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def faulty(platform_with: Callable[..., Any], own_postgres: OwnPostgres) -> Iterator[Any]:
    """A platform of this module's own: drills on, legacy-flask's database on ``own_postgres``;
    stopped (and checked to stop cleanly) before that cluster goes."""
    started = platform_with(
        "--drills", "--no-prometheus", "--postgres-for", f"legacy-flask={own_postgres.url}"
    )
    yield started
    started.local.stop_and_check()


@pytest.fixture
def ingress(faulty: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=faulty.base_url, timeout=CLIENT_TIMEOUT) as client:
        yield client


@pytest.fixture
def member(ingress: httpx.Client, register: Any, log_in: Any) -> str:
    """A new account's token on the faulty platform."""
    account = register(ingress)
    return str(log_in(ingress, account.email, account.password))


def _assert_unavailable(problem: Any, response: httpx.Response) -> None:
    problem(response, 503)
    assert response.headers.get("retry-after", "").isdigit(), response.headers


# -- users-fastapi SIGKILLed under a stream of order creations ---------------------------------


def test_killed_users_service_costs_503s_only_and_the_circuit_recovers(
    faulty: Any, ingress: httpx.Client, member: str, problem: Any, report_measurement: Any
) -> None:
    local = faulty.local
    target = faulty.ready["metrics_targets"]["legacy-flask"][0]
    peer = {"peer_service": "users-fastapi"}
    rejections_before = _metric(target, "http_client_circuit_rejections_total", **peer)
    answers: list[httpx.Response] = []
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=faulty.base_url, timeout=CLIENT_TIMEOUT) as client:
            for _ in range(2_000):  # bounded, whatever happens
                if stop.is_set():
                    return
                key = str(uuid.uuid4())
                response = client.post(
                    ORDERS, json=ORDER, headers={**_bearer(member), "Idempotency-Key": key}
                )
                with lock:
                    answers.append(response)
                    if response.status_code == 201:
                        acknowledged.append(response.json()["id"])
                time.sleep(0.02)

    with ThreadPoolExecutor(4) as pool:
        streams: list[Future[None]] = [pool.submit(stream) for _ in range(4)]
        try:
            _wait_for("orders acknowledged before the kill", lambda: len(acknowledged) >= 8)
            pid = local.kill("users-fastapi")
            _wait_for(
                "the circuit towards users-fastapi opened",
                lambda: (
                    _metric(target, "http_client_circuit_rejections_total", **peer)
                    > rejections_before
                ),
            )
            local.wait_restarted("users-fastapi", pid, RECOVERY_TIMEOUT)
            local.wait_service_ready("users-fastapi", RECOVERY_TIMEOUT)
            with lock:
                recovered_from = len(answers)
            _wait_for(
                "orders acknowledged again after the restart",
                lambda: any(r.status_code == 201 for r in answers[recovered_from:]),
            )
        finally:
            stop.set()
            for each in streams:
                each.result(timeout=CLIENT_TIMEOUT * 2)

    statuses = Counter(response.status_code for response in answers)
    assert set(statuses) <= {201, 503}, statuses
    for response in answers:
        if response.status_code == 503:
            _assert_unavailable(problem, response)
    assert statuses[503] > 0, "the kill was never noticed"
    # Closed again by itself (the trial call after the reset time succeeded).
    assert _metric(target, "http_client_circuit_state", **peer) == 0
    rejections = _metric(target, "http_client_circuit_rejections_total", **peer)
    # Nothing unacknowledged exists, everything acknowledged does, once.
    listed = _list_ids(ingress, member)
    assert sorted(listed) == sorted(acknowledged)
    report_measurement(
        "users-fastapi SIGKILLed under order creations",
        f"{len(answers)} creations: {statuses[201]} created, {statuses[503]} 503 problems "
        f"({rejections - rejections_before:g} failed fast by the open circuit); "
        f"{len(listed)} orders listed = acknowledged",
    )


# -- admin-django SIGKILLed while registrations and orders go on ---------------------------------

AUDIT = "/api/audit/events"


def _audit_events(
    client: httpx.Client, headers: dict[str, str], subject_type: str, subject_id: str
) -> list[dict[str, Any]]:
    response = client.get(
        AUDIT,
        params={"subject_type": subject_type, "subject_id": subject_id, "limit": 100},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None, "more events for one subject than one page"
    items: list[dict[str, Any]] = page["items"]
    return items


def test_killed_admin_service_loses_and_duplicates_no_audit_event(
    faulty: Any,
    ingress: httpx.Client,
    register: Any,
    log_in: Any,
    service_headers: Any,
    report_measurement: Any,
) -> None:
    """The audit trail's consumer dies (SIGKILL, restarted by the supervisor) in the middle
    of registrations and orders: once it is back, every change is in the trail once."""
    local = faulty.local
    expected: Counter[tuple[str, str, str]] = Counter()  # (subject type, id, action)
    done = threading.Event()

    def changes() -> None:
        for _ in range(60):  # bounded
            if done.is_set():
                return
            account = register(ingress)
            expected["user", account.user["id"], "user.registered"] += 1
            token = log_in(ingress, account.email, account.password)
            order = ingress.post(ORDERS, json=ORDER, headers=_bearer(token))
            assert order.status_code == 201, order.text
            expected["order", order.json()["id"], "order.created"] += 1

    with ThreadPoolExecutor(1) as pool:
        producing = pool.submit(changes)
        _wait_for("changes before the kill", lambda: len(expected) >= 4 or producing.done())
        pid = local.kill("admin-django")
        local.wait_restarted("admin-django", pid, RECOVERY_TIMEOUT)
        local.wait_service_ready("admin-django", RECOVERY_TIMEOUT)
        _wait_for("changes after the restart", lambda: len(expected) >= 16 or producing.done())
        done.set()
        producing.result(timeout=CLIENT_TIMEOUT * 4)

    reader = service_headers("legacy-flask", of=faulty)
    recorded: Counter[tuple[str, str, str]] = Counter()

    def complete() -> bool:
        recorded.clear()
        for subject_type, subject_id in {(t, i) for t, i, _ in expected}:
            for event in _audit_events(ingress, reader, subject_type, subject_id):
                recorded[subject_type, subject_id, event["action"]] += 1
        assert all(recorded[key] <= 1 for key in recorded), f"duplicates: {recorded}"
        return recorded == expected

    _wait_for("every change in the audit trail", complete, timeout=RECOVERY_TIMEOUT)
    report_measurement(
        "admin-django SIGKILLed under registrations and orders",
        f"{sum(expected.values())} changes, each in the audit trail exactly once after the restart",
    )


# -- PostgreSQL taken away from legacy-flask alone -----------------------------------------------


def test_legacy_flask_without_its_database_is_503_then_recovers_without_restart(
    faulty: Any,
    own_postgres: OwnPostgres,
    ingress: httpx.Client,
    member: str,
    problem: Any,
) -> None:
    local = faulty.local
    pid = local.service_pid("legacy-flask")
    readyz = f"{faulty.ready['services']['legacy-flask']}/readyz"
    before = ingress.post(ORDERS, json=ORDER, headers=_bearer(member))
    assert before.status_code == 201, before.text

    own_postgres.stop()
    try:
        _wait_for("legacy-flask's /readyz failing", lambda: _status(readyz) == 503)
        body = httpx.get(readyz, timeout=5).json()
        assert body["status"] == "fail"
        assert any(check["status"] == "fail" for check in body["checks"].values()), body
        # Within the client's timeout (no hang), a problem (no 500, no stack trace).
        _assert_unavailable(problem, ingress.post(ORDERS, json=ORDER, headers=_bearer(member)))
        _assert_unavailable(problem, ingress.get(ORDERS, headers=_bearer(member)))
        # The other services keep their own databases and answer.
        assert ingress.get(f"{USERS}/me", headers=_bearer(member)).status_code == 200
    finally:
        own_postgres.start()

    _wait_for("legacy-flask's /readyz passing again", lambda: _status(readyz) == 200)
    after = ingress.post(ORDERS, json=ORDER, headers=_bearer(member))
    assert after.status_code == 201, after.text
    assert sorted(_list_ids(ingress, member)) == sorted([before.json()["id"], after.json()["id"]])
    assert local.service_pid("legacy-flask") == pid, "recovered by a restart, not by itself"


# -- SIGTERM under load: drain, finish, no 5xx ----------------------------------------------------


@dataclass
class Load:
    """Requests through the ingress to one server, stopped once its readiness fails (as an
    endpoint controller stops routing to a terminating pod)."""

    base_url: str
    method: str
    path: str
    results: list[tuple[float, int | str]] = field(default_factory=list)

    def call(self, ms: int, client: httpx.Client | None = None) -> tuple[float, int | str]:
        """One request taking ``ms``: when it was sent, and its status or transport error."""
        if client is None:
            with httpx.Client(base_url=self.base_url, timeout=CLIENT_TIMEOUT) as own:
                return self.call(ms, own)
        sent = time.monotonic()
        try:
            response = client.request(self.method, self.path, params={"ms": ms})
        except httpx.TransportError as exc:  # a reset or a refusal: what must not happen
            return sent, type(exc).__name__
        return sent, response.status_code

    def run(self, routed: threading.Event) -> None:
        with httpx.Client(base_url=self.base_url, timeout=CLIENT_TIMEOUT) as client:
            for _ in range(2_000):  # bounded
                if not routed.is_set():
                    return
                self.results.append(self.call(1, client))
                time.sleep(0.01)


@pytest.mark.parametrize("server", ["users-fastapi", "legacy-flask", "admin-django"])
def test_sigterm_drains_then_stops_without_a_5xx(
    faulty: Any, server: str, report_measurement: Any
) -> None:
    local = faulty.local
    method, path = SLOW[server]
    readyz = f"{faulty.ready['services'][server]}/readyz"
    load = Load(faulty.base_url, method, path)
    routed = threading.Event()
    routed.set()
    with ThreadPoolExecutor(4) as pool:
        in_flight = [pool.submit(load.call, IN_FLIGHT_MS)]
        stream = pool.submit(load.run, routed)
        _wait_for("load flowing", lambda: len(load.results) >= 5)
        pid = local.service_pid(server)
        os.kill(pid, signal.SIGTERM)  # the main process only, as the kubelet does
        signalled = time.monotonic()
        try:
            # 503 from the server itself: it fails readiness while it still answers.
            _wait_for(f"{server}'s /readyz answering 503", lambda: _status(readyz) == 503)
            not_ready = time.monotonic()
            # The router (here: this test, as an endpoint controller would) has not caught up
            # yet: requests sent meanwhile are still served. Wait for one to come back.
            _wait_for(
                "a request sent after SIGTERM answered",
                lambda: any(at > signalled for at, _ in list(load.results)),
                timeout=DRAIN_SECONDS * 5,
            )
        finally:
            routed.clear()
        stream.result(timeout=CLIENT_TIMEOUT * 2)
        sent, slow_status = in_flight[0].result(timeout=CLIENT_TIMEOUT * 2)

    assert sent < signalled, "the slow request was meant to be in flight at SIGTERM"
    assert slow_status == 200, f"the request in flight at SIGTERM got {slow_status}"
    statuses = Counter(status for _, status in load.results)
    assert set(statuses) == {200}, f"answers during the drain: {statuses}"
    served_after = [status for at, status in load.results if at > signalled]
    assert served_after, "nothing was sent between SIGTERM and readiness failing"
    new_pid = local.wait_restarted(server, pid, RECOVERY_TIMEOUT)
    local.wait_service_ready(server, RECOVERY_TIMEOUT)
    assert local.service_pid(server) == new_pid
    assert "draining before shutdown" in local.log()
    report_measurement(
        f"SIGTERM {server}",
        f"/readyz failed {1000 * (not_ready - signalled):.0f} ms after SIGTERM; "
        f"{len(load.results)} requests all 200 ({len(served_after)} after SIGTERM), "
        f"the {IN_FLIGHT_MS} ms request in flight answered 200",
    )


def test_up_stops_like_a_rollout_servers_drain_before_the_ingress(
    platform_with: Callable[..., Any],
) -> None:
    """Ctrl-C while a request is in flight on every server: each answers 200 through the
    ingress, and ``polyframe-dev up`` exits 0 with nothing left behind."""
    stopping = platform_with("--drills", "--no-prometheus")
    load = {name: Load(stopping.base_url, *SLOW[name]) for name in SLOW}
    with ThreadPoolExecutor(len(SLOW)) as pool:
        calls = {name: pool.submit(load[name].call, IN_FLIGHT_MS) for name in SLOW}
        time.sleep(0.5)  # the requests reach their servers (one that is later still drains)
        stopping.local.stop_and_check()
        answers = {name: call.result(timeout=CLIENT_TIMEOUT * 2)[1] for name, call in calls.items()}
    assert answers == dict.fromkeys(SLOW, 200)
