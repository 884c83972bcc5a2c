"""The one way a Polyframe service calls another.

* A timeout is always set (connect, read, write and pool).
* Idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE, and a POST carrying an
  ``Idempotency-Key``) are retried with exponential backoff and jitter on
  connection errors, timeouts and 502/503/504; other requests are sent once.
* The caller's service credential is attached, the request id propagated.
* Whatever goes wrong on the way (refused, reset, timed out, or the peer
  answering 502/503/504 after the last attempt) surfaces as one exception:
  :class:`ServiceUnavailableError`, which adapters render as 503 problem+json.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from service_kit.context import REQUEST_ID_HEADER, current_request_id
from service_kit.credentials import ACTING_FOR_HEADER, basic_credential
from service_kit.problems import ProblemError, dependency_unavailable
from service_kit.tracecontext import TRACEPARENT_HEADER, outgoing_traceparent

log = logging.getLogger("service_kit.client")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRYABLE_STATUS = frozenset({502, 503, 504})


class ServiceUnavailableError(Exception):
    """The peer service could not be reached, timed out, or said it is unavailable."""

    def __init__(self, peer: str, reason: str) -> None:
        super().__init__(f"{peer} unavailable: {reason}")
        self.peer = peer
        self.reason = reason

    def as_problem(self) -> ProblemError:
        return dependency_unavailable(f"The {self.peer} service is unavailable right now")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    peer: str
    base_url: str
    caller: str
    secret: str | None = None
    timeout_seconds: float = 3.0
    max_attempts: int = 3
    backoff_base_seconds: float = 0.05
    backoff_max_seconds: float = 1.0


class _RetryPlan:
    """Decides, after each failed attempt, whether and when to try again."""

    def __init__(self, config: ClientConfig, method: str, headers: Mapping[str, str]) -> None:
        self.config = config
        retryable = method.upper() in IDEMPOTENT_METHODS or (
            method.upper() == "POST" and any(k.lower() == "idempotency-key" for k in headers)
        )
        self.attempts = config.max_attempts if retryable else 1
        # The whole call, retries included, stays within a bounded time.
        self.deadline = time.monotonic() + config.timeout_seconds * self.attempts

    def delay_after(self, attempt: int, reason: str) -> float:
        """Seconds to wait before the next attempt; raises when there is none."""
        ceiling = min(
            self.config.backoff_max_seconds, self.config.backoff_base_seconds * 2 ** (attempt - 1)
        )
        delay = random.uniform(ceiling / 2, ceiling)
        if attempt >= self.attempts or time.monotonic() + delay >= self.deadline:
            raise ServiceUnavailableError(self.config.peer, reason)
        log.warning(
            "retrying call", extra={"peer": self.config.peer, "attempt": attempt, "reason": reason}
        )
        return delay


def _headers(
    config: ClientConfig, headers: Mapping[str, str] | None, acting_for: str | None
) -> dict[str, str]:
    merged = {"User-Agent": f"polyframe-{config.caller}"}
    if config.secret:
        merged["Authorization"] = basic_credential(config.caller, config.secret)
    request_id = current_request_id()
    if request_id:
        merged[REQUEST_ID_HEADER] = request_id
    traceparent = outgoing_traceparent()
    if traceparent:
        merged[TRACEPARENT_HEADER] = traceparent
    if acting_for:
        merged[ACTING_FOR_HEADER] = acting_for
    merged.update(headers or {})
    return merged


def _timeout(config: ClientConfig) -> httpx.Timeout:
    return httpx.Timeout(config.timeout_seconds, connect=min(1.0, config.timeout_seconds))


class ServiceClient:
    """Synchronous client (Flask, Django). Reuses its connection pool: create once."""

    def __init__(self, config: ClientConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self._http = httpx.Client(
            base_url=config.base_url, timeout=_timeout(config), transport=transport
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        acting_for: str | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        merged = _headers(self.config, headers, acting_for)
        plan = _RetryPlan(self.config, method, merged)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(method, path, headers=merged, **kwargs)
            except httpx.TransportError as exc:
                reason = type(exc).__name__
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return response
                reason = f"HTTP {response.status_code}"
            time.sleep(plan.delay_after(attempt, reason))

    def close(self) -> None:
        self._http.close()


class AsyncServiceClient:
    """Asynchronous client (FastAPI). Create in the lifespan, close on shutdown."""

    def __init__(
        self, config: ClientConfig, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self._http = httpx.AsyncClient(
            base_url=config.base_url, timeout=_timeout(config), transport=transport
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        acting_for: str | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        merged = _headers(self.config, headers, acting_for)
        plan = _RetryPlan(self.config, method, merged)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(method, path, headers=merged, **kwargs)
            except httpx.TransportError as exc:
                reason = type(exc).__name__
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return response
                reason = f"HTTP {response.status_code}"
            await asyncio.sleep(plan.delay_after(attempt, reason))

    async def aclose(self) -> None:
        await self._http.aclose()
