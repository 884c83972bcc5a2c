"""``polyframe-bench soak``: a bounded mixed load through the ingress, then proof nothing broke.

Virtual users (threads, one HTTP client each) register once and log in once
(again only when their token nears its expiry), then loop, paced, until the
time or their request budget runs out: reads (``/me``, their order list, one of
their orders), order creations with an ``Idempotency-Key`` (retried with the same
key on a timeout, a connection error or a 5xx; some resent on purpose after their
201, which must replay the same order) and cancellations. One support staff member
logs in to the console once and looks users up, opens their pages, refunds orders
the users set aside for it, and reads the audit trail.

After the load: every key whose outcome the client never learnt is resent (the
answer says whether it had been created), every user's orders are listed (each
acknowledged order exactly once, nothing else, in the state its last acknowledged
change left it), and the audit trail is polled, with a bound, until it holds every
expected event exactly once. The RSS of each server's process tree (the server and
its workers) is taken after the warm-up and at the end of the load; its growth is
checked only when the window between them is long enough to mean something.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from polyframe_bench import procs
from polyframe_bench.bench import run_meta

USERS = "/api/users"
ORDERS = "/api/orders"
AUDIT = "/api/audit/events"
CONSOLE = "/admin/support/users/"
#: The ready file names these processes; Prometheus is no part of the platform under test.
NOT_MEASURED = frozenset({"prometheus"})
STAFF_GROUP = "support-acting"
#: Attempts of one request (the first included) on a timeout, connection error or 5xx.
WRITE_ATTEMPTS = 5
#: Seconds before the first retry, doubling.
RETRY_BACKOFF = 0.2
#: 429s honoured (Retry-After) before a request is given up.
RATE_LIMIT_ATTEMPTS = 6
MAX_RETRY_AFTER = 30.0
#: A token is renewed this long before it expires (never per request).
TOKEN_MARGIN = timedelta(seconds=60)
#: Members cancel only orders younger than this (the orders service's window is 30 minutes).
CANCEL_WITHIN = 15 * 60.0
PAGE = 100


class SoakError(Exception):
    """The soak cannot run; the message says what to do next."""


@dataclass(frozen=True)
class Settings:
    #: Seconds of load (setup and verification come on top).
    seconds: float = 300.0
    #: RSS is taken at this point of the load and at its end (default: a fifth, at most 60 s).
    warmup: float | None = None
    users: int = 8
    #: Requests per second of all users together (each user paces itself to its share).
    rate: float = 40.0
    #: Requests per second of the staff member.
    staff_rate: float = 2.0
    #: Per-request bound of the client (a request that takes longer is a timeout).
    timeout: float = 10.0
    #: Bound of the wait for the audit trail to hold every expected event.
    audit_timeout: float = 120.0
    #: Bound of registrations, log-ins and the staff log-in (rate limits included).
    setup_timeout: float = 180.0
    #: RSS growth is asserted only when warm-up end to load end spans at least this.
    rss_min_window: float = 120.0
    rss_limit: float = 0.10
    progress_every: float = 5.0
    seed: int | None = None

    @property
    def warmup_seconds(self) -> float:
        if self.warmup is not None:
            return min(self.warmup, self.seconds)
        return min(60.0, self.seconds / 5)

    def budget(self, rate: float) -> int:
        """The count bound of one loop: its paced share of the time, with room to spare."""
        return math.ceil(self.seconds * rate * 1.5) + 10


@dataclass(frozen=True)
class Target:
    base_url: str
    #: (username, password) of a support-acting staff member.
    staff: tuple[str, str]
    #: Server name -> pid, to measure RSS (a local platform's ready file); empty: not measured.
    pids: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_ready(cls, ready: dict[str, Any]) -> Target:
        """The target a ``polyframe-dev up`` ready file describes: ingress, staff, pids."""
        staff = json.loads(Path(ready["demo_staff_file"]).read_text())
        found = next((s for s in staff if s["group"] == STAFF_GROUP), None)
        if found is None:
            raise SoakError(f"{ready['demo_staff_file']} names no {STAFF_GROUP} staff member")
        return cls(
            base_url=str(ready["ingress"]).rstrip("/"),
            staff=(found["username"], found["password"]),
            pids={k: int(v) for k, v in ready["pids"].items() if k not in NOT_MEASURED},
        )


# -- what was sent and what came back --------------------------------------------------------


class Stats:
    """Every request: its kind, its outcome (status, ``timeout``, ``connection error``), latency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outcomes: dict[str, Counter[str]] = {}
        self.latencies: dict[str, list[float]] = {}
        self.problems: list[str] = []

    def record(self, kind: str, outcome: int | str, seconds: float) -> None:
        with self._lock:
            self.outcomes.setdefault(kind, Counter())[str(outcome)] += 1
            self.latencies.setdefault(kind, []).append(seconds)

    def problem(self, text: str) -> None:
        with self._lock:
            if len(self.problems) < 1000:
                self.problems.append(text)

    def total(self) -> Counter[str]:
        with self._lock:
            total: Counter[str] = Counter()
            for counts in self.outcomes.values():
                total.update(counts)
            return total

    def summary(self) -> dict[str, Any]:
        with self._lock:
            kinds = {}
            for kind in sorted(self.outcomes):
                latencies = sorted(self.latencies[kind])
                kinds[kind] = {
                    "sent": sum(self.outcomes[kind].values()),
                    "outcomes": dict(sorted(self.outcomes[kind].items())),
                    "p50_ms": percentile(latencies, 50) * 1000,
                    "p90_ms": percentile(latencies, 90) * 1000,
                    "p99_ms": percentile(latencies, 99) * 1000,
                    "max_ms": (latencies[-1] if latencies else 0.0) * 1000,
                }
        return kinds


