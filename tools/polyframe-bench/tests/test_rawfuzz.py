"""The raw-HTTP fuzzer's parts: cases replay from their seed, answers are read by their
framing, the ingress's refusals of broken framing are told from faults, a run is bounded."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator

import pytest

from polyframe_bench import cli, rawcases, rawfuzz

BASE = rawcases.seeds("127.0.0.1:1", "a.b.c")


def test_a_case_is_the_same_bytes_whenever_it_is_made_again() -> None:
    first = [rawcases.make_case(7, i, BASE) for i in range(50)]
    again = [rawcases.make_case(7, i, BASE) for i in range(50)]
    assert [c.data for c in first] == [c.data for c in again]
    assert len({c.data for c in first}) > 40
    assert first[0].data != rawcases.make_case(8, 0, BASE).data
    categories = {name for c in first for name in c.category.split(" + ")}
    assert len(categories) > 10, categories


def test_seeds_reach_every_routed_prefix_and_carry_the_token_only_when_given() -> None:
    targets = {r.target.split(b"?")[0] for r in BASE}
    for prefix in (b"/api/users", b"/api/orders", b"/api/audit", b"/admin"):
        assert any(t.startswith(prefix) for t in targets), prefix
    assert not any(
        name == b"Authorization" for r in rawcases.seeds("h:1", None) for name, _ in r.headers
    )


def test_answers_are_read_by_their_framing() -> None:
    two = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n"
    )
    answers, to_close = rawfuzz._parse(two, head_only=False)
    assert [a[0] for a in answers] == ["200", "404"]
    assert not to_close
    partial, _ = rawfuzz._parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nok", False)
    assert partial == []
    head, _ = rawfuzz._parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", True)
    assert [a[0] for a in head] == ["200"]
    # Pipelined: a GET's answer with its body, then the last request's, a HEAD's, without.
    get_then_head = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
    )
    both, _ = rawfuzz._parse(get_then_head, head_only=True, requests=2)
    assert [a[0] for a in both] == ["200", "200"]


def test_only_the_ingress_refusing_broken_framing_is_not_a_fault() -> None:
    truncated = rawcases.Case(1, 1, "body: truncated", "POST /x", b"")
    intact = rawcases.Case(2, 1, "header: duplicate", "POST /x", b"")
    problem = b"application/problem+json"
    assert rawfuzz.refusal(truncated, "502", b"text/plain", b"Bad Gateway")
    assert not rawfuzz.refusal(intact, "502", b"text/plain", b"Bad Gateway")
    assert not rawfuzz.refusal(truncated, "500", problem, b'{"status": 500}')
    assert not rawfuzz.refusal(truncated, "503", b"text/plain", b"Service Unavailable")


class _Answer(socketserver.BaseRequestHandler):
    """Reads one request head and answers it: 500 when it asks for /boom, else 200."""

    def handle(self) -> None:
        data = b""
        self.request.settimeout(2)
        while b"\r\n\r\n" not in data:
            try:
                chunk = self.request.recv(65536)
            except OSError:
                return
            if not chunk:
                break
            data += chunk
        status = b"500 Oops" if data.startswith(b"GET /boom") else b"200 OK"
        self.request.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def server() -> Iterator[str]:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Answer) as srv:
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{srv.server_address[1]}"
        srv.shutdown()


def test_a_run_is_bounded_and_records_every_answer(server: str) -> None:
    results = rawfuzz.run(server, seed=3, requests=40, seconds=30, timeout=3)
    assert results.sent == 40
    assert sum(results.statuses.values()) >= 40
    assert results.failures == []


def test_a_5xx_to_an_intact_request_is_a_fault_with_its_case(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    case = rawcases.Case(5, 9, "line: path", "GET /", b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    outcome = rawfuzz.send(host, int(port), case, timeout=3)
    assert outcome.statuses == ["500"]
    assert outcome.server_errors
    assert not outcome.refusals


def test_the_cli_replays_one_case_and_fails_on_a_5xx(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["rawfuzz", "--url", server, "--seed", "3", "--case", "4", "--no-token"])
    assert code == 0
    assert "1 cases" in capsys.readouterr().out
