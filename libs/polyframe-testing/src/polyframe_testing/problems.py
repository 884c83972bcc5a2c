"""RFC 9457 problems in tests: the assertions every suite makes of an error answer, and the
answer a fake peer (behind ``httpx.MockTransport``) gives."""

from __future__ import annotations

from typing import Any

import httpx

from service_kit.problems import PROBLEM_CONTENT_TYPE, TYPE_PREFIX

FIELDS = ("type", "title", "status", "detail", "instance")


def check_problem(
    body: dict[str, Any], status: int, *, instance: str | None = None, kind: str | None = None
) -> dict[str, Any]:
    """``body`` is a problem with ``status`` (non-empty type, title and detail), of
    ``instance`` and of type ``kind`` where given; return it."""
    missing = [name for name in FIELDS if name not in body]
    assert not missing, f"problem lacks {missing}: {body}"
    assert body["status"] == status, body
    for name in ("type", "title", "detail"):
        assert isinstance(body[name], str), body
        assert body[name].strip(), body
    if instance is not None:
        assert body["instance"] == instance, body
    if kind is not None:
        assert body["type"] == f"{TYPE_PREFIX}{kind}", body
    return body


def problem_response(status: int, detail: str) -> httpx.Response:
    """A fake peer's problem answer."""
    return httpx.Response(
        status,
        json={"type": "about:blank", "title": "", "status": status, "detail": detail},
        headers={"Content-Type": PROBLEM_CONTENT_TYPE},
    )
