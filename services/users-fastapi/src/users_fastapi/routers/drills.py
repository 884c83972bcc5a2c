"""Fault drills (``USERS_DRILLS=true``, never in production): cause the failure on purpose.

``POST /api/users/_drills/block-loop?ms=300`` blocks the event loop from inside an
async handler, as a synchronous call in async code does (a driver without async
support, a CPU-heavy hash): every other request of this worker waits meanwhile.
The event-loop monitor counts it under this route, the lag histogram shows it,
and ``PolyframeEventLoopBlocked`` fires.

``GET /api/users/_drills/slow?ms=2000`` is a slow request that does not block: it
awaits, as a call to a slow peer does (the shutdown tests keep one in flight).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Query

router = APIRouter(prefix="/api/users/_drills", tags=["drills"], include_in_schema=False)


@router.post("/block-loop")
async def block_loop(ms: Annotated[int, Query(ge=1, le=10_000)] = 300) -> dict[str, int]:
    time.sleep(ms / 1000)  # noqa: ASYNC251 - the point of the drill
    return {"blocked_ms": ms}


@router.get("/slow")
async def slow(ms: Annotated[int, Query(ge=1, le=30_000)] = 1000) -> dict[str, int]:
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}
