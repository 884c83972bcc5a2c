"""Health report shape and the check runners."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
from collections.abc import Iterator
from typing import Any

from service_kit.health import (
    HEALTH_PATHS,
    CheckFailedError,
    CheckResult,
    check_until_ready,
    liveness,
    probe_until_ready,
    report,
    run_async_checks,
    run_sync_checks,
    wait_until_ready,
)


def test_liveness() -> None:
    assert liveness("users") == (200, {"status": "ok", "service": "users", "checks": {}})


def test_report_ok() -> None:
    status, body = report("users", {"db": CheckResult(True, "postgres 16", 1.2345)})
    assert status == 200
    assert body == {
        "status": "ok",
        "service": "users",
        "checks": {"db": {"status": "ok", "duration_ms": 1.23, "detail": "postgres 16"}},
    }


def test_report_one_failure_fails_all() -> None:
    status, body = report(
        "users",
        {"db": CheckResult(True, None, 1.0), "migrations": CheckResult(False, "behind", 2.0)},
    )
    assert status == 503
    assert body["status"] == "fail"
    assert body["checks"]["db"] == {"status": "ok", "duration_ms": 1.0}
    assert body["checks"]["migrations"] == {
        "status": "fail",
        "duration_ms": 2.0,
        "detail": "behind",
    }


def test_health_paths() -> None:
    assert set(HEALTH_PATHS) == {"/healthz", "/readyz"}


def test_sync_checks() -> None:
    def ok() -> str:
        return "fine"

    def failed() -> str:
        raise CheckFailedError("database at revision none")

    def crashed() -> str:
        raise ConnectionError("could not connect to postgres://admin:hunter2@db:5432")

    results = run_sync_checks({"ok": ok, "failed": failed, "crashed": crashed})
    assert list(results) == ["ok", "failed", "crashed"]
    assert results["ok"].ok
    assert results["ok"].detail == "fine"
    assert not results["failed"].ok
    assert results["failed"].detail == "database at revision none"
    assert not results["crashed"].ok
    assert results["crashed"].detail == "ConnectionError"
    assert all(result.duration_ms >= 0 for result in results.values())


async def test_async_checks_pass_and_fail() -> None:
    async def ok() -> str | None:
        return None

    async def failed() -> str | None:
        raise CheckFailedError("migrations behind")

    results = await run_async_checks({"ok": ok, "failed": failed})
    assert results["ok"].ok
    assert results["ok"].detail is None
    assert not results["failed"].ok
    assert results["failed"].detail == "migrations behind"


async def test_async_check_timeout() -> None:
    cancelled = asyncio.Event()

    async def hangs() -> str | None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return None  # pragma: no cover

    async def after() -> str | None:
        return "ran"

    results = await run_async_checks({"hangs": hangs, "after": after}, timeout_seconds=0.05)
    assert not results["hangs"].ok
    assert results["hangs"].detail == "timed out after 0.05s"
    assert "timed out" in (results["hangs"].detail or "")
    assert cancelled.is_set()  # the hung check was cancelled, not left running
    # A hung check does not stop the others.
    assert results["after"].ok
    assert results["after"].detail == "ran"


async def test_async_check_exception_text_not_leaked() -> None:
    async def crashed() -> str | None:
        raise OSError("connect to 10.0.0.7:5432 as admin:hunter2 failed")

    class DriverError(Exception):
        pass

    async def driver() -> str | None:
        raise DriverError("password authentication failed for user postgres")

    results = await run_async_checks({"crashed": crashed, "driver": driver})
    assert results["crashed"].detail == "OSError"
    assert results["driver"].detail == "DriverError"
    _, body = report("users", results)
    assert "hunter2" not in str(body)
    assert "password" not in str(body)


class _Clock:
    """A clock that only moves when the waiter sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_until_ready_waits_for_the_checks_to_pass() -> None:
    answers = iter([ConnectionRefusedError(), CheckFailedError("behind"), "r2"])

    def database() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock, said = _Clock(), []
    ready = wait_until_ready(
        "users", {"database": database}, timeout_seconds=60, interval_seconds=3,
        say=said.append, clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    assert ready
    assert clock.sleeps == [3, 3]
    # Each failure said once, with /readyz's texts (an exception's kind, never its message).
    assert said == [
        "users: waiting (database: ConnectionRefusedError)",
        "users: waiting (database: behind)",
        "users: ready (database: r2)",
    ]


def test_wait_until_ready_gives_up_at_the_deadline() -> None:
    def database() -> str:
        raise CheckFailedError("database at revision none, code expects r2")

    clock, said = _Clock(), []
    ready = wait_until_ready(
        "orders", {"database": database}, timeout_seconds=10, interval_seconds=3,
        say=said.append, clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    assert not ready
    assert clock.now == 10  # it waited exactly its bound: 3 + 3 + 3 + 1
    assert said == [
        "orders: waiting (database: database at revision none, code expects r2)",
        "orders: not ready after 10s (database: database at revision none, code expects r2)",
    ]


# --- the server asks itself: the cold start ---------------------------------------------------


@contextlib.contextmanager
def answering(statuses: list[int]) -> Iterator[tuple[int, list[str]]]:
    """An HTTP server on 127.0.0.1 answering ``statuses`` in turn (the last one again and
    again); yields its port and the paths asked."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(statuses[min(len(asked), len(statuses)) - 1])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def test_probe_until_ready_asks_again_while_not_ready() -> None:
    with answering([503, 503, 200]) as (port, asked):
        assert probe_until_ready("127.0.0.1", port, timeout_seconds=60)
    assert asked == ["/readyz"] * 3


def test_probe_until_ready_stops_where_there_is_no_readiness_route() -> None:
    with answering([404]) as (port, asked):
        assert not probe_until_ready("127.0.0.1", port, timeout_seconds=60)
    assert asked == ["/readyz"]


def test_probe_until_ready_gives_up_at_the_deadline() -> None:
    with answering([503]) as (port, asked):
        assert not probe_until_ready("127.0.0.1", port, timeout_seconds=0)
    assert asked == ["/readyz"]


async def test_check_until_ready_runs_the_checks_until_they_pass() -> None:
    answers = iter([CheckFailedError("not yet"), CheckFailedError("not yet"), None])

    async def check() -> str:
        answer = next(answers)
        if answer is not None:
            raise answer
        return "fine"

    assert await check_until_ready(lambda: {"db": check}, timeout_seconds=60)


async def test_check_until_ready_stops_when_told() -> None:
    async def never() -> str:
        raise CheckFailedError("down")

    stop = asyncio.Event()
    stop.set()
    assert not await check_until_ready(lambda: {"db": never}, timeout_seconds=60, stop=stop)
