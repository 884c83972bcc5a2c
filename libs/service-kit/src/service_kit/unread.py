"""A request body the WSGI app left unread, settled before the response starts, so that the
response's ``Connection`` header tells the truth.

gunicorn's gthread worker reads what the app left of a request body only after the
response, and gives up at 64 KiB (or when reading the body had failed): it then closes the
connection, though its response announced keep-alive. A proxy that pooled the connection
(Traefik) may by then have sent its next request on it, and answers that one 502 (a POST is
not retried); and a proxy still writing a large body into a connection the server closed gets
a reset and answers 502 too. Measured here (raw-HTTP fuzz through Traefik, 9 x 1,500 cases):
17 such 502s before, none after.

So when the response starts (:func:`settling_start_response`), the rest of the body is read
and dropped, as the kit's 413s already do (up to
:data:`~service_kit.inputs.DISCARD_LIMIT`, within :data:`DRAIN_SECONDS` in all); only a body
that cannot be settled (larger, slower, or broken) makes the response ``Connection: close``.

The one rule for an app behind it: read the request body before starting the response (a
streamed response that reads ``wsgi.input`` as it goes would find it drained). Every view of
the services does.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from gunicorn.http.body import Body, ChunkedReader, LengthReader

from service_kit.inputs import DISCARD_LIMIT

#: How long the rest of a body may take to arrive, in all (gunicorn's own bound on a drain).
DRAIN_SECONDS = 5.0
_CHUNK = 64 * 1024


def left_unread(body: Body) -> int | None:
    """Bytes of the body not yet read; None when unknown (a chunked body not read to its
    end)."""
    buffered = len(body.buf.getvalue())
    reader = body.reader
    if isinstance(reader, LengthReader):
        return int(reader.length) + buffered
    if isinstance(reader, ChunkedReader):
        return buffered if reader.parser is None and not reader.buf.getvalue() else None
    return None


@contextlib.contextmanager
def _deadline(unreader: Any, seconds: float) -> Iterator[None]:
    """Every socket read of ``unreader`` (gunicorn's, which a body reads through, one
    ``recv`` per call of its ``chunk``) within ``seconds`` from now in all: a client that
    trickles its body cannot hold the thread longer."""
    sock = getattr(unreader, "sock", None)
    if sock is None:  # not a socket's (a test's iterable): nothing can stall
        yield
        return
    deadline = time.monotonic() + seconds
    prior = sock.gettimeout()
    read_chunk = unreader.chunk

    def chunk(*args: Any, **kwargs: Any) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the rest of the request body did not arrive in time")
        sock.settimeout(remaining)
        data: bytes = read_chunk(*args, **kwargs)
        return data

    unreader.chunk = chunk
    try:
        yield
    finally:
        del unreader.chunk  # the class's own again
        with contextlib.suppress(OSError):
            sock.settimeout(prior)


def settle(request: Any) -> bool:
    """Read and drop what is left of the body of gunicorn's ``request``; True when the
    connection can serve another request after this response."""
    body = getattr(request, "body", None)
    if not isinstance(body, Body):
        return True
    if getattr(body, "failed", False):  # a read raised: where the next request starts is unknown
        return False
    left = left_unread(body)
    if left == 0:
        return True
    if left is not None and left > DISCARD_LIMIT:
        return False
    read = 0
    try:
        with _deadline(request.unreader, DRAIN_SECONDS):
            while read <= DISCARD_LIMIT:
                chunk = body.read(_CHUNK)
                if not chunk:
                    return True
                read += len(chunk)
        return False
    except Exception:  # a timeout, a reset, a broken chunk: the connection is done
        return False


def settling_start_response(start_response: Any) -> Any:
    """gunicorn's ``start_response`` (its response's bound method), first settling the
    request's body (:func:`settle`) and, when it cannot, marking the response
    ``Connection: close`` (gunicorn writes the headers with the body's first bytes, so
    marking it here is in time)."""
    response: Any = getattr(start_response, "__self__", None)
    request = getattr(response, "req", None)
    if response is None or request is None:  # not gunicorn's: nothing to settle
        return start_response

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if not settle(request):
            response.force_close()
        return start_response(status, headers, exc_info)

    return start
