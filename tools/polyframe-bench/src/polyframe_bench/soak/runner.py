"""A soak from start to verdict: setup (members register, staff logs in), the paced load with
RSS sampled after the warm-up and at the end, then the checks; the results as one dict.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from polyframe_bench.bench import run_meta
from polyframe_bench.soak.actors import Member, Staff
from polyframe_bench.soak.ledger import Ledger, OrderRecord
from polyframe_bench.soak.memory import rss, rss_line, rss_report
from polyframe_bench.soak.settings import USERS, Settings, SoakError, Target
from polyframe_bench.soak.stats import Stats, is_error
from polyframe_bench.soak.verify import (
    failures,
    resolve_unacknowledged,
    verify_orders,
    verify_trail,
)


def _say(message: str) -> None:
    print(f"soak | {message}", file=sys.stderr, flush=True)


def run(
    target: Target, settings: Settings, progress: Callable[[str], None] = _say
) -> dict[str, Any]:
    """Load ``target`` for ``settings.seconds``, then verify; the results (``failures`` empty
    when every check passed). Raises :class:`SoakError` when it cannot run at all."""
    _check_reachable(target.base_url)
    run_id = uuid.uuid4().hex[:10]
    stats, ledger, stop = Stats(), Ledger(), threading.Event()
    refunds: queue.Queue[OrderRecord] = queue.Queue(maxsize=200)
    since = datetime.now(UTC) - timedelta(minutes=5)  # the producers' clocks may differ a bit
    members = [
        Member(i, run_id, target, settings, stats, ledger, refunds, stop)
        for i in range(settings.users)
    ]
    staff = Staff(target, settings, stats, ledger, refunds, members, stop)
    try:
        setup_seconds = _set_up(target, settings, progress, stop, members, staff)
        load = _load(target, settings, progress, stats, ledger, stop, [*members, staff])
        return _verify(
            target, settings, progress, stats, ledger, members, staff, since, setup_seconds, load
        )
    finally:
        stop.set()
        for member in members:
            member.close()
        staff.close()


def _check_reachable(base_url: str) -> None:
    try:
        httpx.get(f"{base_url}{USERS}/.well-known/jwks.json", timeout=10)
    except httpx.HTTPError as exc:
        raise SoakError(
            f"cannot reach {base_url} ({exc.__class__.__name__}): start the platform "
            "(`make up`) or leave out --base-url to let the soak start one of its own"
        ) from exc


def _set_up(
    target: Target,
    settings: Settings,
    progress: Callable[[str], None],
    stop: threading.Event,
    members: list[Member],
    staff: Staff,
) -> float:
    """The staff member logs in, the members register and log in; the seconds it took."""
    started = time.monotonic()
    progress(
        f"setup: {settings.users} members register and log in, the staff member "
        f"{staff.username!r} logs in to the console, at {target.base_url}"
    )
    staff.log_in()
    _in_threads(
        [m.register for m in members], settings.setup_timeout, stop, "registering the members"
    )
    return time.monotonic() - started


@dataclass(frozen=True)
class _Load:
    seconds: float
    memory: dict[str, Any]
    totals: Counter[str]


def _load(
    target: Target,
    settings: Settings,
    progress: Callable[[str], None],
    stats: Stats,
    ledger: Ledger,
    stop: threading.Event,
    actors: list[Member | Staff],
) -> _Load:
    """Every actor in a thread of its own until the deadline; RSS after warm-up and at the end."""
    progress(
        f"load: {settings.seconds:g} s, {settings.users} members at {settings.rate:g} req/s "
        f"together, staff at {settings.staff_rate:g} req/s; RSS after a "
        f"{settings.warmup_seconds:g} s warm-up and at the end"
    )
    load_started = time.monotonic()
    deadline = load_started + settings.seconds
    threads = [
        threading.Thread(target=actor.run, args=(stop, deadline), daemon=True) for actor in actors
    ]
    for thread in threads:
        thread.start()
    rss_start: dict[str, dict[str, int]] = {}
    peak: Counter[str] = Counter()
    warmup_at = load_started + settings.warmup_seconds
    next_report = load_started + settings.progress_every
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline + settings.timeout * 3:
        time.sleep(0.2)
        now = time.monotonic()
        if not rss_start and now >= warmup_at and target.pids:
            rss_start = rss(target.pids)
            progress("warm-up over: RSS " + rss_line(rss_start))
        if now >= next_report:
            next_report += settings.progress_every
            current = rss(target.pids)
            for name, entry in current.items():
                peak[name] = max(peak[name], entry["rss_bytes"])
            progress(_progress_line(stats, ledger, now - load_started, settings, current))
    stop.set()
    for thread in threads:
        thread.join(timeout=settings.timeout * 2)
    stuck = sum(thread.is_alive() for thread in threads)
    if stuck:  # its writes may still change what the checks below count
        stats.problem(f"{stuck} load thread(s) still waiting on an answer after the load ended")
    load_seconds = time.monotonic() - load_started
    rss_end = rss(target.pids)
    if not rss_start:
        rss_start = rss_end
    for name, entry in rss_end.items():
        peak[name] = max(peak[name], entry["rss_bytes"])
    window = max(0.0, min(load_seconds, settings.seconds) - settings.warmup_seconds)
    memory = rss_report(rss_start, rss_end, dict(peak), window, settings)
    return _Load(load_seconds, memory, stats.total())


def _verify(
    target: Target,
    settings: Settings,
    progress: Callable[[str], None],
    stats: Stats,
    ledger: Ledger,
    members: list[Member],
    staff: Staff,
    since: datetime,
    setup_seconds: float,
    load: _Load,
) -> dict[str, Any]:
    """The checks after the load, and the results with their verdict."""
    progress("verify: resending unacknowledged keys, listing every member's orders")
    verify_stop = threading.Event()  # the load's stop must not cut the verification's waits
    for sender in (*(m.sender for m in members), staff.sender):
        sender.stop = verify_stop
    resolve_unacknowledged(members, ledger, stats)
    orders = verify_orders(members, stats)
    progress(f"verify: {orders['verified']} orders exactly once; polling the audit trail")
    events = verify_trail(staff, members, since, settings.audit_timeout, progress)
    result: dict[str, Any] = {
        "meta": _meta(target, settings, setup_seconds, load.seconds),
        "requests": stats.summary(),
        "load_totals": dict(sorted(load.totals.items())),
        "writes": {
            **dict(sorted(ledger.counts.items())),
            "orders verified exactly once": orders["verified"],
            "order states verified": orders["states_verified"],
        },
        "events": {k: v for k, v in events.items() if k != "problems"},
        "rss": load.memory,
    }
    result["failures"] = failures(result, stats, orders["problems"] + events["problems"])
    return result


def _in_threads(
    jobs: list[Callable[[], None]], timeout: float, stop: threading.Event, what: str
) -> None:
    errors: list[BaseException] = []

    def wrap(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(job,), daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        stop.set()
        raise SoakError(f"{what} took over {timeout:g} s (--setup-timeout)")
    if errors:
        raise errors[0]


def _meta(
    target: Target, settings: Settings, setup_seconds: float, load_seconds: float
) -> dict[str, Any]:
    return {
        **run_meta(),
        "base_url": target.base_url,
        "settings": {**asdict(settings), "warmup": settings.warmup_seconds},
        "setup_seconds": round(setup_seconds, 1),
        "load_seconds": round(load_seconds, 1),
    }


def _progress_line(
    stats: Stats,
    ledger: Ledger,
    elapsed: float,
    settings: Settings,
    sample: dict[str, dict[str, int]],
) -> str:
    total = stats.total()
    sent = sum(total.values())
    server_errors = sum(n for o, n in total.items() if o.isdigit() and int(o) >= 500)
    other = sum(n for o, n in total.items() if is_error(o)) - server_errors
    line = (
        f"{elapsed:4.0f}/{settings.seconds:g} s: {sent:,} requests ({sent / elapsed:.0f}/s), "
        f"{ledger.counts['orders acknowledged']:,} orders acknowledged, "
        f"5xx {server_errors}, other errors {other}, 429 {total.get('429', 0)}"
    )
    return line + (f"; RSS {rss_line(sample)}" if sample else "")
