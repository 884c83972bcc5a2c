"""uvicorn with the kit's protocol (``service_kit.uvicorn``), on a real uvicorn.

A request uvicorn's parser rejects is answered before any app sees it. Stock uvicorn answers
plain text and closes at once, leaving the body behind the refused line unread, so the
kernel resets the connection: Traefik, still writing that body, then loses the answer and
tells its client 502 (the raw fuzz's seed 3949370739, case 127: a request line with bytes
``\\xff\\xfe`` in its query, a 200 KB body behind it). With the kit's protocol the answer is
problem+json and the connection ends with a FIN after the whole request was read. The tiny
app here reads the whole body and answers ``got <its length>``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from polyframe_testing.ports import free_port
from service_kit import refusals

#: How long the tests wait for the server (never reached when it works; not a threshold).
PATIENCE = 30.0

APP = textwrap.dedent(
    """
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"got %d" % size})
    """
)

#: Over the socket buffers' share the server reads at once: some of it is unread at a close.
BODY = b'{"pad": "' + b"x" * (256 * 1024) + b'"}'
REFUSED = [
    b"POST /register?user_id=\xff\xfe HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
    b"POST /register HTTP/1.1\r\nHost: t\r\nBad Header\r\nContent-Length: %d\r\n\r\n%s"
    % (len(BODY), BODY),
]
KIT = "service_kit.uvicorn:HttpToolsProtocol"


def serve(tmp_path: Path, protocol: str) -> Iterator[int]:
    (tmp_path / "tinyapp.py").write_text(APP)
    port = free_port()
    log = (tmp_path / "uvicorn.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tinyapp:app", "--host", "127.0.0.1",
         "--port", str(port), "--http", protocol, "--no-access-log"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail((tmp_path / "uvicorn.log").read_text(errors="replace"))
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(PATIENCE)
        log.close()


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    """uvicorn with the kit's protocol; its log is ``tmp_path / "uvicorn.log"``."""
    yield from serve(tmp_path, KIT)


def talk(port: int, *parts: bytes, half_close: bool = False) -> tuple[bytes, list[OSError]]:
    """Send the request's parts (from a thread: the server reads while it answers; a short
    pause between parts, so that the server reads them apart) and read the answer to its
    end. ``half_close``: then say the request ended (the linger ends when the peer closes).
    Returns the answer and the errors met sending or reading (a reset is seen by whichever
    of the two meets it first)."""
    errors: list[OSError] = []
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as connection:

        def send() -> None:
            try:
                for index, part in enumerate(parts):
                    if index:
                        time.sleep(0.2)
                    connection.sendall(part)
                if half_close:
                    connection.shutdown(socket.SHUT_WR)
            except OSError as exc:
                errors.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except OSError as exc:
            errors.append(exc)
        sender.join(PATIENCE)
    return answer, errors


def exchange(port: int, *parts: bytes, half_close: bool = False) -> bytes:
    """:func:`talk`, which must meet no error: the server read the whole request."""
    answer, errors = talk(port, *parts, half_close=half_close)
    assert not errors, f"{errors}: {answer[:300]!r}"
    return answer