def percentile(ordered: list[float], pct: float) -> float:
    """The nearest-rank percentile of an ascending list (0 for none)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def is_error(outcome: str) -> bool:
    """A 4xx (but 429, which a client waits out) or 5xx, or no answer at all."""
    if outcome.isdigit():
        status = int(outcome)
        return status >= 400 and status != 429
    return True


def retry_after(response: httpx.Response, default: float = 1.0) -> float:
    """Seconds a 429 asks to wait (``Retry-After``: seconds or an HTTP date), bounded."""
    value = response.headers.get("retry-after", "").strip()
    seconds = default
    if value.isdigit():
        seconds = float(value)
    elif value:
        with contextlib.suppress(TypeError, ValueError):
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class Caller:
    """One client's requests: recorded, 429s waited out, writes retried with the same request."""

    def __init__(self, client: httpx.Client, stats: Stats, stop: threading.Event) -> None:
        self.client = client
        self.stats = stats
        self.stop = stop

    def send(
        self, kind: str, method: str, url: str, *, retry: bool = False, **kwargs: Any
    ) -> httpx.Response | None:
        """The final answer (None: no answer after the attempts allowed)."""
        attempts = limited = 0
        while True:
            attempts += 1
            started = time.perf_counter()
            response: httpx.Response | None = None
            outcome: int | str
            try:
                response = self.client.request(method, url, **kwargs)
                outcome = response.status_code
            except httpx.TimeoutException:
                outcome = "timeout"
            except httpx.TransportError:
                outcome = "connection error"
            self.stats.record(kind, outcome, time.perf_counter() - started)
            if response is not None and response.status_code == 429:
                limited += 1
                if limited >= RATE_LIMIT_ATTEMPTS:
                    return response
                self.stop.wait(retry_after(response))
                continue
            failed = response is None or response.status_code >= 500
            if retry and failed and attempts < WRITE_ATTEMPTS:
                time.sleep(min(RETRY_BACKOFF * 2 ** (attempts - 1), 3.0))
                continue
            return response


# -- the orders the load made, and what must be true of them ---------------------------------


@dataclass
class OrderRecord:
    user: int
    key: str
    body: dict[str, Any]
    order_id: str | None = None
    #: paid | cancelled | refunded: the state its last acknowledged change left it in.
    expected: str = "paid"
    #: A cancel or refund whose answer never came: this state is as right as ``expected``.
    attempted: str | None = None
    reserved_for_staff: bool = False
    created: float = field(default_factory=time.monotonic)


