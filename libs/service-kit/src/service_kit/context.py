"""Per-request context shared by logging, the service client and the adapters.

Held in ``contextvars`` so it follows the request across ``await`` points and
is isolated between threads of a threaded server.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

REQUEST_ID_HEADER = "X-Request-ID"
#: Incoming ids are accepted only in this shape, so a client cannot inject
#: newlines or megabytes into every log line.
_REQUEST_ID_SHAPE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

request_id_var: ContextVar[str | None] = ContextVar("polyframe_request_id", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(value: str | None) -> str:
    """Keep a well-formed incoming ``X-Request-ID``; otherwise make a new one."""
    if value and _REQUEST_ID_SHAPE.fullmatch(value):
        return value
    return new_request_id()


def current_request_id() -> str | None:
    return request_id_var.get()
