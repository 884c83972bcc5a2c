"""What the load sent and what came back: per kind of request, its outcomes and latencies.

Also the problems the actors met, and which outcomes count as errors.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Any


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