class Ledger:
    """Counts of what the load did (acknowledged orders, cancels, refunds, replays)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1


def order_body(rng: random.Random) -> dict[str, Any]:
    return {
        "currency": "EUR",
        "items": [
            {
                "sku": f"SOAK-{rng.randrange(1, 50)}",
                "quantity": rng.randrange(1, 5),
                "unit_price_cents": rng.randrange(100, 10_000),
            }
            for _ in range(rng.randrange(1, 4))
        ],
    }


# -- the virtual users -----------------------------------------------------------------------


def paced(stop: threading.Event, deadline: float, interval: float, budget: int) -> Iterator[int]:
    """Iteration numbers, one every ``interval`` seconds, until the deadline or the budget."""
    next_at = time.monotonic()
    for number in range(budget):
        if stop.is_set() or time.monotonic() >= deadline:
            return
        yield number
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0 and stop.wait(min(pause, max(0.0, deadline - time.monotonic()))):
            return


def act(stats: Stats, who: str, step: Callable[[], None], pace: Iterable[object]) -> None:
    """One actor's load: ``step`` at each beat of ``pace``. Its first failure is a problem of
    the run and ends the actor; so is a crash, which must fail the soak, not thin the load."""
    for _ in pace:
        try:
            step()
        except SoakError as exc:
            stats.problem(str(exc))
            return
        except Exception as exc:
            stats.problem(f"{who} stopped on {exc!r}")
            return


class Member:
    """A member of the platform, as a client would be: registered once, logged in once."""

    def __init__(
        self,
        index: int,
        run_id: str,
        target: Target,
        settings: Settings,
        stats: Stats,
        ledger: Ledger,
        refunds: queue.Queue[OrderRecord],
        stop: threading.Event,
    ) -> None:
        self.index = index
        self.email = f"soak-{run_id}-{index}@example.com"
        self.password = f"soak-{uuid.uuid4().hex}"
        self.user_id: str | None = None
        self.settings = settings
        self.ledger = ledger
        self.refunds = refunds
        self.stats = stats
        self.rng = random.Random(None if settings.seed is None else settings.seed + index)
        self.client = httpx.Client(base_url=target.base_url, timeout=settings.timeout)
        self.caller = Caller(self.client, stats, stop)
        self.token = ""
        self.token_renew_at = datetime.min.replace(tzinfo=UTC)
        self.orders: list[OrderRecord] = []

    def close(self) -> None:
        self.client.close()

    def headers(self) -> dict[str, str]:
        if datetime.now(UTC) >= self.token_renew_at:
            self.log_in()
        return {"Authorization": f"Bearer {self.token}"}

    def register(self) -> None:
        body = {"email": self.email, "password": self.password, "full_name": "Soak Member"}
        response: httpx.Response | None = None
        for attempt in range(WRITE_ATTEMPTS):
            response = self.caller.send("setup: register", "POST", f"{USERS}/register", json=body)
            if response is not None and response.status_code == 201:
                break
            if response is not None and response.status_code == 409 and attempt > 0:
                break  # an earlier attempt got through without its answer: the account exists
            if response is not None and response.status_code < 500:
                break
            time.sleep(0.5)
        if response is None or response.status_code not in (201, 409):
            raise SoakError(
                f"registering {self.email} at {USERS}/register failed: {_answer(response)}"
            )
        self.log_in()
        me = self.caller.send("read: me", "GET", f"{USERS}/me", headers=self.headers())
        if me is None or me.status_code != 200:
            raise SoakError(f"{USERS}/me of a new member failed: {_answer(me)}")
        self.user_id = str(me.json()["id"])

    def log_in(self) -> None:
        response = self.caller.send(
            "log in (once, or when the token nears expiry)",
            "POST",
            f"{USERS}/login",
            retry=True,
            json={"email": self.email, "password": self.password},
        )
        if response is None or response.status_code != 200:
            raise SoakError(f"logging in at {USERS}/login failed: {_answer(response)}")
        answer = response.json()
        self.token = answer["access_token"]
        lifetime = timedelta(seconds=int(answer.get("expires_in", 900)))
        self.token_renew_at = datetime.now(UTC) + max(lifetime - TOKEN_MARGIN, lifetime / 2)

    def run(self, stop: threading.Event, deadline: float) -> None:
        interval = self.settings.users / self.settings.rate
        budget = self.settings.budget(self.settings.rate / self.settings.users)
        act(self.stats, f"member {self.email}", self.step, paced(stop, deadline, interval, budget))

    def step(self) -> None:
        roll = self.rng.random()
        own = [o for o in self.orders if o.order_id]
        if roll < 0.35 or not own:
            self.create_order()
        elif roll < 0.50:
            self.caller.send("read: me", "GET", f"{USERS}/me", headers=self.headers())
        elif roll < 0.65:
            self.caller.send(
                "read: my orders", "GET", ORDERS, params={"limit": 20}, headers=self.headers()
            )
        elif roll < 0.90:
            order = self.rng.choice(own)
            self.caller.send(
                "read: an order", "GET", f"{ORDERS}/{order.order_id}", headers=self.headers()
            )
        else:
            self.cancel_one(own)

    def create_order(self) -> None:
        record = OrderRecord(self.index, f"soak-{uuid.uuid4().hex}", order_body(self.rng))
        self.orders.append(record)
        created = self.post_order("write: create order", record)
        if created is None:
            return
        record.order_id = created
        self.ledger.count("orders acknowledged")
        if self.rng.random() < 0.15:
            # The client lost the answer (say): the same request again must name the same order.
            again = self.post_order("write: resend (same key)", record, replay=True)
            if again is not None and again != created:
                self.stats.problem(f"key {record.key} answered order {created}, then {again}")
            elif again is not None:
                self.ledger.count("resends that replayed the same order")
        elif self.rng.random() < 0.15:
            try:
                self.refunds.put_nowait(record)
                record.reserved_for_staff = True
            except queue.Full:
                pass

    def post_order(self, kind: str, record: OrderRecord, *, replay: bool = False) -> str | None:
        """The order id the answer names (None: no acknowledgement)."""
        response = self.caller.send(
            kind,
            "POST",
            ORDERS,
            retry=True,
            json=record.body,
            headers={**self.headers(), "Idempotency-Key": record.key},
        )
        if response is None or response.status_code != 201:
            self.stats.problem(f"{kind} with key {record.key}: {_answer(response)}")
            return None
        replayed = response.headers.get("idempotent-replayed") == "true"
        if replay and not replayed:
            self.stats.problem(f"key {record.key} resent: no Idempotent-Replayed: true")
        return str(response.json()["id"])

    def cancel_one(self, own: list[OrderRecord]) -> None:
        oldest = time.monotonic() - CANCEL_WITHIN
        paid = [
            o
            for o in own
            if o.expected == "paid" and not o.reserved_for_staff and o.created > oldest
        ]
        if not paid:
            return
        order = self.rng.choice(paid)
        response = self.caller.send(
            "write: cancel order",
            "POST",
            f"{ORDERS}/{order.order_id}/cancel",
            headers=self.headers(),
        )
        if response is not None and response.status_code == 200:
            order.expected = "cancelled"
            self.ledger.count("cancellations acknowledged")
            return
        order.attempted = "cancelled"
        order.reserved_for_staff = True  # never touched again: its outcome is settled at the end
        if response is not None:
            self.stats.problem(f"cancelling {order.order_id}: {_answer(response)}")


class Staff:
    """A support-acting staff member in the console (Django session and CSRF, like a browser)."""

    def __init__(
        self,
        target: Target,
        settings: Settings,
        stats: Stats,
        ledger: Ledger,
        refunds: queue.Queue[OrderRecord],
        members: list[Member],
        stop: threading.Event,
    ) -> None:
        self.username, self.password = target.staff
        self.settings = settings
        self.stats = stats
        self.ledger = ledger
        self.refunds = refunds
        self.members = members
        self.rng = random.Random(None if settings.seed is None else settings.seed - 1)
        self.client = httpx.Client(base_url=target.base_url, timeout=settings.timeout)
        self.caller = Caller(self.client, stats, stop)

    def close(self) -> None:
        self.client.close()

    def csrf(self) -> str:
        return str(self.client.cookies.get("csrftoken", ""))

    def log_in(self) -> None:
        form = self.caller.send("setup: staff log in", "GET", "/admin/login/")
        if form is None or form.status_code != 200 or not self.csrf():
            raise SoakError(
                f"the console's log-in page /admin/login/ answered {_answer(form)} without a "
                "CSRF cookie: is admin-django behind this ingress (and served over https "
                "outside development)?"
            )
        response = self.caller.send(
            "setup: staff log in",
            "POST",
            "/admin/login/?next=/admin/",
            data={
                "username": self.username,
                "password": self.password,
                "csrfmiddlewaretoken": self.csrf(),
                "next": "/admin/",
            },
        )
        if response is None or response.status_code != 302:
            raise SoakError(
                f"staff log-in as {self.username!r} failed ({_answer(response)}): check the "
                f"credentials (--staff username:password of a {STAFF_GROUP} member; `make up` "
                "prints them)"
            )

    def run(self, stop: threading.Event, deadline: float) -> None:
        interval = 1 / self.settings.staff_rate
        budget = self.settings.budget(self.settings.staff_rate)
        act(
            self.stats, f"staff {self.username}", self.step, paced(stop, deadline, interval, budget)
        )

    def step(self) -> None:
        roll = self.rng.random()
        members = [m for m in self.members if m.user_id]
        if roll < 0.4 and not self.refunds.empty():
            self.refund(self.refunds.get_nowait())
        elif roll < 0.55 and members:
            member = self.rng.choice(members)
            self.page("staff: console user search", CONSOLE, params={"email": member.email})
        elif roll < 0.8 and members:
            member = self.rng.choice(members)
            self.page("staff: console user page", f"{CONSOLE}{member.user_id}/")
        else:
            self.caller.send("staff: audit trail", "GET", AUDIT, params={"limit": 20})

    def page(self, kind: str, url: str, **kwargs: Any) -> str:
        response = self.caller.send(kind, "GET", url, **kwargs)
        return response.text if response is not None and response.status_code == 200 else ""

    def refund(self, order: OrderRecord) -> None:
        member = self.members[order.user]
        url = f"{CONSOLE}{member.user_id}/"
        response = self.caller.send(
            "staff: refund (console)",
            "POST",
            url,
            data={
                "action": "refund",
                "order_id": order.order_id,
                "reason": "soak: refunded by support",
                "csrfmiddlewaretoken": self.csrf(),
            },
            headers={"Referer": f"{self.client.base_url}{url}"},
        )
        if response is None or response.status_code != 302:
            order.attempted = "refunded"
            if response is not None:
                self.stats.problem(f"refund of {order.order_id}: {_answer(response)}")
            return
        # The console answers with a redirect to the user's page, which says what happened.
        text = self.page("staff: console user page", url)
        if f"Order {order.order_id} refunded." in text:
            order.expected = "refunded"
            self.ledger.count("refunds acknowledged")
        else:
            message = re.search(r'<li class="(?:error|warning)">([^<]*)</li>', text)
            order.attempted = "refunded"
            self.stats.problem(
                f"refund of {order.order_id}: "
                f"{message.group(1) if message else 'the console did not confirm it'}"
            )


def _answer(response: httpx.Response | None) -> str:
    if response is None:
        return "no answer (timeouts or connection errors)"
    return f"HTTP {response.status_code} {response.text[:200]!r}"


# -- memory ----------------------------------------------------------------------------------


def rss(pids: dict[str, int]) -> dict[str, dict[str, int]]:
    """RSS bytes and process count of each server's tree (0 processes: it is gone)."""
    found = {}
    for name, pid in pids.items():
        memory = procs.memory(procs.tree(pid))
        found[name] = {"rss_bytes": memory.rss_bytes, "processes": memory.processes}
    return found


