"""The checks after the load: every unacknowledged key resent, every member's orders listed
(each acknowledged order once, in its state), the audit trail polled until complete, and the
verdict (:func:`failures`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from polyframe_bench.soak.actors import Member, Staff
from polyframe_bench.soak.ledger import Ledger
from polyframe_bench.soak.sender import HttpSender, describe
from polyframe_bench.soak.settings import AUDIT, ORDERS, SoakError
from polyframe_bench.soak.stats import Stats, is_error

#: Items per page when reading a whole list.
PAGE = 100


def resolve_unacknowledged(members: list[Member], ledger: Ledger, stats: Stats) -> None:
    """Resend every key whose answer never came: the answer names the order, new or replayed."""
    for member in members:
        for record in member.orders:
            if record.order_id is None:
                created = member.post_order("verify: resend unacknowledged key", record)
                if created is not None:
                    record.order_id = created
                    ledger.count("orders acknowledged")
                    ledger.count("orders acknowledged only when resent after the load")


def all_pages(
    sender: HttpSender,
    kind: str,
    url: str,
    params: dict[str, Any],
    *,
    expected: int,
    what: str,
    headers: Callable[[], dict[str, str]] = dict,
) -> list[dict[str, Any]]:
    """Every item of a cursor-paginated list (bounded: about twice the pages expected)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(2 * (expected // PAGE) + 50):
        page_params = {**params, "limit": PAGE, **({"cursor": cursor} if cursor else {})}
        response = sender.send(kind, "GET", url, params=page_params, headers=headers())
        if response is None or response.status_code != 200:
            raise SoakError(f"{what}: {describe(response)}")
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise SoakError(f"{what}: {url} kept handing out cursors")


def list_orders(member: Member, expected: int) -> list[dict[str, Any]]:
    return all_pages(
        member.sender,
        "verify: list orders",
        ORDERS,
        {},
        expected=expected,
        what=f"listing the orders of {member.email}",
        headers=member.headers,
    )


def verify_orders(members: list[Member], stats: Stats) -> dict[str, Any]:
    """Each acknowledged order exactly once in its owner's list, nothing else, in its state."""
    problems: list[str] = []
    verified = states = 0
    for member in members:
        acknowledged = {r.order_id: r for r in member.orders if r.order_id}
        found = list_orders(member, len(acknowledged))
        ids = Counter(str(o["id"]) for o in found)
        for order_id, times in ids.items():
            if times > 1:
                problems.append(f"order {order_id} listed {times} times")
            if order_id not in acknowledged:
                problems.append(f"order {order_id} of {member.email} was never acknowledged")
        for order in found:
            record = acknowledged.get(str(order["id"]))
            if record is None:
                continue
            state = order["status"]
            if state in (record.expected, record.attempted):
                states += 1
            else:
                problems.append(f"order {order['id']} is {state}, expected {record.expected}")
            record.expected = state  # the audit trail must match what happened
        for order_id in acknowledged:
            if ids[order_id] == 1:
                verified += 1
            elif ids[order_id] == 0:
                problems.append(f"acknowledged order {order_id} is missing")
        unresolved = [r.key for r in member.orders if r.order_id is None]
        problems += [f"key {key} never acknowledged, even when resent" for key in unresolved]
    return {"verified": verified, "states_verified": states, "problems": problems}


def expected_events(members: list[Member]) -> Counter[tuple[str, str, str]]:
    """(subject type, subject id, action) -> 1 for every change the load made."""
    expected: Counter[tuple[str, str, str]] = Counter()
    for member in members:
        if member.user_id:
            expected["user", member.user_id, "user.registered"] = 1
        for record in member.orders:
            if record.order_id:
                expected["order", record.order_id, "order.created"] = 1
                if record.expected in ("cancelled", "refunded"):
                    expected["order", record.order_id, f"order.{record.expected}"] = 1
    return expected


def read_trail(staff: Staff, since: datetime, expected: int) -> list[dict[str, Any]]:
    """Every audit event since ``since``, read as staff (a session)."""
    return all_pages(
        staff.sender,
        "verify: audit trail",
        AUDIT,
        {"after": since.isoformat()},
        expected=expected,
        what=f"reading {AUDIT} as staff",
    )


def verify_trail(
    staff: Staff,
    members: list[Member],
    since: datetime,
    timeout: float,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Poll the trail (bounded) until every expected event is there; each exactly once."""
    expected = expected_events(members)
    ours_users = {m.user_id for m in members if m.user_id}
    started = time.monotonic()
    deadline = started + timeout
    while True:
        events = read_trail(staff, since, len(expected))
        seen: Counter[tuple[str, str, str]] = Counter(
            (e["subject"]["type"], e["subject"]["id"], e["action"]) for e in events
        )
        missing = [k for k in expected if seen[k] == 0]
        duplicated = [k for k in expected if seen[k] > 1]
        if not missing or time.monotonic() >= deadline:
            break
        progress(f"audit trail: {len(expected) - len(missing)}/{len(expected)} events so far")
        time.sleep(2)
    unexpected = sorted(
        {
            (e["subject"]["type"], e["subject"]["id"], e["action"])
            for e in events
            if (e["subject"]["type"], e["subject"]["id"], e["action"]) not in expected
            and (
                str(e.get("payload", {}).get("user_id")) in ours_users
                or e["subject"]["id"] in ours_users
            )
        }
    )
    problems = [
        f"{len(what)} audit event(s) {how} (the first {min(len(what), 50)} below)"
        for what, how in ((missing, "missing"), (duplicated, "recorded more than once"))
        if what
    ]
    problems += [f"missing audit event {' '.join(k)}" for k in missing[:50]]
    problems += [f"audit event {' '.join(k)} recorded {seen[k]} times" for k in duplicated[:50]]
    problems += [f"audit event {' '.join(k)} for no acknowledged change" for k in unexpected[:50]]
    return {
        "expected": len(expected),
        "verified": sum(1 for k in expected if seen[k] == 1),
        "missing": len(missing),
        "duplicated": len(duplicated),
        "unexpected": len(unexpected),
        "seconds_to_complete": round(time.monotonic() - started, 1),
        "problems": problems,
    }


def failures(result: dict[str, Any], stats: Stats, problems: list[str]) -> list[str]:
    """What makes the run fail: any 5xx, unexpected 4xx or unanswered request, a lost or
    doubled write, an incomplete trail, RSS growth (when asserted)."""
    found: list[str] = []
    for kind, entry in result["requests"].items():
        for outcome, count in entry["outcomes"].items():
            if is_error(outcome):
                found.append(f"{kind}: {count} x {outcome}")
    if not result["writes"].get("orders acknowledged"):
        found.append("no order was acknowledged: the load wrote nothing")
    if result["events"]["verified"] == 0:
        found.append("no audit event was verified")
    found += problems[:100]
    found += stats.problems[:100]
    memory = result["rss"]
    if memory["asserted"]:
        for name, entry in memory["servers"].items():
            if not entry["ok"]:
                found.append(
                    f"RSS of {name} grew {entry['growth_pct']}% "
                    f"({entry['start_mb']} -> {entry['end_mb']} MB, processes "
                    f"{entry['processes']})"
                )
    for name, entry in memory["servers"].items():
        if entry["processes"].endswith("->0"):
            found.append(f"{name} is gone (its process exited during the soak)")
    return list(dict.fromkeys(found))
