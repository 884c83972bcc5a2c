"""The asyncio event loop, watched: its lag, and the request handlers that block it.

Design: docs/architecture.md, "Runtime signals", "The event loop".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import MutableMapping
from typing import Any

from service_kit import metrics
from service_kit.telemetry import RequestState, Telemetry

log = logging.getLogger("service_kit.loopmonitor")

#: The route label of a block that happened outside any request (start-up, a background task).
NO_REQUEST = "__no_request__"


class LoopMonitor:
    def __init__(
        self, telemetry: Telemetry, *, interval: float = 0.05, threshold: float = 0.1
    ) -> None:
        self.telemetry = telemetry
        self.interval = interval
        self.threshold = threshold
        #: Requests in flight, by the asyncio task that serves them (the ASGI adapter's).
        self.requests: dict[asyncio.Task[Any], tuple[RequestState, MutableMapping[str, Any]]] = {}
        self._heartbeat = time.monotonic()
        self._stop = threading.Event()
        self._probe: asyncio.Task[None] | None = None
        self._watchdog: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start on the running loop (from the lifespan)."""
        self._loop = asyncio.get_running_loop()
        self._heartbeat = time.monotonic()
        self._stop.clear()
        self._probe = self._loop.create_task(self._run_probe(), name="polyframe-loop-probe")
        self._watchdog = threading.Thread(
            target=self._watch, name="polyframe-loop-watchdog", daemon=True
        )
        self._watchdog.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self._watchdog is not None:
            self._watchdog.join(timeout=1)

    # -- requests ----------------------------------------------------------------------------

    def request_started(self, state: RequestState, scope: MutableMapping[str, Any]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.requests[task] = (state, scope)

    def request_finished(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.requests.pop(task, None)

    # -- the probe (on the loop) ---------------------------------------------------------------

    async def _run_probe(self) -> None:
        loop = asyncio.get_running_loop()
        lag = metrics.EVENT_LOOP_LAG.labels(*self.telemetry.labels)
        while True:
            self._heartbeat = time.monotonic()
            expected = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            lag.observe(max(0.0, loop.time() - expected))

    # -- the watchdog (its own thread) ---------------------------------------------------------

    def _watch(self) -> None:
        blocked_beat: float | None = None  # the last heartbeat before the block
        route = NO_REQUEST
        while not self._stop.wait(self.interval / 2):
            beat = self._heartbeat
            if blocked_beat is None:
                silent = time.monotonic() - beat
                if silent > self.interval + self.threshold:
                    blocked_beat = beat
                    route = self._blocked(silent)
            elif beat != blocked_beat:
                # The probe ran again at ``beat``: the loop is free. It was due at
                # ``blocked_beat + interval``; everything after that was the block.
                seconds = max(0.0, beat - (blocked_beat + self.interval))
                metrics.EVENT_LOOP_BLOCKED.labels(*self.telemetry.labels, route).inc(seconds)
                blocked_beat = None

    def _blocked(self, silent: float) -> str:
        """The loop is held right now: name the request holding it, and count it."""
        task = asyncio.current_task(self._loop) if self._loop is not None else None
        entry = self.requests.get(task) if task is not None else None
        route, trace_id = NO_REQUEST, None
        if entry is not None:
            state, scope = entry
            route = metrics.route_label(getattr(scope.get("route"), "path", None))
            state.span.add_event(
                "event_loop.blocked",
                {
                    "blocked_ms_so_far": round(silent * 1000, 1),
                    "threshold_ms": self.threshold * 1000,
                },
            )
            state.span.set_attribute("event_loop.blocked", True)
            context = state.span.get_span_context()
            if context.is_valid:
                trace_id = format(context.trace_id, "032x")
        metrics.EVENT_LOOP_BLOCKS.labels(*self.telemetry.labels, route).inc()
        log.warning(
            "event loop blocked by a request handler",
            extra={
                "route": route,
                "blocked_ms_so_far": round(silent * 1000, 1),
                **({"trace_id": trace_id} if trace_id else {}),
            },
        )
        return route