def rss_report(
    start: dict[str, dict[str, int]],
    end: dict[str, dict[str, int]],
    peak: dict[str, int],
    window: float,
    settings: Settings,
) -> dict[str, Any]:
    """Growth of each server from the warm-up's end to the load's end, and whether it counts."""
    asserted = window >= settings.rss_min_window
    servers = {}
    for name, first in start.items():
        last = end.get(name, {"rss_bytes": 0, "processes": 0})
        growth = (last["rss_bytes"] - first["rss_bytes"]) / first["rss_bytes"] if first else 0.0
        servers[name] = {
            "start_mb": round(first["rss_bytes"] / 2**20, 1),
            "end_mb": round(last["rss_bytes"] / 2**20, 1),
            "peak_mb": round(peak.get(name, 0) / 2**20, 1),
            "growth_pct": round(growth * 100, 1),
            "processes": f"{first['processes']}->{last['processes']}",
            "ok": growth < settings.rss_limit and last["processes"] > 0,
        }
    note = (
        f"asserted (< {settings.rss_limit:.0%}): {window:.0f} s between the warm-up's end and "
        f"the load's end"
        if asserted
        else f"reported, not asserted: {window:.0f} s between the warm-up's end and the load's "
        f"end is under {settings.rss_min_window:.0f} s, where allocator arenas, caches and "
        "connection pools still fill up (noise, not a leak)"
    )
    if not start:
        note = "not measured: no process ids (a running platform needs --ready-file)"
    return {"asserted": asserted and bool(start), "note": note, "servers": servers}


