"""Fault drills (``ORDERS_DRILLS=true``, never in production): cause the failure on purpose.

``POST /api/orders/_drills/hold-thread?ms=2000`` keeps a worker thread busy, as a
slow dependency does; a burst of them fills the thread pool: busy threads reach
the capacity, later requests queue for a thread, and
``PolyframeThreadPoolNearExhaustion`` fires. Not in the OpenAPI document.
"""

from __future__ import annotations

import time

from flask import Blueprint, request

from service_kit.problems import invalid_field

bp = Blueprint("drills", __name__, url_prefix="/api/orders/_drills")


@bp.post("/hold-thread")
def hold_thread() -> dict[str, int]:
    raw = request.args.get("ms", "1000")
    # Up to two minutes: a request held over a minute is what PolyframeHungRequest is about.
    if not raw.isdigit() or not 1 <= int(raw) <= 120_000:
        raise invalid_field("ms", "An integer from 1 to 120000", location="query")
    time.sleep(int(raw) / 1000)
    return {"held_ms": int(raw)}
