"""The circuit breaker, alone (a fake clock) and inside the service client."""

from __future__ import annotations

import threading

import httpx
import pytest

from service_kit.circuit import CircuitBreaker, CircuitState
from service_kit.client import ClientConfig, ServiceClient, ServiceUnavailableError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, reset_seconds=10, clock=clock)


def test_it_opens_after_the_threshold_of_failures_in_a_row(breaker: CircuitBreaker) -> None:
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allow()
    breaker.failed()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()


def test_a_success_resets_the_count(breaker: CircuitBreaker) -> None:
    for _ in range(5):
        breaker.failed()
        breaker.failed()
        breaker.succeeded()
    assert breaker.state is CircuitState.CLOSED


def test_after_the_reset_time_one_trial_goes_through(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(3):
        breaker.failed()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one at a time
    breaker.succeeded()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allow()


def test_a_failed_trial_opens_it_again_for_the_whole_reset_time(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    for _ in range(3):
        breaker.failed()
    clock.now += 10
    assert breaker.allow()
    breaker.failed()
    assert breaker.state is CircuitState.OPEN
    clock.now += 9
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_a_released_trial_lets_the_next_one_try(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(3):
        breaker.failed()
    clock.now += 10
    assert breaker.allow()
    breaker.released()  # e.g. cancelled: no verdict
    assert breaker.allow()


def test_state_changes_are_reported(clock: Clock) -> None:
    seen: list[CircuitState] = []
    breaker = CircuitBreaker(
        failure_threshold=1, reset_seconds=1, clock=clock, on_change=seen.append
    )
    breaker.failed()
    clock.now += 1
    assert breaker.allow()
    breaker.succeeded()
    assert seen == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]


def test_threads_share_it_safely(clock: Clock) -> None:
    breaker = CircuitBreaker(failure_threshold=1000, reset_seconds=1, clock=clock)

    def fail_many() -> None:
        for _ in range(250):
            breaker.failed()

    threads = [threading.Thread(target=fail_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert breaker.state is CircuitState.OPEN  # exactly 1000 failures were counted


@pytest.mark.parametrize("bad", [{"failure_threshold": 0}, {"reset_seconds": 0}])
def test_nonsense_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(**bad)  # type: ignore[arg-type]


# -- inside the client ---------------------------------------------------------------------------


def _config(**overrides: float) -> ClientConfig:
    values = {
        "peer": "users-fastapi",
        "base_url": "http://users.test",
        "caller": "legacy-flask",
        "timeout_seconds": 1.0,
        "max_attempts": 1,
        "breaker_failures": 3,
        "breaker_reset_seconds": 60.0,
        **overrides,
    }
    return ClientConfig(**values)  # type: ignore[arg-type]


def test_a_dead_peer_stops_being_called(breaker: CircuitBreaker) -> None:
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ConnectError("refused", request=request)

    client = ServiceClient(_config(), transport=httpx.MockTransport(refuse))
    for _ in range(3):
        with pytest.raises(ServiceUnavailableError, match="ConnectError"):
            client.request("GET", "/api/users/1")
    for _ in range(10):
        with pytest.raises(ServiceUnavailableError, match="circuit open") as caught:
            client.request("GET", "/api/users/1")
        assert caught.value.as_problem().problem.status == 503
    assert len(calls) == 3  # the last ten never reached the network
    assert client.breaker.state is CircuitState.OPEN


def test_503_answers_count_and_other_answers_close_it() -> None:
    answers = iter([503, 503, 200, 503, 503, 404, 503])

    def peer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers))

    client = ServiceClient(_config(), transport=httpx.MockTransport(peer))
    for _ in range(2):
        with pytest.raises(ServiceUnavailableError):
            client.request("GET", "/")
    assert client.request("GET", "/").status_code == 200
    for _ in range(2):
        with pytest.raises(ServiceUnavailableError):
            client.request("GET", "/")
    assert client.request("GET", "/").status_code == 404  # the peer answers: it is up
    with pytest.raises(ServiceUnavailableError):
        client.request("GET", "/")
    assert client.breaker.state is CircuitState.CLOSED
