"""What the load wrote, as the client knows it: each order's key, id and expected state.

The checks after the load compare this ledger with what the services hold.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


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
