"""The soak's HTTP sender: every attempt recorded, 429s waited out, failed writes retried.

Retries are tenacity's; a write is sent again exactly as it was (same key, same body).
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)

from polyframe_bench.soak.stats import Stats

#: Attempts of a write (the first included) on a timeout, connection error or 5xx.
WRITE_ATTEMPTS = 5
#: Seconds before a write's first retry, doubling up to ``MAX_BACKOFF``.
RETRY_BACKOFF = 0.2
MAX_BACKOFF = 3.0
#: 429s honoured (Retry-After) before an attempt is given up.
RATE_LIMIT_ATTEMPTS = 6
MAX_RETRY_AFTER = 30.0

Answer = httpx.Response | None


def retry_after(response: httpx.Response, default: float = 1.0) -> float:
    """Seconds a 429 asks to wait (``Retry-After``: seconds or an HTTP date), bounded."""
    value = response.headers.get("retry-after", "").strip()
    seconds = default
    if value.isdigit():
        seconds = float(value)
    elif value:
        with contextlib.suppress(TypeError, ValueError):
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def describe(response: Answer) -> str:
    """An answer as a problem report names it."""
    if response is None:
        return "no answer (timeouts or connection errors)"
    return f"HTTP {response.status_code} {response.text[:200]!r}"


def _failed(response: Answer) -> bool:
    return response is None or response.status_code >= 500


def _rate_limited(response: Answer) -> bool:
    return response is not None and response.status_code == 429


def _last(state: RetryCallState) -> Answer:
    """When the attempts run out, the last answer is the answer (no exception)."""
    assert state.outcome is not None
    answer: Answer = state.outcome.result()
    return answer


def _wait_retry_after(state: RetryCallState) -> float:
    response = _last(state)
    return retry_after(response) if response is not None else 0.0


class HttpSender:
    """One client's requests, each recorded in ``stats``; waits end early once ``stop`` is set."""

    def __init__(self, client: httpx.Client, stats: Stats, stop: threading.Event) -> None:
        self.client = client
        self.stats = stats
        self.stop = stop

    def send(
        self, kind: str, method: str, url: str, *, retry: bool = False, **kwargs: Any
    ) -> Answer:
        """The final answer (None: no answer after the attempts allowed).

        ``retry``: a timeout, connection error or 5xx is tried again (``WRITE_ATTEMPTS`` in
        all, backing off); a 429 is always waited out first, within each attempt."""
        attempts = Retrying(
            retry=retry_if_result(_failed),
            stop=stop_after_attempt(WRITE_ATTEMPTS if retry else 1),
            wait=wait_exponential(multiplier=RETRY_BACKOFF, max=MAX_BACKOFF),
            retry_error_callback=_last,
        )
        answer: Answer = attempts(self._answer, kind, method, url, **kwargs)
        return answer

    def _answer(self, kind: str, method: str, url: str, **kwargs: Any) -> Answer:
        """One attempt's answer, its 429s waited out (``Retry-After``, interruptible)."""
        rate_limited = Retrying(
            retry=retry_if_result(_rate_limited),
            stop=stop_after_attempt(RATE_LIMIT_ATTEMPTS),
            wait=_wait_retry_after,
            sleep=self._pause,
            retry_error_callback=_last,
        )
        answer: Answer = rate_limited(self._once, kind, method, url, **kwargs)
        return answer

    def _pause(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def _once(self, kind: str, method: str, url: str, **kwargs: Any) -> Answer:
        started = time.perf_counter()
        response: Answer = None
        outcome: int | str
        try:
            response = self.client.request(method, url, **kwargs)
            outcome = response.status_code
        except httpx.TimeoutException:
            outcome = "timeout"
        except httpx.TransportError:
            outcome = "connection error"
        self.stats.record(kind, outcome, time.perf_counter() - started)
        return response
