"""The actors: paced and bounded loops, a failing actor stops the run's counting, registration."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from polyframe_bench.soak.actors import Member, act, paced
from polyframe_bench.soak.settings import SoakError
from polyframe_bench.soak.stats import Stats


def test_loops_are_bounded_by_count_as_well_as_time() -> None:
    stop = threading.Event()
    far = time.monotonic() + 3600
    assert list(paced(stop, far, 0.0, 5)) == [0, 1, 2, 3, 4]
    assert list(paced(stop, time.monotonic() - 1, 0.0, 5)) == []


def test_an_actor_that_fails_or_crashes_is_a_problem_of_the_run() -> None:
    """A crash must fail the soak, not just thin its load; either way the actor stops."""
    stats = Stats()
    steps: list[int] = []

    def crashing() -> None:
        steps.append(1)
        raise ValueError("not JSON")

    act(stats, "member m@example.com", crashing, range(5))

    def refused() -> None:
        raise SoakError("log-in failed")

    act(stats, "staff sam", refused, range(5))
    assert steps == [1]
    assert stats.problems == [
        "member m@example.com stopped on ValueError('not JSON')",
        "log-in failed",
    ]


def _registration(answers: list[int]) -> Callable[[httpx.Request], httpx.Response]:
    """Registration answers in turn, then a log-in and ``/me`` that work."""
    left = iter(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/register"):
            return httpx.Response(next(left))
        if request.url.path.endswith("/login"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 900})
        return httpx.Response(200, json={"id": "u-1"})

    return handler


def test_a_registration_is_retried_and_a_409_after_a_lost_answer_means_it_exists(
    member: Callable[..., Member],
) -> None:
    stats = Stats()
    joining = member(0, _registration([503, 409]), stats)
    joining.register()
    assert joining.user_id == "u-1"
    assert stats.outcomes["setup: register"] == Counter({"503": 1, "409": 1})


def test_a_refused_registration_stops_the_soak_with_the_answer(
    member: Callable[..., Member],
) -> None:
    stats = Stats()
    joining = member(0, _registration([422]), stats)
    with pytest.raises(SoakError, match="register failed: HTTP 422"):
        joining.register()
    assert stats.outcomes["setup: register"] == Counter({"422": 1})
