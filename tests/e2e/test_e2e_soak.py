"""``make soak``'s short variant: the same bounded mixed load, for about half a minute.

Members read, create orders with an ``Idempotency-Key`` (retried with the same key,
some resent on purpose) and cancel some; a support-acting staff member uses the
console (look-ups, user pages, refunds) and reads the audit trail; all through
the ingress (``polyframe_bench.soak``, which ``make soak`` runs for 5 minutes).
Then: no 5xx, each acknowledged order exactly once in its final state, every
event of those changes exactly once in the audit trail.

RSS growth of each server's process tree after a 10 s warm-up must stay under 10%,
as in ``make soak``. Twenty seconds are a weak test of a leak (allocator arenas,
caches and connection pools still fill up; a slow leak shows only in the 5-minute
run), but one that grows by a tenth in that time is caught here already (measured
growth so far: at most about 1%).

Locally it starts a platform of its own, as ``make up`` does (so the servers'
RSS is this load's alone), and checks that it still stops cleanly afterwards;
against ``E2E_BASE_URL`` it loads that ingress, with ``E2E_STAFF_SUPPORT_ACTING``,
and measures no RSS.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from polyframe_bench import report, soak

pytestmark = pytest.mark.e2e

#: Seconds of load (the platform's start, setup and verification come on top).
SOAK_SECONDS = float(os.environ.get("E2E_SOAK_SECONDS", "30"))
WARMUP_SECONDS = 10.0
SETTINGS = soak.Settings(
    seconds=SOAK_SECONDS,
    warmup=WARMUP_SECONDS,
    users=6,
    rate=30,
    staff_rate=2,
    # Bounds, not speed assertions: the shared CI machine may be busy.
    timeout=15,
    audit_timeout=90,
    # The 10% bound holds from the warm-up's end, however short the run (make soak: 120 s).
    rss_min_window=min(15.0, SOAK_SECONDS - WARMUP_SECONDS),
)
#: Kinds of request the mix must have sent (the soak proves nothing without them).
KINDS = (
    "read: me",
    "read: my orders",
    "read: an order",
    "write: create order",
    "write: resend (same key)",
    "write: cancel order",
    "staff: refund (console)",
    "staff: console user page",
    "staff: audit trail",
)
SERVERS = ("users-fastapi", "legacy-flask", "admin-django", "traefik")


def _target(request: pytest.FixtureRequest) -> tuple[soak.Target, Any]:
    """The soak's target, and the local platform it started (None against E2E_BASE_URL)."""
    if os.environ.get("E2E_BASE_URL", "").strip():
        platform = request.getfixturevalue("platform")
        staff = request.getfixturevalue("staff_account")(soak.STAFF_GROUP)
        return soak.Target(platform.base_url, staff), None
    local = request.getfixturevalue("start_platform")("soak")
    return soak.Target.from_ready(local.wait_ready()), local


def test_a_short_soak_loses_nothing_and_answers_no_5xx(
    request: pytest.FixtureRequest, report_measurement: Callable[[str, str], None]
) -> None:
    target, local = _target(request)
    lines: list[str] = []
    results = soak.run(target, SETTINGS, progress=lines.append)
    table = report.soak_markdown(results)
    requests = results["requests"]
    writes, events, memory = results["writes"], results["events"], results["rss"]
    report_measurement(
        "soak (short variant)",
        f"{results['meta']['load_seconds']:g} s of load: "
        f"{sum(k['sent'] for k in requests.values()):,} requests, outcomes "
        f"{results['load_totals']}; {writes['orders verified exactly once']:,} orders and "
        f"{writes['order states verified']:,} states verified, {events['verified']:,}/"
        f"{events['expected']:,} audit events (complete {events['seconds_to_complete']:g} s "
        "after the orders were checked); RSS growth after warm-up (under 10%): "
        + (
            ", ".join(f"{n} {e['growth_pct']:+.1f}%" for n, e in memory["servers"].items())
            or "not measured"
        ),
    )

    assert not results["failures"], table
    server_errors = {
        (kind, outcome): count
        for kind, entry in requests.items()
        for outcome, count in entry["outcomes"].items()
        if not outcome.isdigit() or int(outcome) >= 500
    }
    assert server_errors == {}, table
    for kind in KINDS:
        assert requests.get(kind, {}).get("sent", 0) > 0, f"the mix sent no {kind!r}\n{table}"
    acknowledged = writes["orders acknowledged"]
    assert acknowledged > 0, table
    assert writes["orders verified exactly once"] == acknowledged, table
    assert writes["order states verified"] == acknowledged, table
    assert writes["resends that replayed the same order"] > 0, table
    assert writes["refunds acknowledged"] > 0, table
    # One registration per member, one creation per order, one per cancel and refund.
    assert events["expected"] == (
        SETTINGS.users
        + acknowledged
        + writes.get("cancellations acknowledged", 0)
        + writes["refunds acknowledged"]
    ), table
    assert events["verified"] == events["expected"], table
    assert (events["missing"], events["duplicated"], events["unexpected"]) == (0, 0, 0), table

    if local is None:
        assert memory["servers"] == {}
        return
    assert set(SERVERS) <= set(memory["servers"]), table
    for name in SERVERS:
        assert memory["servers"][name]["start_mb"] > 0, table
    assert memory["asserted"], table
    for name, entry in memory["servers"].items():
        assert entry["growth_pct"] < 10, f"{name} grew by {entry['growth_pct']}%\n{table}"
    assert any("warm-up over" in line for line in lines), lines
    # After the load the platform still stops cleanly (exit 0, no process left behind).
    local.stop_and_check()
