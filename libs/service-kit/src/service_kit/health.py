"""Health endpoints' shared shape.

``/healthz``: the process serves (no dependency is touched).
``/readyz``: every readiness check passes (database reachable, migrations at
head, …); otherwise 503 with the failing check named.

Body: ``{"status": "ok"|"fail", "service": name, "checks": {name: {"status", "detail"}}}``.
"""

from __future__ import annotations

import asyncio
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
