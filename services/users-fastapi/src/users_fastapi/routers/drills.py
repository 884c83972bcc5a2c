"""Fault drills (``USERS_DRILLS=true``, never in production): cause the failure on purpose.

What each causes: docs/architecture.md, "Runtime signals", "Fault drills".
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
