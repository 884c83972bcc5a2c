"""Health endpoints' shared shape.

``/healthz``: the process serves (no dependency is touched).
``/readyz``: every readiness check passes (database reachable, migrations at
head, …); otherwise 503 with the failing check named.

Body: ``{"status": "ok"|"fail", "service": name, "checks": {name: {"status", "detail"}}}``.

The cold start is recorded at the first ``/readyz`` that passes; a server asks itself right
after it starts (:func:`probe_until_ready`, :func:`check_until_ready`) rather than waiting for
whatever probes it from outside, whenever that happens to come.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

HEALTH_PATHS = ("/healthz", "/readyz")

#: Set when the server was told to stop (see :mod:`service_kit.drain`): readiness fails
#: from then on while the server keeps serving for its drain time, so that whatever routes
#: traffic to it stops sending new requests before it stops accepting them. Liveness is
#: not affected: a draining server is alive.
DRAINING = threading.Event()

SyncCheck = Callable[[], str | None]
AsyncCheck = Callable[[], Awaitable[str | None]]


class CheckFailedError(Exception):
    """Raised by a readiness check; its message is shown in the report."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str | None
    duration_ms: float

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "ok" if self.ok else "fail",
            "duration_ms": round(self.duration_ms, 2),
        }
        if self.detail:
            body["detail"] = self.detail
        return body


def report(service: str, results: Mapping[str, CheckResult]) -> tuple[int, dict[str, Any]]:
    ok = all(result.ok for result in results.values())
    body = {
        "status": "ok" if ok else "fail",
        "service": service,
        "checks": {name: result.as_dict() for name, result in results.items()},
    }
    return (200 if ok else 503), body


def liveness(service: str) -> tuple[int, dict[str, Any]]:
    return report(service, {})


def _failure_text(exc: BaseException) -> str:
    if isinstance(exc, CheckFailedError):
        return str(exc)
    # A dependency's own error text may carry hosts or credentials: keep only its kind.
    return f"{type(exc).__name__}"


def _shutdown(results: dict[str, CheckResult]) -> dict[str, CheckResult]:
    if DRAINING.is_set():
        results["shutdown"] = CheckResult(
            False, "the server is shutting down (draining its requests)", 0.0
        )
    return results


def run_sync_checks(checks: Mapping[str, SyncCheck]) -> dict[str, CheckResult]:
    """Readiness: run ``checks``; a server that is shutting down is never ready."""
    results: dict[str, CheckResult] = {}
    for name, check in checks.items():
        started = time.perf_counter()
        try:
            detail = check()
            results[name] = CheckResult(True, detail, (time.perf_counter() - started) * 1000)
        except Exception as exc:
            results[name] = CheckResult(
                False, _failure_text(exc), (time.perf_counter() - started) * 1000
            )
    return _shutdown(results)


async def run_async_checks(
    checks: Mapping[str, AsyncCheck], timeout_seconds: float = 2.0
) -> dict[str, CheckResult]:
    """Run the checks one after another, each bounded so /readyz never hangs."""
    results: dict[str, CheckResult] = {}
    for name, check in checks.items():
        started = time.perf_counter()
        try:
            detail = await asyncio.wait_for(check(), timeout_seconds)
            results[name] = CheckResult(True, detail, (time.perf_counter() - started) * 1000)
        except TimeoutError:
            results[name] = CheckResult(
                False,
                f"timed out after {timeout_seconds:g}s",
                (time.perf_counter() - started) * 1000,
            )
        except Exception as exc:
            results[name] = CheckResult(
                False, _failure_text(exc), (time.perf_counter() - started) * 1000
            )
    return _shutdown(results)


def wait_until_ready(
    service: str,
    checks: Mapping[str, SyncCheck],
    *,
    timeout_seconds: float,
    interval_seconds: float = 3.0,
    say: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Run readiness ``checks`` until they all pass, for at most ``timeout_seconds``.

    For what must not start before the service's dependencies are there (an outbox
    dispatcher, a seed Job: not before the migrations are applied): the same checks as
    ``/readyz``, the same failure texts. Says each new failure once and the outcome (on
    stderr, or ``say``); True when they pass, False at the deadline.
    """
    tell = say or (lambda line: print(line, file=sys.stderr, flush=True))
    deadline = clock() + timeout_seconds
    last = ""
    while True:
        results = run_sync_checks(checks)
        failing = "; ".join(f"{name}: {r.detail}" for name, r in results.items() if not r.ok)
        if not failing:
            details = "; ".join(f"{name}: {r.detail}" for name, r in results.items())
            tell(f"{service}: ready ({details})")
            return True
        if clock() >= deadline:
            tell(f"{service}: not ready after {timeout_seconds:g}s ({failing})")
            return False
        if failing != last:
            tell(f"{service}: waiting ({failing})")
            last = failing
        sleep(max(0.0, min(interval_seconds, deadline - clock())))


# -- the cold start: ready, as the server itself finds it ------------------------------------------

#: Pauses between two self-checks after a start: short at first (the cold start is measured
#: to the first pass), then longer while a dependency stays down; for at most
#: :data:`SELF_CHECK_SECONDS`, after which the first outside probe that passes records it.
SELF_CHECK_PAUSES = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
SELF_CHECK_SECONDS = 300.0


def _pause(attempt: int) -> float:
    return SELF_CHECK_PAUSES[min(attempt, len(SELF_CHECK_PAUSES) - 1)]


def probe_until_ready(
    host: str,
    port: int,
    *,
    path: str = "/readyz",
    timeout_seconds: float = SELF_CHECK_SECONDS,
    request_seconds: float = 30.0,
) -> bool:
    """GET ``path`` on ``host:port`` until it answers 200 (True), for at most
    ``timeout_seconds``; False at the deadline or on an answer that is neither 200 nor 503
    (the app has no readiness route: asking again would not change that).

    For gunicorn's master, right after it binds: the request waits in the listening
    socket until a worker has loaded the app, and that worker's ``/readyz`` records the
    cold start. ``request_seconds`` is long: a worker may take a while to load the app.
    """
    deadline = time.monotonic() + timeout_seconds
    for attempt in itertools.count():
        connection = http.client.HTTPConnection(host, port, timeout=request_seconds)
        try:
            connection.request("GET", path, headers={"User-Agent": "polyframe-self-check"})
            status = connection.getresponse().status
        except (OSError, http.client.HTTPException):
            status = None  # not answering yet (a worker loading the app, a restart)
        finally:
            connection.close()
        if status == 200:
            return True
        if status not in (None, 503) or time.monotonic() >= deadline:
            return False
        time.sleep(min(_pause(attempt), max(0.0, deadline - time.monotonic())))
    return False  # pragma: no cover - the loop returns


async def check_until_ready(
    checks: Callable[[], Mapping[str, AsyncCheck]],
    *,
    timeout_seconds: float = SELF_CHECK_SECONDS,
    stop: asyncio.Event | None = None,
) -> bool:
    """Run the readiness ``checks`` until they all pass (True), for at most
    ``timeout_seconds`` or until ``stop`` is set (False): for an ASGI app, from its
    lifespan, right after start-up.

    ``stop`` as well as cancelling: Python 3.11's ``wait_for`` (in each check) loses a
    cancellation that arrives as the check ends.
    """
    deadline = time.monotonic() + timeout_seconds
    for attempt in itertools.count():
        results = await run_async_checks(checks())
        if all(result.ok for result in results.values()):
            return True
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            return False
        await asyncio.sleep(min(_pause(attempt), max(0.0, deadline - time.monotonic())))
    return False  # pragma: no cover - the loop returns
