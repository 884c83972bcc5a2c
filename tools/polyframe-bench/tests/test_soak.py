"""The soak's parts: retries and 429s, the checks of writes and events, RSS, the table, the CLI.

The whole soak runs against the real platform in ``tests/e2e/test_e2e_soak.py``;
here each check is shown to catch what it is there for (a lost or doubled order,
a missing or doubled event, RSS growth), on answers made up with httpx's
MockTransport.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from polyframe_bench import cli, report, soak
from polyframe_bench.platform import free_port

Handler = Callable[[httpx.Request], httpx.Response]
TARGET = soak.Target("http://127.0.0.1:1", ("ada.acting", "pw"))


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(soak, "RETRY_BACKOFF", 0.0)


def _caller(handler: Handler, stats: soak.Stats) -> soak.Caller:
    client = httpx.Client(base_url=TARGET.base_url, transport=httpx.MockTransport(handler))
    return soak.Caller(client, stats, threading.Event())


def test_a_write_is_retried_with_the_same_request_and_429s_are_waited_out() -> None:
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

    stats = soak.Stats()
    response = _caller(handler, stats).send(
        "write", "POST", "/api/orders", retry=True, json={"a": 1}, headers={"Idempotency-Key": "k"}
    )
    assert response is not None
    assert response.status_code == 201
    assert len(seen) == 4
    assert set(seen) == {("k", b'{"a":1}')}  # the same key and body every time
    assert stats.outcomes["write"] == Counter({"429": 1, "503": 1, "timeout": 1, "201": 1})
    assert soak.failures(_results(stats), stats, []) == ["write: 1 x 503", "write: 1 x timeout"]


def test_a_read_is_not_retried_and_attempts_are_bounded() -> None:
    stats = soak.Stats()
    caller = _caller(lambda request: httpx.Response(502), stats)
    assert caller.send("read", "GET", "/x") is not None
    assert caller.send("write", "POST", "/x", retry=True) is not None
    assert stats.outcomes == {
        "read": Counter({"502": 1}),
        "write": Counter({"502": soak.WRITE_ATTEMPTS}),
    }


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("2", 2.0), ("", 1.0), ("soon", 1.0), ("86400", soak.MAX_RETRY_AFTER)],
)
def test_retry_after_is_read_and_bounded(value: str, seconds: float) -> None:
    headers = {"Retry-After": value} if value else {}
    assert soak.retry_after(httpx.Response(429, headers=headers)) == seconds


def test_retry_after_as_an_http_date() -> None:
    past = httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert soak.retry_after(past) == 0.0


def test_loops_are_bounded_by_count_as_well_as_time() -> None:
    stop = threading.Event()
    far = time.monotonic() + 3600
    assert list(soak.paced(stop, far, 0.0, 5)) == [0, 1, 2, 3, 4]
    assert list(soak.paced(stop, time.monotonic() - 1, 0.0, 5)) == []


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert soak.percentile(values, 50) == 50
    assert soak.percentile(values, 99) == 99
    assert soak.percentile([], 99) == 0.0


# -- the checks after the load ---------------------------------------------------------------


def _member(index: int, handler: Handler, stats: soak.Stats) -> soak.Member:
    member = soak.Member(
        index,
        "test",
        TARGET,
        soak.Settings(),
        stats,
        soak.Ledger(),
        queue.Queue(),
        threading.Event(),
    )
    member.client.close()
    member.client = member.caller.client = httpx.Client(
        base_url=TARGET.base_url, transport=httpx.MockTransport(handler)
    )
    member.token = "t"
    member.token_renew_at = datetime.now(UTC) + timedelta(hours=1)
    member.user_id = f"user-{index}"
    return member


def _record(order_id: str | None, expected: str = "paid") -> soak.OrderRecord:
    return soak.OrderRecord(0, f"key-{order_id}", {}, order_id=order_id, expected=expected)


def test_lost_doubled_unknown_and_wrong_state_orders_are_each_caught() -> None:
    listed = [
        {"id": "kept", "status": "paid"},
        {"id": "doubled", "status": "paid"},
        {"id": "doubled", "status": "paid"},
        {"id": "refunded", "status": "paid"},  # the refund was acknowledged
        {"id": "stranger", "status": "paid"},  # never acknowledged
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/orders"
        return httpx.Response(200, json={"items": listed, "next_cursor": None})

    stats = soak.Stats()
    member = _member(0, handler, stats)
    member.orders = [
        _record("kept"),
        _record("doubled"),
        _record("lost"),
        _record("refunded", "refunded"),
    ]
    found = soak.verify_orders([member], stats)
    assert found["verified"] == 2  # kept, refunded (listed once each)
    problems = "\n".join(found["problems"])
    assert "order doubled listed 2 times" in problems
    assert "acknowledged order lost is missing" in problems
    assert "order stranger of" in problems
    assert "never acknowledged" in problems
    assert "order refunded is paid, expected refunded" in problems


def test_an_uncertain_cancel_accepts_either_state_and_the_trail_follows_the_state() -> None:
    listed = [{"id": "a", "status": "cancelled"}, {"id": "b", "status": "paid"}]
    stats = soak.Stats()
    member = _member(
        0,
        lambda request: httpx.Response(200, json={"items": listed, "next_cursor": None}),
        stats,
    )
    member.orders = [_record("a"), _record("b")]
    for record in member.orders:
        record.attempted = "cancelled"
    assert soak.verify_orders([member], stats)["problems"] == []
    assert set(soak.expected_events([member])) == {
        ("user", "user-0", "user.registered"),
        ("order", "a", "order.created"),
        ("order", "a", "order.cancelled"),
        ("order", "b", "order.created"),
    }


def _event(subject_type: str, subject_id: str, action: str, user: str) -> dict[str, Any]:
    return {
        "subject": {"type": subject_type, "id": subject_id},
        "action": action,
        "payload": {"user_id": user},
    }


def test_missing_doubled_and_unexpected_events_are_each_caught() -> None:
    stats = soak.Stats()
    member = _member(0, lambda request: httpx.Response(500), stats)
    member.orders = [_record("o1"), _record("o2", "cancelled")]
    trail = [
        _event("user", "user-0", "user.registered", "user-0"),
        _event("order", "o1", "order.created", "user-0"),
        _event("order", "o1", "order.created", "user-0"),  # doubled
        _event("order", "o2", "order.created", "user-0"),
        # o2's order.cancelled is missing
        _event("order", "o1", "order.refunded", "user-0"),  # no such change was made
        _event("order", "other", "order.created", "someone-else"),  # not ours: ignored
    ]
    pages: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/audit/events"
        pages.append(str(request.url))
        return httpx.Response(200, json={"items": trail, "next_cursor": None})

    staff = soak.Staff(
        TARGET,
        soak.Settings(),
        stats,
        soak.Ledger(),
        queue.Queue(),
        [member],
        threading.Event(),
    )
    staff.client.close()
    staff.client = staff.caller.client = httpx.Client(
        base_url=TARGET.base_url, transport=httpx.MockTransport(handler)
    )
    found = soak.verify_trail(staff, [member], datetime.now(UTC), 0.0, lambda line: None)
    assert (found["expected"], found["verified"]) == (4, 2)
    assert (found["missing"], found["duplicated"], found["unexpected"]) == (1, 1, 1)
    problems = "\n".join(found["problems"])
    assert "missing audit event order o2 order.cancelled" in problems
    assert "audit event order o1 order.created recorded 2 times" in problems
    assert "audit event order o1 order.refunded for no acknowledged change" in problems
    assert "after=" in pages[0]


# -- memory ----------------------------------------------------------------------------------


def _sample(mb: float, processes: int = 3) -> dict[str, int]:
    return {"rss_bytes": int(mb * 2**20), "processes": processes}


def test_rss_growth_is_asserted_only_over_a_long_enough_window() -> None:
    settings = soak.Settings(rss_min_window=120)
    start = {"a": _sample(100), "b": _sample(100)}
    end = {"a": _sample(115), "b": _sample(105)}
    short = soak.rss_report(start, end, {}, 30, settings)
    assert not short["asserted"]
    assert "not asserted" in short["note"]
    assert short["servers"]["a"]["growth_pct"] == 15.0
    stats = soak.Stats()
    assert not [f for f in soak.failures(_results(stats, short), stats, []) if "RSS" in f]

    long = soak.rss_report(start, end, {}, 240, settings)
    assert long["asserted"]
    assert (long["servers"]["a"]["ok"], long["servers"]["b"]["ok"]) == (False, True)
    assert [f for f in soak.failures(_results(stats, long), stats, []) if "RSS" in f] == [
        "RSS of a grew 15.0% (100.0 -> 115.0 MB, processes 3->3)"
    ]


def test_a_server_that_died_fails_the_run_even_when_rss_is_not_asserted() -> None:
    memory = soak.rss_report({"a": _sample(100)}, {"a": _sample(0, 0)}, {}, 10, soak.Settings())
    stats = soak.Stats()
    assert "a is gone (its process exited during the soak)" in soak.failures(
        _results(stats, memory), stats, []
    )


def test_rss_of_a_real_process_tree() -> None:
    import os

    measured = soak.rss({"me": os.getpid()})
    assert measured["me"]["processes"] >= 1
    assert measured["me"]["rss_bytes"] > 0


# -- the table and the command line ----------------------------------------------------------


def _results(stats: soak.Stats, memory: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "meta": {
            "base_url": TARGET.base_url,
            "date": "2026-11-27T00:00:00+00:00",
            "git": "abc1234",
            "cpus": 2,
            "python": "3.11.7",
            "load_seconds": 30.0,
            "setup_seconds": 3.0,
            "settings": {"users": 8, "rate": 40, "staff_rate": 2, "warmup": 6},
        },
        "requests": stats.summary(),
        "load_totals": {},
        "writes": {"orders acknowledged": 3, "orders verified exactly once": 3},
        "events": {
            "expected": 4,
            "verified": 4,
            "missing": 0,
            "duplicated": 0,
            "unexpected": 0,
            "seconds_to_complete": 0.5,
        },
        "rss": memory or soak.rss_report({}, {}, {}, 0, soak.Settings()),
        "failures": [],
    }


def test_the_table_has_every_figure_and_the_failures() -> None:
    stats = soak.Stats()
    for status, seconds in ((201, 0.05), (201, 0.07), (503, 0.5), (429, 0.01)):
        stats.record("write: create order", status, seconds)
    results = _results(
        stats, soak.rss_report({"a": _sample(100)}, {"a": _sample(101)}, {}, 30, soak.Settings())
    )
    results["failures"] = soak.failures(results, stats, [])
    table = report.soak_markdown(results)
    assert "Verdict: **FAILED**" in table
    assert "| write: create order | 4 | 2 | 429: 1, 503: 1 | 50 | 500 | 500 | 500 |" in table
    assert "| 503 | 1 |" in table
    assert "| 429 | 1 |" in table
    assert "| orders verified exactly once | 3 |" in table
    assert "| 4 | 4 | 0 | 0 | 0 | 0.5 |" in table
    assert "| a | 3->3 | 100.0 | 101.0 | 0.0 | +1.0% |" in table
    assert "reported, not asserted" in table
    assert "- write: create order: 1 x 503" in table


def test_the_command_line_says_what_to_do_next(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["soak", "--base-url", "http://127.0.0.1:1"]) == 2
    assert "--staff username:password" in capsys.readouterr().err
    port = free_port()
    assert cli.main(["soak", "--base-url", f"http://127.0.0.1:{port}", "--staff", "a:b"]) == 2
    error = capsys.readouterr().err
    assert f"cannot reach http://127.0.0.1:{port}" in error
    assert "make up" in error
    assert cli.main(["soak", "--base-url", "http://x", "--ready-file", "/nonexistent"]) == 2
    assert "cannot read the ready file" in capsys.readouterr().err


def test_the_target_of_a_ready_file(tmp_path: Any) -> None:
    staff = tmp_path / "staff.json"
    staff.write_text(
        json.dumps(
            [
                {"group": "support-readonly", "username": "rita", "password": "r"},
                {"group": "support-acting", "username": "ada", "password": "a"},
            ]
        )
    )
    ready = {
        "ingress": "http://127.0.0.1:8080/",
        "demo_staff_file": str(staff),
        "pids": {"users-fastapi": 10, "prometheus": 11},
    }
    target = soak.Target.from_ready(ready)
    assert target == soak.Target("http://127.0.0.1:8080", ("ada", "a"), {"users-fastapi": 10})


def test_an_actor_that_fails_or_crashes_is_a_problem_of_the_run() -> None:
    """A crash must fail the soak, not just thin its load; either way the actor stops."""
    stats = soak.Stats()
    steps: list[int] = []

    def crashing() -> None:
        steps.append(1)
        raise ValueError("not JSON")

    soak.act(stats, "member m@example.com", crashing, range(5))

    def refused() -> None:
        raise soak.SoakError("log-in failed")

    soak.act(stats, "staff sam", refused, range(5))
    assert steps == [1]
    assert stats.problems == [
        "member m@example.com stopped on ValueError('not JSON')",
        "log-in failed",
    ]
