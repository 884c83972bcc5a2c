"""service_kit.unread in process, on gunicorn's own body readers over a stand-in socket (the
real server's behaviour is in test_kit_gunicorn.py: a left body keeps the connection usable)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import Unreader

from service_kit import unread


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class Sock:
    """Only what the deadline touches: the timeout."""

    def __init__(self) -> None:
        self.timeout: float | None = None

    def gettimeout(self) -> float | None:
        return self.timeout

    def settimeout(self, value: float | None) -> None:
        self.timeout = value


class Trickle(Unreader):  # type: ignore[misc]
    """A client sending one byte per second, for ever: each read takes a second."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.sock = Sock()
        self.clock = clock
        self.reads = 0

    def chunk(self, size_hint: int | None = None) -> bytes:
        self.reads += 1
        self.clock.now += 1.0
        return b"x"


def request(unreader: Unreader, length: int) -> Any:
    return SimpleNamespace(body=Body(LengthReader(unreader, length)), unreader=unreader)


def test_a_trickled_body_is_given_up_after_the_drain_bound_in_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bound per socket read would let a client that sends a byte every second hold the
    thread for as long as its body lasts; the bound is on the whole drain."""
    clock = Clock()
    monkeypatch.setattr(unread.time, "monotonic", clock.monotonic)
    trickle = Trickle(clock)

    assert unread.settle(request(trickle, 100_000)) is False
    assert trickle.reads == unread.DRAIN_SECONDS  # one read a second, until the bound
    assert trickle.sock.timeout is None  # the socket's own timeout again
    assert "chunk" not in vars(trickle)  # the unreader's own reads again


def test_a_body_that_arrives_is_read_to_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(unread.time, "monotonic", clock.monotonic)
    trickle = Trickle(clock)

    assert unread.settle(request(trickle, 3)) is True
    assert trickle.reads == 3


@pytest.mark.parametrize(
    ("length", "settled"),
    [(0, True), (unread.DISCARD_LIMIT + 1, False)],
    ids=["no-body", "over-the-discard-limit"],
)
def test_nothing_is_read_when_nothing_is_left_or_too_much(length: int, settled: bool) -> None:
    trickle = Trickle(Clock())
    assert unread.settle(request(trickle, length)) is settled
    assert trickle.reads == 0


def test_a_body_whose_read_failed_closes_the_connection() -> None:
    trickle = Trickle(Clock())
    failed = request(trickle, 10)
    failed.body.failed = True
    assert unread.settle(failed) is False
    assert trickle.reads == 0


def test_what_is_not_gunicorns_start_response_is_left_alone() -> None:
    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        return None

    assert unread.settling_start_response(start_response) is start_response
