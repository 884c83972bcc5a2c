"""Fakes of the soak's tests: a target nothing listens on, members and staff whose answers
come from httpx's MockTransport, and a results dict as a run returns it."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from polyframe_bench.soak import sender
from polyframe_bench.soak.actors import Member, Staff
from polyframe_bench.soak.ledger import Ledger
from polyframe_bench.soak.memory import rss_report
from polyframe_bench.soak.settings import Settings, Target
from polyframe_bench.soak.stats import Stats

Handler = Callable[[httpx.Request], httpx.Response]
TARGET = Target("http://127.0.0.1:1", ("ada.acting", "pw"))


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender, "RETRY_BACKOFF", 0.0)


def _mocked(handler: Handler) -> httpx.Client:
    return httpx.Client(base_url=TARGET.base_url, transport=httpx.MockTransport(handler))


@pytest.fixture
def http_sender() -> Callable[[Handler, Stats], sender.HttpSender]:
    """A sender whose answers come from ``handler``."""

    def make(handler: Handler, stats: Stats) -> sender.HttpSender:
        return sender.HttpSender(_mocked(handler), stats, threading.Event())

    return make


@pytest.fixture
def member() -> Callable[[int, Handler, Stats], Member]:
    """A registered, logged-in member whose answers come from ``handler``."""

    def make(index: int, handler: Handler, stats: Stats) -> Member:
        made = Member(
            index, "test", TARGET, Settings(), stats, Ledger(), queue.Queue(), threading.Event()
        )
        made.client.close()
        made.client = made.sender.client = _mocked(handler)
        made.token = "t"
        made.token_renew_at = datetime.now(UTC) + timedelta(hours=1)
        made.user_id = f"user-{index}"
        return made

    return make


@pytest.fixture
def staff() -> Callable[[list[Member], Handler, Stats], Staff]:
    """The staff member, whose answers come from ``handler``."""

    def make(members: list[Member], handler: Handler, stats: Stats) -> Staff:
        made = Staff(TARGET, Settings(), stats, Ledger(), queue.Queue(), members, threading.Event())
        made.client.close()
        made.client = made.sender.client = _mocked(handler)
        return made

    return make


@pytest.fixture
def results() -> Callable[..., dict[str, Any]]:
    """A run's results around ``stats`` and ``memory`` (default: RSS not measured)."""

    def make(stats: Stats, memory: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "meta": {
                "base_url": TARGET.base_url,
                "date": "2026-11-27T00:00:00+00:00",
                "git": "abc1234",
                "cpus": 2,
                "python": "3.11.7",
                "load_seconds": 30.0,
                "setup_seconds": 3.0,
                "settings": {"users": 8, "rate": 40, "staff_rate": 2, "warmup": 6},
            },
            "requests": stats.summary(),
            "load_totals": {},
            "writes": {"orders acknowledged": 3, "orders verified exactly once": 3},
            "events": {
                "expected": 4,
                "verified": 4,
                "missing": 0,
                "duplicated": 0,
                "unexpected": 0,
                "seconds_to_complete": 0.5,
            },
            "rss": memory or rss_report({}, {}, {}, 0, Settings()),
            "failures": [],
        }

    return make
