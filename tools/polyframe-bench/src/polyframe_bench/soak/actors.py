"""The soak's actors: members (register, log in, read, order, cancel) and one support-acting
staff member in the console (look-ups, user pages, refunds, the audit trail), each paced to
its share of the rate until the load's time or request budget runs out.
"""

from __future__ import annotations

import queue
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from polyframe_bench.soak.ledger import Ledger, OrderRecord, order_body
from polyframe_bench.soak.sender import HttpSender, describe
from polyframe_bench.soak.settings import (
    AUDIT,
    CONSOLE,
    ORDERS,
    STAFF_GROUP,
    USERS,
    Settings,
    SoakError,
    Target,
)
from polyframe_bench.soak.stats import Stats

#: A token is renewed this long before it expires (never per request).
TOKEN_MARGIN = timedelta(seconds=60)
#: Members cancel only orders younger than this (the orders service's window is 30 minutes).
CANCEL_WITHIN = 15 * 60.0


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
        self.sender = HttpSender(self.client, stats, stop)
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
        response = self.sender.send(
            "setup: register", "POST", f"{USERS}/register", retry=True, json=body
        )
        # 409: an earlier attempt got through without its answer, so the account exists.
        if response is None or response.status_code not in (201, 409):
            raise SoakError(
                f"registering {self.email} at {USERS}/register failed: {describe(response)}"
            )
        self.log_in()
        me = self.sender.send("read: me", "GET", f"{USERS}/me", headers=self.headers())
        if me is None or me.status_code != 200:
            raise SoakError(f"{USERS}/me of a new member failed: {describe(me)}")
        self.user_id = str(me.json()["id"])

    def log_in(self) -> None:
        response = self.sender.send(
            "log in (once, or when the token nears expiry)",
            "POST",
            f"{USERS}/login",
            retry=True,
            json={"email": self.email, "password": self.password},
        )
        if response is None or response.status_code != 200:
            raise SoakError(f"logging in at {USERS}/login failed: {describe(response)}")
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
            self.sender.send("read: me", "GET", f"{USERS}/me", headers=self.headers())
        elif roll < 0.65:
            self.sender.send(
                "read: my orders", "GET", ORDERS, params={"limit": 20}, headers=self.headers()
            )
        elif roll < 0.90:
            order = self.rng.choice(own)
            self.sender.send(
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
        response = self.sender.send(
            kind,
            "POST",
            ORDERS,
            retry=True,
            json=record.body,
            headers={**self.headers(), "Idempotency-Key": record.key},
        )
        if response is None or response.status_code != 201:
            self.stats.problem(f"{kind} with key {record.key}: {describe(response)}")
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
        response = self.sender.send(
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
            self.stats.problem(f"cancelling {order.order_id}: {describe(response)}")


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
        self.sender = HttpSender(self.client, stats, stop)

    def close(self) -> None:
        self.client.close()

    def csrf(self) -> str:
        return str(self.client.cookies.get("csrftoken", ""))

    def log_in(self) -> None:
        form = self.sender.send("setup: staff log in", "GET", "/admin/login/")
        if form is None or form.status_code != 200 or not self.csrf():
            raise SoakError(
                f"the console's log-in page /admin/login/ answered {describe(form)} without a "
                "CSRF cookie: is admin-django behind this ingress (and served over https "
                "outside development)?"
            )
        response = self.sender.send(
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
                f"staff log-in as {self.username!r} failed ({describe(response)}): check the "
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
            self.sender.send("staff: audit trail", "GET", AUDIT, params={"limit": 20})

    def page(self, kind: str, url: str, **kwargs: Any) -> str:
        response = self.sender.send(kind, "GET", url, **kwargs)
        return response.text if response is not None and response.status_code == 200 else ""

    def refund(self, order: OrderRecord) -> None:
        member = self.members[order.user]
        url = f"{CONSOLE}{member.user_id}/"
        response = self.sender.send(
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
                self.stats.problem(f"refund of {order.order_id}: {describe(response)}")
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
