"""Rate limits on log-in and registration: per client address, and per account for failures.

Fixed windows of the `limits` library, kept in Redis when ``rate_limit_storage_url`` names one
(every worker and replica counts in it), in this process otherwise or while Redis is down.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from cachetools import TLRUCache
from fastapi import Request
from limits import RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError

from service_kit import metrics
from service_kit.circuit import CircuitBreaker
from service_kit.problems import TYPE_PREFIX, ProblemError
from users_fastapi.models import normalize_email
from users_fastapi.settings import UsersSettings

RATE_LIMITED = f"{TYPE_PREFIX}rate-limited"
#: Prefix of every key the limits keep in Redis.
KEY_PREFIX = "polyframe-users-ratelimit"
#: Seconds a Redis connection or answer may take before a check is decided in process.
REDIS_TIMEOUT_SECONDS = 0.5
#: Seconds between tries of a Redis found unreachable (checks are in process meanwhile).
REDIS_RETRY_SECONDS = 5.0

Clock = Callable[[], float]
T = TypeVar("T")
_log = logging.getLogger(__name__)


def _window_end(_key: str, window: tuple[int, float], _now: float) -> float:
    return window[1]


class BoundedMemoryStorage(Storage):
    """Counters in this process, at most ``max_keys`` (the least recently used dropped).

    `limits`' own MemoryStorage keeps every key until its window ends (hostile keys,
    such as made-up e-mails, would grow it without bound) and scans all of them on each hit.
    """

    def __init__(self, max_keys: int, clock: Clock = time.time) -> None:
        super().__init__()
        self.clock = clock
        #: key -> (hits, end of its window)
        self._windows: TLRUCache[str, tuple[int, float]] = TLRUCache(max_keys, _window_end, clock)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ()  # nothing here fails: no error to wrap

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        hits, end = self._windows.get(key, (0, self.clock() + expiry))
        self._windows[key] = (hits + amount, end)  # a window never moves its end
        return hits + amount

    async def get(self, key: str) -> int:
        return self._windows.get(key, (0, 0.0))[0]

    async def get_expiry(self, key: str) -> float:
        return self._windows.get(key, (0, self.clock()))[1]

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        count = len(self._windows)
        self._windows.clear()
        return count

    async def clear(self, key: str) -> None:
        self._windows.pop(key, None)


class SharedStorage:
    """Redis, shared by every worker and replica; the caller's own storage while it is down.

    A failed call opens a circuit: for ``REDIS_RETRY_SECONDS`` every call goes to the
    process's storage (counted in ``polyframe_rate_limit_fallbacks``), then one call tries
    Redis again. One warning per outage, one line when Redis answers again.
    """

    def __init__(self, url: str, labels: tuple[str, str], key_prefix: str = KEY_PREFIX) -> None:
        # Imported here, not at the top: only a deployment with a shared storage needs the
        # Redis client, and importing it cost every worker's cold start about a tenth of
        # its imports (docs/benchmarks.md, "Cold start and memory").
        import redis.asyncio
        from limits.aio.storage import RedisStorage

        self._pool = redis.asyncio.ConnectionPool.from_url(
            url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self.storage = RedisStorage(
            f"async+{url}",
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=key_prefix,
            connection_pool=self._pool,  # type: ignore[arg-type]  # handed to redis.asyncio.Redis
        )
        self._fallbacks = metrics.RATE_LIMIT_FALLBACKS.labels(*labels)
        self._breaker = CircuitBreaker(failure_threshold=1, reset_seconds=REDIS_RETRY_SECONDS)
        self._down = False

    async def call(self, operation: Callable[[Storage], Awaitable[T]], local: Storage) -> T:
        if self._breaker.allow():
            try:
                result = await operation(self.storage)
            except StorageError as exc:
                self._breaker.failed()
                if not self._down:
                    self._down = True
                    _log.warning(
                        "rate-limit storage (Redis) unreachable, limits are per process "
                        "until it answers: %s",
                        exc.storage_error,
                    )
            except BaseException:
                self._breaker.released()
                raise
            else:
                self._breaker.succeeded()
                if self._down:
                    self._down = False
                    _log.info("rate-limit storage (Redis) answers again: limits are shared")
                return result
        self._fallbacks.inc()
        return await operation(local)

    async def aclose(self) -> None:
        await self._pool.aclose()


class FallbackStorage(Storage):
    """One limit's counters: in ``shared`` (Redis), in ``local`` while Redis is down."""

    def __init__(self, shared: SharedStorage, local: Storage) -> None:
        super().__init__()
        self.shared = shared
        self.local = local

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ()  # SharedStorage.call handles Redis's

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return await self.shared.call(lambda s: s.incr(key, expiry, amount), self.local)

    async def get(self, key: str) -> int:
        return await self.shared.call(lambda s: s.get(key), self.local)

    async def get_expiry(self, key: str) -> float:
        return await self.shared.call(lambda s: s.get_expiry(key), self.local)

    async def check(self) -> bool:
        return await self.shared.call(lambda s: s.check(), self.local)

    async def reset(self) -> int | None:
        return await self.shared.call(lambda s: s.reset(), self.local)

    async def clear(self, key: str) -> None:
        await self.shared.call(lambda s: s.clear(key), self.local)


