"""Rate limits on log-in and registration: per client address, and per account for failures.

Three fixed-window counters, each a setting (``UsersSettings``):

* log-in attempts per client address (``login_limit_per_ip`` per ``ip_limit_window_seconds``);
* registrations per client address (``register_limit_per_ip``, same window);
* failed log-ins per account (``login_failure_limit`` per ``login_failure_window_seconds``),
  keyed by the normalized e-mail whether or not the account exists (so a 429 reveals
  nothing about which accounts exist). Once an account is over it, log-ins to it are
  refused before the password is even checked, until the window ends; a successful
  log-in clears the account's failures. Another account is never affected.

Over a limit the answer is a 429 problem with ``Retry-After`` (whole seconds until the
window ends). The client address is ``request.client``: the server (uvicorn
``--proxy-headers``) takes it from ``X-Forwarded-For`` only when the connection comes
from a trusted proxy (``--forwarded-allow-ips``); a client's own header is ignored.

The counters live in the worker process: with several workers (or replicas) a client
can get up to that many times the limit. A shared store is not part of the design.
Memory is bounded: each counter keeps at most ``rate_limit_max_keys`` keys, dropping
the least recently used.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from service_kit.problems import TYPE_PREFIX, ProblemError
from users_fastapi.models import normalize_email
from users_fastapi.settings import UsersSettings

RATE_LIMITED = f"{TYPE_PREFIX}rate-limited"


class FixedWindow:
    """At most ``limit`` hits per key in each window of ``window_seconds``."""

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self._max_keys = max_keys
        self._clock = clock
        #: key -> (window start, hits in it)
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def _current(self, key: str, now: float) -> tuple[float, int]:
        start, hits = self._windows.get(key, (now, 0))
        if now - start >= self.window:
            return now, 0
        return start, hits

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may be hit again, or None if it may now (counts nothing)."""
        now = self._clock()
        with self._lock:
            start, hits = self._current(key, now)
        return max(start + self.window - now, 0.0) if hits >= self.limit else None

    def hit(self, key: str) -> float | None:
        """Count one hit; if ``key`` is already at its limit count nothing and return the
        seconds until the window ends."""
        now = self._clock()
        with self._lock:
            start, hits = self._current(key, now)
            if hits >= self.limit:
                return max(start + self.window - now, 0.0)
            self._windows[key] = (start, hits + 1)
            self._windows.move_to_end(key)
            while len(self._windows) > self._max_keys:
                self._windows.popitem(last=False)
        return None

    def clear(self, key: str) -> None:
        with self._lock:
            self._windows.pop(key, None)


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

    @classmethod
    def from_settings(
        cls, settings: UsersSettings, clock: Callable[[], float] = time.monotonic
    ) -> RateLimits:
        keys = settings.rate_limit_max_keys
        ip_window = settings.ip_limit_window_seconds
        return cls(
            login_per_ip=FixedWindow(
                settings.login_limit_per_ip, ip_window, max_keys=keys, clock=clock
            ),
            register_per_ip=FixedWindow(
                settings.register_limit_per_ip, ip_window, max_keys=keys, clock=clock
            ),
            login_failures=FixedWindow(
                settings.login_failure_limit,
                settings.login_failure_window_seconds,
                max_keys=keys,
                clock=clock,
            ),
        )

    def check_register(self, request: Request) -> None:
        wait = self.register_per_ip.hit(client_address(request))
        if wait is not None:
            raise too_many_requests("Too many registrations from this address; try later", wait)

    def check_login(self, request: Request, email: str) -> None:
        """Before the password is checked: the address's attempts, the account's failures.

        The attempt counts against the account at once, as a failure until it succeeds
        (:meth:`login_succeeded` clears the count): counted only after the password check,
        a burst of guesses sent together would all pass this check before any of them
        counted, however low the limit."""
        wait = self.login_per_ip.hit(client_address(request))
        if wait is not None:
            raise too_many_requests("Too many log-in attempts from this address; try later", wait)
        wait = self.login_failures.hit(normalize_email(email))
        if wait is not None:
            raise too_many_requests("Too many failed log-ins for this account; try later", wait)

    def login_succeeded(self, email: str) -> None:
        self.login_failures.clear(normalize_email(email))
