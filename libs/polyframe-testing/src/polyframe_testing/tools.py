"""Tests that need what a machine may lack (PostgreSQL, a binary): skipped locally, failed
where ``POLYFRAME_STRICT_TOOLS=1`` (set by ``.ci/run`` in CI) says every tool is required."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def strict_tools() -> bool:
    return os.environ.get("POLYFRAME_STRICT_TOOLS") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip locally; fail where the tool is required (CI)."""
    if strict_tools():
        pytest.fail(f"{reason} (required: POLYFRAME_STRICT_TOOLS=1)", pytrace=False)
    pytest.skip(reason)
