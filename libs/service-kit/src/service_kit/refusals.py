"""The requests gunicorn refuses itself, before any app sees them (a request line over 4094
bytes, headers too large, a malformed request), answered as problem+json like every other
answer of the services, and the connection closed without a reset.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any

from gunicorn import util as gunicorn_util

from service_kit.headers import missing as security_headers
from service_kit.problems import PROBLEM_CONTENT_TYPE, Problem


def write_problem(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error``, answering problem+json instead of an HTML page.

    gunicorn refuses some requests itself, before any application sees them: a request
    line over 4094 bytes (414), headers too large (431), a malformed request (400). Its
    page is the one answer of a service that is not problem+json; this one has the same
    shape as all the others (``instance`` is null: the path may be what could not be read).
    """
    problem = Problem(status=status_int, title=reason, detail=mesg or reason)
    body = json.dumps(problem.as_dict()).encode()
    headers = {
        "Connection": "close",
        "Content-Type": PROBLEM_CONTENT_TYPE,
        "Content-Length": str(len(body)),
        **security_headers(PROBLEM_CONTENT_TYPE, ()),
    }
    head = f"HTTP/1.1 {status_int} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + b"\r\n" + body)
    _linger(sock)


#: After a refusal gunicorn closes the connection; the rest of the request (a body behind a
#: header it refused) is read and dropped first, for at most this long and this many bytes.
LINGER_SECONDS = 1.0
LINGER_BYTES = 8 * 1024 * 1024


def _linger(sock: Any) -> None:
    """Half-close, then read what the peer still sends until it closes (bounded).

    A socket closed with unread bytes in its receive buffer sends a reset, not a FIN, and the
    reset can reach the proxy before it has read the answer: Traefik then answers 502 to a
    request the service refused with a 4xx (seen for a 64 KB header with a body behind it).
    """
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