def problem_of(answer: bytes) -> tuple[str, dict[str, str], dict[str, object]]:
    """The status line, headers and problem of an answer that is one problem+json."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}
    assert headers["content-type"] == "application/problem+json", answer[:300]
    assert int(headers["content-length"]) == len(body), answer[:300]
    return status_line, headers, json.loads(body)


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("request_bytes", REFUSED, ids=["bytes-in-query", "malformed-header"])
def test_a_refused_request_is_a_problem_and_ends_without_a_reset(
    port: int, request_bytes: bytes
) -> None:
    status_line, headers, problem = problem_of(exchange(port, request_bytes, half_close=True))

    assert status_line == "HTTP/1.1 400 Bad Request"
    assert headers["connection"] == "close"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["server"] == "uvicorn"  # uvicorn's own headers kept
    assert (problem["status"], problem["title"], problem["instance"]) == (400, "Bad Request", None)
    assert "malformed" in str(problem["detail"])


def test_the_stock_protocol_resets_the_connection(tmp_path: Path) -> None:
    """What the kit's protocol fixes, shown on stock uvicorn (if this starts failing, uvicorn
    fixed it itself, and ``service_kit.uvicorn`` may go)."""
    for port in serve(tmp_path, "httptools"):
        answer, errors = talk(port, REFUSED[0], half_close=True)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
        assert any(isinstance(error, (ConnectionResetError, BrokenPipeError)) for error in errors)


@pytest.mark.parametrize("expect", [b"", b"Expect: 100-continue\r\n"], ids=["plain", "expect"])
def test_a_broken_chunk_in_the_body_being_read_is_refused(
    port: int, tmp_path: Path, expect: bytes
) -> None:
    """The app waits for the rest of the body; the broken chunk ends its wait (the client is
    gone, for the app: no error) and the client gets the refusal, naming the body."""
    head = (
        b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n%s\r\n5\r\nhello\r\n"
        % expect
    )

    answer = exchange(port, head, b"zz\r\nmore\r\n")

    status_line, _, problem = problem_of(answer.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n"))
    assert status_line == "HTTP/1.1 400 Bad Request"
    assert "body" in str(problem["detail"])
    assert "Exception" not in (tmp_path / "uvicorn.log").read_text(errors="replace")


def test_a_refusal_behind_a_pipelined_request_waits_for_its_answer(port: int) -> None:
    """The request parsed before the broken one is answered whole first; no 400 is written
    into the middle of that answer (stock httptools did), then the connection closes."""
    answer = exchange(port, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\nGET /\xff HTTP/1.1\r\nBad\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert answer.endswith(b"\r\n5\r\ngot 0\r\n0\r\n\r\n"), answer


def test_a_bad_request_after_an_answered_one_is_refused(port: int) -> None:
    """On a kept connection, a request line the parser rejects after a request that was
    answered is refused with the problem (the answered request's cycle is not in the way)."""
    answer = exchange(
        port,
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /\xff HTTP/1.1\r\nHost: t\r\n\r\n",
    )

    first, end, rest = answer.partition(b"\r\n5\r\ngot 3\r\n0\r\n\r\n")
    assert end, answer
    assert first.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    status_line, _, _ = problem_of(rest)
    assert status_line == "HTTP/1.1 400 Bad Request"


def test_a_peer_that_keeps_sending_is_cut_off(port: int) -> None:
    """The linger is bounded (in bytes and in time): a peer still sending after a refusal is
    cut off, its reset its own doing."""
    head = REFUSED[1].split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    most = 4 * refusals.LINGER_BYTES
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as connection:
        connection.sendall(head)
        sent = 0
        try:
            while sent < most:
                sent += connection.send(b"x" * 65536)
        except (ConnectionResetError, BrokenPipeError):
            pass
    assert sent < most


# -- upgrades --------------------------------------------------------------------------------

UPGRADES = [
    b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
]
NEXT = b"POST /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc"


@pytest.mark.parametrize("request_bytes", UPGRADES, ids=["handshake", "no-key", "h2c"])
@pytest.mark.parametrize("apart", [True, False], ids=["apart", "pipelined"])
def test_an_upgrade_is_ignored(port: int, request_bytes: bytes, apart: bool) -> None:
    """The app answers it as HTTP, and the next request on the connection too, sent apart
    or in the same read (stock uvicorn switched the handshake to its WebSocket stack,
    answered a GET without a key with plain text, and dropped a request pipelined behind
    an upgrade it declined)."""
    parts = (request_bytes, NEXT) if apart else (request_bytes + NEXT,)

    answer = exchange(port, *parts)

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2, answer
    assert answer.endswith(b"\r\n5\r\ngot 3\r\n0\r\n\r\n"), answer


#: A body that is itself a request, behind a request that asks for an upgrade.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.mark.parametrize("upgrade", [b"websocket", b"h2c"])
def test_an_upgrade_with_a_body_is_refused_never_served_as_two_requests(
    port: int, upgrade: bytes
) -> None:
    """httptools skips the body of a request that asks for an upgrade; stock uvicorn then
    parsed the body as the next request and served it (on websocket, it hung instead)."""
    head = (
        b"POST /x HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: %s\r\n"
        b"Content-Length: %d\r\n\r\n" % (upgrade, len(SMUGGLED))
    )

    answer = exchange(port, head, SMUGGLED, half_close=True)

    status_line, _, problem = problem_of(answer)
    assert status_line == "HTTP/1.1 400 Bad Request"
    assert "Upgrade" in str(problem["detail"])
