"""The drain on SIGTERM: readiness fails at once, the real shutdown follows after the delay."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from service_kit import drain
from service_kit.health import DRAINING, run_async_checks, run_sync_checks


@pytest.fixture(autouse=True)
def not_draining() -> Iterator[None]:
    DRAINING.clear()
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)
    DRAINING.clear()


def test_begin_marks_draining_then_runs_the_shutdown_once() -> None:
    done = threading.Event()
    calls: list[str] = []

    def shutdown() -> None:
        calls.append("shutdown")
        done.set()

    assert drain.begin(0.05, shutdown)
    assert DRAINING.is_set()
    assert calls == [], "the shutdown must wait for the drain"
    assert not drain.begin(0.0, shutdown), "a second SIGTERM must not start a second drain"
    assert done.wait(5)
    assert calls == ["shutdown"]


def test_readiness_fails_while_draining_liveness_checks_unchanged() -> None:
    checks = {"database": lambda: None}
    assert all(result.ok for result in run_sync_checks(checks).values())
    DRAINING.set()
    results = run_sync_checks(checks)
    assert results["database"].ok
    assert not results["shutdown"].ok
    assert "shutting down" in (results["shutdown"].detail or "")


def test_async_readiness_fails_while_draining() -> None:
    async def database() -> None:
        return None

    DRAINING.set()
    results = asyncio.run(run_async_checks({"database": database}))
    assert results["database"].ok
    assert not results["shutdown"].ok


def test_install_puts_the_drain_in_front_of_the_server_handler() -> None:
    received = threading.Event()

    def server_handler(signum: int, frame: FrameType | None) -> None:
        received.set()

    signal.signal(signal.SIGTERM, server_handler)
    drain.install(0.2)
    drain.install(0.2)  # installing twice must not drain twice as long
    os.kill(os.getpid(), signal.SIGTERM)
    assert DRAINING.wait(5), "SIGTERM did not start the drain"
    assert not received.is_set(), "the server's handler ran before the drain was over"
    assert received.wait(5), "the server's handler never ran"


def test_no_drain_configured_leaves_the_handler_alone() -> None:
    def server_handler(signum: int, frame: FrameType | None) -> None:
        pass

    signal.signal(signal.SIGTERM, server_handler)
    drain.install(0)
    assert signal.getsignal(signal.SIGTERM) is server_handler
