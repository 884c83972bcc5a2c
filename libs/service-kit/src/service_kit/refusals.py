"""The requests a server refuses itself, before any app sees them (gunicorn: a request line
over 4094 bytes, headers too large, a malformed request; uvicorn: a request its parser
rejects), answered as problem+json like every other answer of the services, and the
connection closed without a reset.

Framework-neutral: the answer's bytes and the linger of a blocking socket. The servers wire
them in: :class:`service_kit.gunicorn.ThreadWorker` (gunicorn's ``util.write_error``) and
:mod:`service_kit.uvicorn` (its HTTP protocol, lingering on the event loop).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterable
from typing import Any

from service_kit.headers import missing as security_headers
from service_kit.problems import PROBLEM_CONTENT_TYPE, Problem

#: After a refusal the server closes the connection; the rest of the request (a body behind
#: a header it refused) is read and dropped first, for at most this long and this many bytes.
#: A socket closed with unread bytes in its receive buffer sends a reset, not a FIN, and the
#: reset can reach the proxy before it has read the answer: Traefik then answers 502 to a
#: request the service refused with a 4xx (seen for a 64 KB header with a body behind it, and
#: for a request line uvicorn's parser refused with a 200 KB body behind it).
LINGER_SECONDS = 1.0
LINGER_BYTES = 8 * 1024 * 1024


def answer(status: int, reason: str, detail: str, extra: Iterable[tuple[str, str]] = ()) -> bytes:
    """A whole HTTP/1.1 response refusing a request: problem+json, ``Connection: close``.

    A server's own refusal page is otherwise the one answer of a service that is not
    problem+json; this one has the same shape as all the others (``instance`` is null: the
    path may be what could not be read). ``extra``: the server's own headers (date, server).
    """
    problem = Problem(status=status, title=reason, detail=detail or reason)
    body = json.dumps(problem.as_dict()).encode()
    headers = [
        *extra,
        ("Connection", "close"),
        ("Content-Type", PROBLEM_CONTENT_TYPE),
        ("Content-Length", str(len(body))),
        *security_headers(PROBLEM_CONTENT_TYPE, ()).items(),
    ]
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers
    )
    return head.encode("latin-1") + b"\r\n" + body


def linger(sock: Any) -> None:
    """Half-close a blocking socket, then read what the peer still sends until it closes
    (bounded by :data:`LINGER_SECONDS` and :data:`LINGER_BYTES`)."""
    with contextlib.suppress(OSError, ValueError):
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        left = LINGER_BYTES
        while left > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            sock.settimeout(remaining)
            data = sock.recv(min(65536, left))
            if not data:
                return
            left -= len(data)
