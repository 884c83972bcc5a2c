"""The sender: writes retried with the same request, 429s waited out, attempts bounded."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from polyframe_bench.soak import sender
from polyframe_bench.soak.stats import Stats
from polyframe_bench.soak.verify import failures


def test_a_write_is_retried_with_the_same_request_and_429s_are_waited_out(
    http_sender: Callable[..., sender.HttpSender], results: Callable[..., dict[str, Any]]
) -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "0"}),
            httpx.Response(503),
            "timeout",
            httpx.Response(201, json={"id": "o-1"}),
        ]
    )
    seen: list[tuple[str | None, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers.get("idempotency-key"), request.read()))
        answer = next(answers)
        if answer == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        assert isinstance(answer, httpx.Response)
        return answer

    stats = Stats()
    response = http_sender(handler, stats).send(
        "write", "POST", "/api/orders", retry=True, json={"a": 1}, headers={"Idempotency-Key": "k"}
    )
    assert response is not None
    assert response.status_code == 201
    assert len(seen) == 4
    assert set(seen) == {("k", b'{"a":1}')}  # the same key and body every time
    assert stats.outcomes["write"] == Counter({"429": 1, "503": 1, "timeout": 1, "201": 1})
    assert failures(results(stats), stats, []) == ["write: 1 x 503", "write: 1 x timeout"]


def test_a_read_is_not_retried_and_attempts_are_bounded(
    http_sender: Callable[..., sender.HttpSender],
) -> None:
    stats = Stats()
    caller = http_sender(lambda request: httpx.Response(502), stats)
    assert caller.send("read", "GET", "/x") is not None
    assert caller.send("write", "POST", "/x", retry=True) is not None
    assert stats.outcomes == {
        "read": Counter({"502": 1}),
        "write": Counter({"502": sender.WRITE_ATTEMPTS}),
    }


def test_429s_are_waited_out_a_bounded_number_of_times_then_answered(
    http_sender: Callable[..., sender.HttpSender],
) -> None:
    stats = Stats()
    limited = http_sender(lambda request: httpx.Response(429, headers={"Retry-After": "0"}), stats)
    response = limited.send("read", "GET", "/x")
    assert response is not None
    assert response.status_code == 429
    assert stats.outcomes == {"read": Counter({"429": sender.RATE_LIMIT_ATTEMPTS})}


def test_no_answer_at_all_is_none_after_the_attempts(
    http_sender: Callable[..., sender.HttpSender],
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    stats = Stats()
    assert http_sender(refuse, stats).send("write", "POST", "/x", retry=True) is None
    assert stats.outcomes == {"write": Counter({"connection error": sender.WRITE_ATTEMPTS})}
    assert sender.describe(None) == "no answer (timeouts or connection errors)"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("2", 2.0), ("", 1.0), ("soon", 1.0), ("86400", sender.MAX_RETRY_AFTER)],
)
def test_retry_after_is_read_and_bounded(value: str, seconds: float) -> None:
    headers = {"Retry-After": value} if value else {}
    assert sender.retry_after(httpx.Response(429, headers=headers)) == seconds


def test_retry_after_as_an_http_date() -> None:
    past = httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert sender.retry_after(past) == 0.0
