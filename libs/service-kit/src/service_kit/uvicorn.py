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
a POST hangs. Here the ``Upgrade`` is ignored and the request answered as HTTP (with
httptools, one that also declares a body is refused: see :class:`HttpToolsProtocol`).

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


#: The detail of the 400 for a request that asks for an upgrade and declares a body.
UPGRADE_WITH_BODY = (
    "A request that asks for a protocol upgrade (Connection: Upgrade) cannot carry a body "
    "here, and no upgrade is served: send it without the Upgrade header"
)


class _Refusing:
    """What both uvicorn protocols share here: the refusal and the linger after it."""

    transport: asyncio.Transport
    server_state: Any
    flow: Any
    _linger_left: int | None = None
    _linger_timer: asyncio.TimerHandle | None = None
    _refusal_detail: str | None = None

    def send_400_response(self, msg: str) -> None:
        self._linger_left = refusals.LINGER_BYTES  # from here on, what arrives is dropped
        if self.flow is not None:
            self.flow.resume_reading()  # paused behind a pipelined request, perhaps
        cycle = getattr(self, "cycle", None)
        if cycle is None or cycle.response_complete:
            self._refuse()
        elif any(queued is cycle for queued, _ in getattr(self, "pipeline", ())):
            # httptools parses pipelined requests ahead: this one waits behind another that
            # is still being answered. Stock uvicorn wrote its 400 into the middle of that
            # answer; here the requests already parsed are answered, then the connection
            # closes (the refused one unanswered) — unless the error is inside the waiting
            # request's own body, which can never be read: then nothing can be answered
            # cleanly, and the connection closes now, as stock uvicorn closes it.
            if cycle.more_body:
                self.transport.close()
            else:
                cycle.keep_alive = False
        elif cycle.more_body and not cycle.response_started:
            # The error is in this request's own body (a broken chunk): it can never be read
            # to its end. Its app is told the client went away (its answer is dropped); the
            # client gets the refusal.
            cycle.disconnected = True
            cycle.message_event.set()
            self._refuse()
        elif cycle.more_body:
            self.transport.close()  # its body broke under an answer already started
        else:
            # Behind a request whose body was read whole, still being answered: that answer
            # is finished, then the connection closes.
            cycle.keep_alive = False

    def _refuse(self) -> None:
        """The 400, a half-close, and the linger (bounded in time here, in bytes by
        :meth:`data_received`)."""
        own = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self.server_state.default_headers
        ]
        detail = self._refusal_detail or DETAIL
        self.transport.write(refusals.answer(400, "Bad Request", detail, own))
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


class _UpgradeWithBodyError(Exception):
    """Raised in httptools' callback: the parser turns it into a parse error (a refusal)."""


class HttpToolsProtocol(_Refusing, _HttpToolsProtocol):
    """uvicorn's httptools protocol (the services' choice), refusing as the kit does.

    A request that asks for an upgrade (``Connection: Upgrade`` and ``Upgrade``) and declares
    a body is refused: httptools ends such a message at its headers and skips the body, and
    uvicorn, having declined the upgrade, parses what follows as the next request — a body
    that holds a request would be served as one (request smuggling; uvicorn issue #2722 for
    ``h2c``). h11 reads the body of such a request, so :class:`H11Protocol` serves it.
    """

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade() and _declares_body(self.headers):
            self._refusal_detail = UPGRADE_WITH_BODY
            raise _UpgradeWithBodyError
        super().on_headers_complete()


def _declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class H11Protocol(_Refusing, _H11Protocol):
    """uvicorn's h11 protocol, refusing as the kit does."""
