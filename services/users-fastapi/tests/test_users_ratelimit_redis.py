"""Rate limits in Redis: one limit for every worker, and a Redis that is down or hangs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

from polyframe_testing.telemetry import metric_value
from users_fastapi import ratelimit
from users_fastapi.ratelimit import RateLimits
from users_fastapi.settings import UsersSettings

LABELS = ("users-fastapi", "fastapi")
FALLBACKS = "polyframe_rate_limit_fallbacks_total"


def _settings(url: str, **limits: float) -> UsersSettings:
    return UsersSettings(environment="development", rate_limit_storage_url=url, **limits)


@asynccontextmanager
async def _workers(
    url: str, prefix: str, count: int = 2, **limits: float
) -> AsyncIterator[list[RateLimits]]:
    """``count`` limiters on one storage, as ``count`` uvicorn workers (or replicas) hold."""
    workers = [
        RateLimits.from_settings(_settings(url, **limits), LABELS, key_prefix=prefix)
        for _ in range(count)
    ]
    try:
        yield workers
    finally:
        for worker in workers:
            await worker.aclose()


def _fallbacks() -> float:
    return metric_value(FALLBACKS, service_name=LABELS[0], framework=LABELS[1])


async def test_two_workers_enforce_one_limit(redis_space: Any) -> None:
    async with _workers(
        redis_space.url, redis_space.prefix, login_limit_per_ip=3, ip_limit_window_seconds=30
    ) as (first, second):
        assert await first.login_per_ip.hit("203.0.113.7") is None
        assert await second.login_per_ip.hit("203.0.113.7") is None
        assert await first.login_per_ip.hit("203.0.113.7") is None
        wait = await second.login_per_ip.hit("203.0.113.7")
        assert wait is not None
        assert 0 < wait <= 30
        assert await first.login_per_ip.hit("203.0.113.7") is not None
        assert await second.login_per_ip.hit("198.51.100.9") is None  # another address
    # The counts are Redis's, under this prefix (each refused hit counted too).
    assert redis_space.keys() == {
        "login-per-ip/203.0.113.7/3/30/second": 5,
        "login-per-ip/198.51.100.9/3/30/second": 1,
    }
    ttl = redis_space.client.ttl(f"{redis_space.prefix}:login-per-ip/203.0.113.7/3/30/second")
    assert 0 < ttl <= 30


async def test_a_success_in_one_worker_clears_the_failures_for_all(
    redis_space: Any,
) -> None:
    async with _workers(redis_space.url, redis_space.prefix, login_failure_limit=2) as workers:
        first, second = workers
        assert await first.login_failures.hit("ada@example.com") is None
        assert await second.login_failures.hit("ada@example.com") is None
        assert await first.login_failures.hit("ada@example.com") is not None
        await second.login_succeeded("ADA@example.com")
        assert await first.login_failures.hit("ada@example.com") is None


async def test_a_burst_across_workers_gets_no_more_than_the_limit(
    redis_space: Any,
) -> None:
    async with _workers(
        redis_space.url, redis_space.prefix, count=4, login_failure_limit=3
    ) as workers:
        answers = await asyncio.gather(
            *(workers[n % 4].login_failures.hit("burst@example.com") for n in range(20))
        )
    assert sum(answer is None for answer in answers) == 3, answers


async def test_a_redis_that_is_down_degrades_to_the_process_with_one_warning(
    dead_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = _fallbacks()
    caplog.set_level(logging.INFO, logger=ratelimit.__name__)
    async with _workers(
        dead_redis_url, "unused", count=1, login_limit_per_ip=2, ip_limit_window_seconds=30
    ) as (worker,):
        # The limit still holds, in this process, and a refused hit still says how long.
        assert await worker.login_per_ip.hit("203.0.113.7") is None
        assert await worker.login_per_ip.hit("203.0.113.7") is None
        wait = await worker.login_per_ip.hit("203.0.113.7")
        assert wait is not None
        assert 29 <= wait <= 30
        assert await worker.login_failures.hit("ada@example.com") is None
    warnings = [
        r for r in caplog.records if r.name == ratelimit.__name__ and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "per process" in warnings[0].getMessage()
    assert _fallbacks() - before >= 5  # every operation above, each decided in process


async def test_a_redis_that_never_answers_degrades_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis that accepts and then says nothing: bounded by the timeout, never a hang."""
    monkeypatch.setattr(ratelimit, "REDIS_TIMEOUT_SECONDS", 0.2)
    connections: list[asyncio.StreamWriter] = []

    async def accept_and_stay_silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with _workers(f"redis://127.0.0.1:{port}/0", "unused", count=1) as (worker,):
            async with asyncio.timeout(5):
                assert await worker.register_per_ip.hit("203.0.113.7") is None
        assert connections, "the limiter never tried the silent Redis"
    finally:
        await _close(*connections)
        server.close()
        await server.wait_closed()


async def _close(*writers: asyncio.StreamWriter) -> None:
    for writer in writers:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


class _Proxy:
    """A TCP relay to Redis on a port of its own, to take Redis away and give it back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        assert self._server is not None
        self._server.close()
        await _close(*self._writers)  # each relay ends on its closed streams
        await asyncio.gather(*self._relays)
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        relay = asyncio.current_task()
        assert relay is not None
        self._relays.add(relay)
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65_536):
                    sink.write(data)
                    await sink.drain()

        try:
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        finally:
            await _close(writer, upstream_writer)
            self._writers -= {writer, upstream_writer}
            self._relays.discard(relay)


async def test_an_outage_warns_once_and_the_limit_is_shared_again_after_it(
    redis_space: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ratelimit, "REDIS_RETRY_SECONDS", 0.2)
    caplog.set_level(logging.INFO, logger=ratelimit.__name__)
    redis = urlsplit(redis_space.url)
    proxy = _Proxy(redis.port or 6379)
    await proxy.start()
    url = f"redis://127.0.0.1:{proxy.port}{redis.path}"
    try:
        async with _workers(url, redis_space.prefix, count=1, register_limit_per_ip=100) as (
            worker,
        ):
            assert await worker.register_per_ip.hit("a") is None
            await proxy.stop()
            for _ in range(3):  # the outage: answered in process, one warning for all of it
                assert await worker.register_per_ip.hit("a") is None
                await asyncio.sleep(0.25)  # past the retry interval: Redis is tried again
            await proxy.start()
            await asyncio.sleep(0.25)
            assert await worker.register_per_ip.hit("a") is None
            assert await worker.register_per_ip.hit("a") is None
    finally:
        await proxy.stop()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == ratelimit.__name__]
    assert [level for level, _ in messages] == [logging.WARNING, logging.INFO], messages
    assert redis_space.keys() == {"register-per-ip/a/100/60/second": 3}  # before and after