# -- verification ----------------------------------------------------------------------------


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
    caller: Caller,
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
        response = caller.send(kind, "GET", url, params=page_params, headers=headers())
        if response is None or response.status_code != 200:
            raise SoakError(f"{what}: {_answer(response)}")
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise SoakError(f"{what}: {url} kept handing out cursors")


def list_orders(member: Member, expected: int) -> list[dict[str, Any]]:
    return all_pages(
        member.caller,
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
        staff.caller,
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


# -- the run ---------------------------------------------------------------------------------


def _say(message: str) -> None:
    import sys

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
        return _run(target, settings, progress, stats, ledger, stop, members, staff, since)
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


def _run(
    target: Target,
    settings: Settings,
    progress: Callable[[str], None],
    stats: Stats,
    ledger: Ledger,
    stop: threading.Event,
    members: list[Member],
    staff: Staff,
    since: datetime,
) -> dict[str, Any]:
    started_setup = time.monotonic()
    progress(
        f"setup: {settings.users} members register and log in, the staff member "
        f"{staff.username!r} logs in to the console, at {target.base_url}"
    )
    staff.log_in()
    _in_threads(
        [m.register for m in members], settings.setup_timeout, stop, "registering the members"
    )
    setup_seconds = time.monotonic() - started_setup
    progress(
        f"load: {settings.seconds:g} s, {settings.users} members at {settings.rate:g} req/s "
        f"together, staff at {settings.staff_rate:g} req/s; RSS after a "
        f"{settings.warmup_seconds:g} s warm-up and at the end"
    )
    load_started = time.monotonic()
    deadline = load_started + settings.seconds
    actors: list[Member | Staff] = [*members, staff]
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
            progress("warm-up over: RSS " + _rss_line(rss_start))
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
    load_totals = stats.total()

    progress("verify: resending unacknowledged keys, listing every member's orders")
    verify_stop = threading.Event()  # the load's stop must not cut the verification's waits
    for caller in (*(m.caller for m in members), staff.caller):
        caller.stop = verify_stop
    resolve_unacknowledged(members, ledger, stats)
    orders = verify_orders(members, stats)
    progress(f"verify: {orders['verified']} orders exactly once; polling the audit trail")
    events = verify_trail(staff, members, since, settings.audit_timeout, progress)
    result: dict[str, Any] = {
        "meta": _meta(target, settings, setup_seconds, load_seconds),
        "requests": stats.summary(),
        "load_totals": dict(sorted(load_totals.items())),
        "writes": {
            **dict(sorted(ledger.counts.items())),
            "orders verified exactly once": orders["verified"],
            "order states verified": orders["states_verified"],
        },
        "events": {k: v for k, v in events.items() if k != "problems"},
        "rss": memory,
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


def _rss_line(sample: dict[str, dict[str, int]]) -> str:
    return ", ".join(f"{name} {each['rss_bytes'] / 2**20:.0f} MB" for name, each in sample.items())


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
    return line + (f"; RSS {_rss_line(sample)}" if sample else "")
