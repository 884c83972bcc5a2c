"""uvicorn's HTTP protocols, refusing what their parser rejects as every service refuses.

uvicorn answers a request its parser rejects (a byte >= 0x80 or a control byte in the
request line, a malformed header) itself, before any app sees it: a plain-text 400 and an
immediate close. That answer is the one of the service that is not problem+json, and the
close leaves the rest of the request (a body behind the refused line) unread in the socket,
so the kernel resets the connection; the reset can reach Traefik before it has read the
answer, and Traefik then tells the client 502 for a request the service refused with a 400
(found by the raw fuzz). These protocols answer with :func:`service_kit.refusals.answer`,
half-close, and read and drop what the peer still sends until it closes, bounded as
gunicorn's refusals are (:data:`~service_kit.refusals.LINGER_SECONDS`,
:data:`~service_kit.refusals.LINGER_BYTES`).

They also never switch a connection to WebSocket: the services serve none, yet stock uvicorn
hands any request carrying ``Upgrade: websocket`` to its WebSocket stack, where a handshake
to an app without WebSocket routes is answered 500, a GET without a key a plain-text 400, and
a POST hangs. Here the ``Upgrade`` is ignored and the request answered as HTTP.

Serve with ``uvicorn --http service_kit.uvicorn:HttpToolsProtocol`` (or ``…:H11Protocol``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol as _H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol

from service_kit import refusals

#: The detail of the 400 (uvicorn's own words name no cause either: its parser gives none).
DETAIL = (
    "The request could not be parsed as HTTP/1.1: its request line or a header is malformed "
    "(bytes outside ASCII or control bytes in the target must be percent-encoded)"
)


class _Refusing:
    """What both uvicorn protocols share here: the refusal and the linger after it."""

    transport: asyncio.Transport
    server_state: Any
    flow: Any
    _linger_left: int | None = None
    _linger_timer: asyncio.TimerHandle | None = None

    def send_400_response(self, msg: str) -> None:
        self._linger_left = refusals.LINGER_BYTES  # from here on, what arrives is dropped
        if self.flow is not None:
            self.flow.resume_reading()  # paused behind a pipelined request, perhaps
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not cycle.response_complete:
            # Pipelined behind a request still being answered (stock uvicorn wrote its 400
            # into the middle of that response): the requests already parsed are answered,
            # then the connection closes, the refused one unanswered.
            cycle.keep_alive = False
            return
        own = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self.server_state.default_headers
        ]
        self.transport.write(refusals.answer(400, "Bad Request", DETAIL, own))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_timer = asyncio.get_running_loop().call_later(
            refusals.LINGER_SECONDS, self.transport.close
        )

    def data_received(self, data: bytes) -> None:
        if self._linger_left is None:
            super().data_received(data)  # type: ignore[misc]
            return
        self._linger_left -= len(data)  # dropped: the request was refused
        if self._linger_left <= 0:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    # eof_received is uvicorn's (returns None): the transport closes once the peer has.

    def _should_upgrade_to_ws(self) -> bool:
        """Never: the services serve no WebSocket, so an ``Upgrade`` is ignored (RFC 9110,
        7.8) and the request answered as HTTP. uvicorn would otherwise hand any request
        carrying ``Upgrade: websocket`` to its WebSocket stack: a POST then hung (the
        handshake never ends), a GET without a key got a plain-text 400."""
        return False

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn's warning would advise installing a WebSocket library, wrongly here; an
        # ignored Upgrade is the client's business, not an operator's.
        pass


class HttpToolsProtocol(_Refusing, _HttpToolsProtocol):
    """uvicorn's httptools protocol (the services' choice), refusing as the kit does."""


class H11Protocol(_Refusing, _H11Protocol):
    """uvicorn's h11 protocol, refusing as the kit does."""
