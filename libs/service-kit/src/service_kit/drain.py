"""Graceful shutdown that fails readiness first (SIGTERM: ``/readyz`` 503, serve on, then stop).

Design: docs/architecture.md, "Graceful shutdown".
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from service_kit.health import DRAINING

log = logging.getLogger("service_kit.drain")

#: Seconds a server has after SIGTERM, its drain included, before it is killed: uvicorn's
#: ``--timeout-graceful-shutdown`` and gunicorn's ``graceful_timeout``.
GRACEFUL_SECONDS = 15
#: A drain must be shorter than this, leaving the requests in flight time to finish.
MAX_SECONDS = GRACEFUL_SECONDS / 2


def begin(seconds: float, then: Callable[[], Any]) -> bool:
    """Start draining (once): ``then`` runs after ``seconds``. False if already draining."""
    if DRAINING.is_set():
        return False
    DRAINING.set()
    log.info("draining before shutdown", extra={"drain_seconds": seconds})
    timer = threading.Timer(seconds, then)
    timer.daemon = True
    timer.start()
    return True


def install(seconds: float) -> None:
    """Put the drain in front of this process's SIGTERM handler (uvicorn's)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous) or getattr(previous, "polyframe_drain", False):
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        begin(seconds, lambda: previous(signum, frame))

    on_sigterm.polyframe_drain = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, on_sigterm)
