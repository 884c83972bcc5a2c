"""The one way a Polyframe service calls another: timeouts, retries of what is safe to
resend, credentials and trace headers, a circuit per peer, and one exception for "unavailable"
(:class:`ServiceUnavailableError`, a 503 problem). Details: docs/architecture.md.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

from service_kit import metrics
from service_kit.circuit import CircuitBreaker, CircuitState
from service_kit.context import REQUEST_ID_HEADER, current_request_id
from service_kit.credentials import ACTING_FOR_HEADER, basic_credential
from service_kit.problems import ProblemError, dependency_unavailable
from service_kit.telemetry import Telemetry
from service_kit.tracecontext import propagate
from service_kit.tracing import tracer_provider

if TYPE_CHECKING:
    from service_kit.settings import ServiceSettings

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
    #: Failed attempts in a row that open the peer's circuit (calls then fail at once).
    breaker_failures: int = 5
    #: Seconds an open circuit waits before it lets one trial call through.
    breaker_reset_seconds: float = 5.0

    @classmethod
    def for_service(cls, settings: ServiceSettings, peer: str, base_url: str) -> ClientConfig:
        """``settings``' service calling ``peer``: its credential, timeout and attempts."""
        return cls(
            peer=peer,
            base_url=base_url,
            caller=settings.service_name,
            secret=settings.service_secret.get_secret_value() if settings.service_secret else None,
            timeout_seconds=settings.client_timeout_seconds,
            max_attempts=settings.client_max_attempts,
        )


class _Meter:
    """The client's metrics: each attempt's duration and outcome, and the retries."""

    def __init__(self, config: ClientConfig, telemetry: Telemetry | None) -> None:
        self.enabled = telemetry is not None and telemetry.enabled
        self.labels = (*telemetry.labels, config.peer) if telemetry is not None else ()
        if self.enabled:  # charted (and alerted on) from a closed circuit, not from its first trip
            self.circuit(CircuitState.CLOSED)
            metrics.HTTP_CLIENT_CIRCUIT_REJECTIONS.labels(*self.labels)

    def attempt(self, method: str, started: float, status: int | None, error: str | None) -> None:
        if self.enabled:
            metrics.HTTP_CLIENT_DURATION.labels(
                *self.labels,
                metrics.method_label(method),
                metrics.status_label(status) if status is not None else "",
                error or "",
            ).observe(time.perf_counter() - started)

    def retry(self, reason: str) -> None:
        if self.enabled:
            metrics.HTTP_CLIENT_RETRIES.labels(*self.labels, reason).inc()

    def circuit(self, state: CircuitState) -> None:
        if self.enabled:
            metrics.HTTP_CLIENT_CIRCUIT_STATE.labels(*self.labels).set(int(state))

    def rejected(self) -> None:
        if self.enabled:
            metrics.HTTP_CLIENT_CIRCUIT_REJECTIONS.labels(*self.labels).inc()


class _RetryPlan:
    """Decides, after each failed attempt, whether and when to try again."""

    def __init__(
        self, config: ClientConfig, method: str, headers: Mapping[str, str], meter: _Meter
    ) -> None:
        self.config = config
        self.meter = meter
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
        self.meter.retry(reason)
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
    propagate(merged)
    if acting_for:
        merged[ACTING_FOR_HEADER] = acting_for
    merged.update(headers or {})
    return merged


def _timeout(config: ClientConfig) -> httpx.Timeout:
    return httpx.Timeout(config.timeout_seconds, connect=min(1.0, config.timeout_seconds))


class ServiceClient:
    """The client of Flask, Django and the outbox dispatcher. Reuses its pool: create once."""

    def __init__(
        self,
        config: ClientConfig,
        transport: httpx.BaseTransport | None = None,
        *,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.config = config
        self._meter = _Meter(config, telemetry)
        self.breaker = CircuitBreaker(
            failure_threshold=config.breaker_failures,
            reset_seconds=config.breaker_reset_seconds,
            on_change=self._meter.circuit,
        )
        self._meter.circuit(CircuitState.CLOSED)
        self._http = httpx.Client(
            base_url=config.base_url, timeout=_timeout(config), transport=transport
        )
        if telemetry is not None and telemetry.tracing:
            # Client spans (and the trace header) from OpenTelemetry's httpx instrumentation.
            HTTPXClientInstrumentor.instrument_client(self._http, tracer_provider=tracer_provider())

    def _admit(self) -> None:
        """Raise at once, without calling, while the peer's circuit is open."""
        if not self.breaker.allow():
            self._meter.rejected()
            raise ServiceUnavailableError(self.config.peer, "circuit open")

    def _failed(self, method: str, started: float, exc: httpx.TransportError) -> str:
        reason = type(exc).__name__
        self._meter.attempt(method, started, None, reason)
        self.breaker.failed()
        return reason

    def _answered(self, method: str, started: float, status: int) -> bool:
        """Record an answer; True when it is final (anything but 502/503/504)."""
        self._meter.attempt(method, started, status, None)
        if status in RETRYABLE_STATUS:
            self.breaker.failed()
            return False
        self.breaker.succeeded()
        return True

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
        plan = _RetryPlan(self.config, method, merged, self._meter)
        attempt = 0
        while True:
            attempt += 1
            self._admit()
            started = time.perf_counter()
            try:
                response = self._http.request(method, path, headers=merged, **kwargs)
            except httpx.TransportError as exc:
                reason = self._failed(method, started, exc)
            except BaseException:
                self.breaker.released()
                raise
            else:
                if self._answered(method, started, response.status_code):
                    return response
                reason = f"HTTP {response.status_code}"
            time.sleep(plan.delay_after(attempt, reason))

    def close(self) -> None:
        self._http.close()
