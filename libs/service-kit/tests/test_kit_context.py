"""Request context: accepted request id shapes."""

from __future__ import annotations

import asyncio

import pytest

from service_kit.context import (
    accept_request_id,
    current_request_id,
    new_request_id,
    request_id_var,
)


@pytest.mark.parametrize(
    "value", ["abc", "req-123", "a.b:c_d-e", "0" * 128, "5f0c6b2e-8a7d-4f5e-9c1b-2d3e4f5a6b7c"]
)
def test_well_formed_id_kept(value: str) -> None:
    assert accept_request_id(value) == value


@pytest.mark.parametrize(
    "value",
    [None, "", "a" * 129, "a b", "abc\n", "abc\r\nX-Injected: 1", "\nabc", "ü", "a/b", "a\x00"],
)
def test_malformed_id_replaced(value: str | None) -> None:
    replaced = accept_request_id(value)
    assert replaced != value
    assert len(replaced) == 32
    assert all(ch in "0123456789abcdef" for ch in replaced)


def test_new_ids_are_unique() -> None:
    assert len({new_request_id() for _ in range(100)}) == 100


def test_current_request_id_follows_the_context_var() -> None:
    assert current_request_id() is None
    token = request_id_var.set("r-1")
    try:
        assert current_request_id() == "r-1"
    finally:
        request_id_var.reset(token)
    assert current_request_id() is None


async def test_request_id_isolated_between_tasks() -> None:
    seen: dict[str, str | None] = {}

    async def handle(name: str) -> None:
        request_id_var.set(name)
        await asyncio.sleep(0)
        seen[name] = current_request_id()

    await asyncio.gather(handle("one"), handle("two"))
    assert seen == {"one": "one", "two": "two"}
    assert current_request_id() is None
