"""uvicorn's HTTP protocol (httptools), refusing what its parser rejects as every service
refuses, and never switching to another protocol.

uvicorn answers a request its parser rejects (a byte >= 0x80 or a control byte in the
request line, a malformed header, broken chunks) itself, before any app sees it: a
plain-text 400 and an immediate close. That answer is the one of the service that is not
problem+json, and the close leaves the rest of the request (a body behind the refused line)
unread in the socket, so the kernel resets the connection; the reset can reach Traefik
before it has read the answer, and Traefik then tells the client 502 for a request the
service refused with a 400 (found by the raw fuzz). This protocol answers with
:func:`service_kit.refusals.answer`, half-closes, and reads and drops what the peer still
sends until it closes, bounded as gunicorn's refusals are
(:data:`~service_kit.refusals.LINGER_SECONDS`, :data:`~service_kit.refusals.LINGER_BYTES`).

It also never switches a connection to another protocol: the services serve no WebSocket,
yet stock uvicorn hands any request carrying ``Upgrade: websocket`` to its WebSocket stack,
where a handshake to an app without WebSocket routes is answered 500, a GET without a key a
plain-text 400, and a POST hangs. Here an ``Upgrade`` is ignored (RFC 9110, 7.8) and the
request answered as HTTP — except one that declares a body, which is refused: httptools ends
such a message at its headers and skips the body, and uvicorn, having declined the upgrade,
parsed what followed as the next request, so a body holding a request was served as one
(request smuggling; uvicorn issue #2722, for ``h2c``).

Serve with ``uvicorn --http service_kit.uvicorn:HttpToolsProtocol``.
"""

from __future__ import annotations

import asyncio

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol

from service_kit import refusals

#: The details of the 400s (uvicorn's own words name no cause: its parser gives none).
MALFORMED_HEAD = (
    "The request could not be parsed as HTTP/1.1: its request line or a header is malformed "
    "(bytes outside ASCII or control bytes in the target must be percent-encoded)"
)
MALFORMED_BODY = (
    "The request body's framing is broken (its chunked encoding or a chunk size is "
    "malformed); send the whole body again"
)
UPGRADE_WITH_BODY = (
    "A request that asks for a protocol upgrade (Connection: Upgrade) cannot carry a body "
    "here, and no upgrade is served: send it without the Upgrade header"
)


class _UpgradeWithBodyError(Exception):
    """Raised in httptools' callback: the parser turns it into a parse error (a refusal)."""


class HttpToolsProtocol(_HttpToolsProtocol):
    """uvicorn's httptools protocol (the services' choice), refusing as the kit does."""

    #: Bytes the linger may still drop (None: not refused).
    _linger_left: int | None = None
    _linger_timer: asyncio.TimerHandle | None = None
    #: True from a request's headers to the end of its body: a parse error then is in the
    #: body of ``self.cycle``'s request, else in the line or headers of a new request.
    _in_body = False
    _refusal_detail: str = MALFORMED_HEAD

    # -- the parser's callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_body = False
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade() and _declares_body(self.headers):
            self._refusal_detail = UPGRADE_WITH_BODY
            raise _UpgradeWithBodyError
        super().on_headers_complete()
        self._in_body = True

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    # -- the connection ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._linger_left is not None:
            self._linger_left -= len(data)  # dropped: the connection refused a request
            if self._linger_left <= 0:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        while data:
            try:
                self.parser.feed_data(data)
                return
            except httptools.HttpParserError:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("")
                return
            except httptools.HttpParserUpgrade as upgrade:
                # Declined (nothing is upgraded here): what follows the request's headers is
                # the next request (stock uvicorn dropped the rest of this read).
                data = data[upgrade.args[0] :]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    # eof_received is uvicorn's (returns None): the transport closes once the peer has.

    def _should_upgrade_to_ws(self) -> bool:
        return False  # no service serves a WebSocket

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn's warning would advise installing a WebSocket library, wrongly here; an
        # ignored Upgrade is the client's business, not an operator's.
        pass

    # -- the refusal -----------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """Answer the refusal when nothing else is being answered, never in the middle of an
        answer (stock uvicorn wrote its 400 wherever it was)."""
        self._linger_left = refusals.LINGER_BYTES  # from here on, what arrives is dropped
        self.flow.resume_reading()  # paused behind a pipelined request, perhaps
        cycle = self.cycle
        queued = any(waiting is cycle for waiting, _ in self.pipeline)
        if not self._in_body:
            # A new request's line or headers: answered once every request parsed before it is.
            if cycle is None or cycle.response_complete:
                self._refuse(self._refusal_detail)
            else:
                cycle.keep_alive = False  # the last one parsed: the connection closes after it
        elif queued or (cycle.response_started and not cycle.response_complete):
            # The body of a request waiting behind another, or of one whose answer has started,
            # broke: nothing can be answered cleanly; closed, as stock uvicorn closes it.
            self.transport.close()
        elif cycle.response_complete:
            # Its body broke after the app had answered without reading it (a 413, a 415):
            # the request has its answer; the connection ends.
            self._refuse(None)
        else:
            # The body of the request being read broke: it can never be read to its end. Its
            # app is told the client went away (its own answer is dropped); the client gets
            # the refusal.
            cycle.waiting_for_100_continue = False  # no 100 Continue after the half-close
            cycle.disconnected = True
            cycle.message_event.set()
            self._refuse(MALFORMED_BODY)

    def _refuse(self, detail: str | None) -> None:
        """The 400 (none if ``detail`` is None), a half-close, and the linger (bounded in
        time here, in bytes by :meth:`data_received`)."""
        if detail is not None:
            own = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in self.server_state.default_headers
            ]
            self.transport.write(refusals.answer(400, "Bad Request", detail, own))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_timer = asyncio.get_running_loop().call_later(
            refusals.LINGER_SECONDS, self.transport.close
        )


def _declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False
