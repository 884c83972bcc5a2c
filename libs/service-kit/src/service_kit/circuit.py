"""A circuit breaker per peer service: stop calling a peer that is down, try again later.

Design: docs/architecture.md, "The circuit breaker".
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable


class CircuitState(enum.IntEnum):
    """Values of ``http_client_circuit_state``."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_seconds <= 0:
            raise ValueError("failure_threshold >= 1 and reset_seconds > 0")
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> CircuitState:
        with self._lock:
            if self._state is CircuitState.OPEN and self._cooled_down():
                return CircuitState.HALF_OPEN
            return self._state

    def allow(self) -> bool:
        """May a call go out now? (A ``True`` in half-open is the one trial.)"""
        with self._lock:
            if self._state is CircuitState.CLOSED:
                return True
            if self._state is CircuitState.OPEN:
                if not self._cooled_down():
                    return False
                self._set(CircuitState.HALF_OPEN)
            if self._trial_running:
                return False
            self._trial_running = True
            return True

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0
            self._trial_running = False
            if self._state is not CircuitState.CLOSED:
                self._set(CircuitState.CLOSED)

    def failed(self) -> None:
        with self._lock:
            self._trial_running = False
            self._failures += 1
            if self._state is CircuitState.HALF_OPEN or (
                self._state is CircuitState.CLOSED and self._failures >= self.failure_threshold
            ):
                self._opened_at = self._clock()
                self._set(CircuitState.OPEN)

    def released(self) -> None:
        """An allowed call ended without a verdict on the peer (cancelled): free the trial."""
        with self._lock:
            self._trial_running = False

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self.reset_seconds

    def _set(self, state: CircuitState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state)
