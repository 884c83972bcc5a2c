"""What a soak runs against (:class:`Target`) and how hard and long (:class:`Settings`).

Also the public paths the load uses, and the error that stops a soak before it can run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

USERS = "/api/users"
ORDERS = "/api/orders"
AUDIT = "/api/audit/events"
CONSOLE = "/admin/support/users/"
#: The ready file names these processes; Prometheus is no part of the platform under test.
NOT_MEASURED = frozenset({"prometheus"})
STAFF_GROUP = "support-acting"


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
