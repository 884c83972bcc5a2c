"""Fault drills (``USERS_DRILLS=true``, never in production): cause the failure on purpose.

``POST /api/users/_drills/block-loop?ms=300`` blocks the event loop from inside an
async handler, as a synchronous call in async code does (a driver without async
support, a CPU-heavy hash): every other request of this worker waits meanwhile.
The event-loop monitor counts it under this route, the lag histogram shows it,
and ``PolyframeEventLoopBlocked`` fires.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query

router = APIRouter(prefix="/api/users/_drills", tags=["drills"], include_in_schema=False)


@router.post("/block-loop")
async def block_loop(ms: Annotated[int, Query(ge=1, le=10_000)] = 300) -> dict[str, int]:
    time.sleep(ms / 1000)  # noqa: ASYNC251 - the point of the drill
    return {"blocked_ms": ms}