@dataclass(frozen=True, slots=True)
class FixedWindow:
    """At most ``item.amount`` hits per key in each window (``limits``' fixed window)."""

    item: RateLimitItemPerSecond
    limiter: FixedWindowRateLimiter
    clock: Clock

    async def hit(self, key: str) -> float | None:
        """Count one hit; over the limit, the seconds until the window ends (else None)."""
        if await self.limiter.hit(self.item, key):
            return None
        reset_time, _remaining = await self.limiter.get_window_stats(self.item, key)
        return max(reset_time - self.clock(), 0.0)

    async def clear(self, key: str) -> None:
        await self.limiter.clear(self.item, key)


def too_many_requests(detail: str, retry_after: float) -> ProblemError:
    return ProblemError(
        429,
        detail,
        title="Too many requests",
        type=RATE_LIMITED,
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
    )


def client_address(request: Request) -> str:
    """The client's address as the server resolved it (trusted proxies' X-Forwarded-For)."""
    return request.client.host if request.client else "unknown"


@dataclass(frozen=True, slots=True)
class RateLimits:
    login_per_ip: FixedWindow
    register_per_ip: FixedWindow
    login_failures: FixedWindow
    shared: SharedStorage | None = None

    @classmethod
    def from_settings(
        cls,
        settings: UsersSettings,
        labels: tuple[str, str],
        *,
        clock: Clock = time.time,
        key_prefix: str = KEY_PREFIX,
    ) -> RateLimits:
        """``labels``: the service's metric labels; ``clock``: the in-process counters'
        (Redis keeps its own time)."""
        url = settings.rate_limit_storage_url
        shared = SharedStorage(url, labels, key_prefix) if url else None

        def window(name: str, limit: int, seconds: float) -> FixedWindow:
            # Whole seconds (the unit of `limits` and of Redis's expiry): a fraction rounds up.
            item = RateLimitItemPerSecond(limit, math.ceil(seconds), namespace=name)
            storage: Storage = BoundedMemoryStorage(settings.rate_limit_max_keys, clock)
            if shared is not None:
                storage = FallbackStorage(shared, storage)
            return FixedWindow(item, FixedWindowRateLimiter(storage), clock)

        ip_window = settings.ip_limit_window_seconds
        return cls(
            login_per_ip=window("login-per-ip", settings.login_limit_per_ip, ip_window),
            register_per_ip=window("register-per-ip", settings.register_limit_per_ip, ip_window),
            login_failures=window(
                "login-failures",
                settings.login_failure_limit,
                settings.login_failure_window_seconds,
            ),
            shared=shared,
        )

    async def aclose(self) -> None:
        if self.shared is not None:
            await self.shared.aclose()

    async def check_register(self, request: Request) -> None:
        wait = await self.register_per_ip.hit(client_address(request))
        if wait is not None:
            raise too_many_requests("Too many registrations from this address; try later", wait)

    async def check_login(self, request: Request, email: str) -> None:
        """Before the password is checked: the address's attempts, the account's failures.

        The attempt counts against the account at once, as a failure until it succeeds
        (:meth:`login_succeeded` clears the count): counted only after the password check,
        a burst of guesses sent together would all pass this check before any of them
        counted, however low the limit."""
        wait = await self.login_per_ip.hit(client_address(request))
        if wait is not None:
            raise too_many_requests("Too many log-in attempts from this address; try later", wait)
        wait = await self.login_failures.hit(normalize_email(email))
        if wait is not None:
            raise too_many_requests("Too many failed log-ins for this account; try later", wait)

    async def login_succeeded(self, email: str) -> None:
        await self.login_failures.clear(normalize_email(email))
