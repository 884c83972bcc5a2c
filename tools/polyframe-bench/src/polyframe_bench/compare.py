"""``polyframe-bench compare OLD.json NEW.json``: what got faster or slower, beyond the noise.

Each run records every round of every scenario (``runs``) and every cold-start sample.
For one scenario and metric, the change is NEW's median minus OLD's; the noise is the
larger of the two runs' own spreads (max - min over their rounds). A change beyond the
noise is *faster* or *slower* (higher req/s is faster; lower latency, CPU per request and
cold start are); anything else is *within noise*. A run of one round has no spread, so
every change of it counts: compare runs of several rounds. Memory is read once per run:
its change is shown, not judged.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

#: Per-round metrics of a scenario, and whether higher is better.
METRICS = {
    "rps": True,
    "p50_ms": False,
    "p99_ms": False,
    "cpu_us_per_request": False,
}


@dataclass(frozen=True, slots=True)
class Change:
    scenario: str
    metric: str
    old: float
    new: float
    #: The larger of the two runs' spreads (max - min of their rounds); None: not recorded.
    noise: float | None
    verdict: str  # faster | slower | within noise | not judged

    @property
    def percent(self) -> float:
        return (self.new - self.old) / self.old * 100 if self.old else 0.0


def classify(
    old: list[float], new: list[float], *, higher_is_better: bool
) -> tuple[float, float, float, str]:
    """Medians of both, the noise, and the verdict for one metric's per-round figures."""
    old_median, new_median = statistics.median(old), statistics.median(new)
    noise = max(max(old) - min(old), max(new) - min(new))
    change = new_median - old_median
    if abs(change) <= noise:
        return old_median, new_median, noise, "within noise"
    better = change > 0 if higher_is_better else change < 0
    return old_median, new_median, noise, "faster" if better else "slower"


def _rounds(results: dict[str, Any], scenario: str, metric: str) -> list[float]:
    return [
        float(run[metric])
        for run in results.get("runs", [])
        if run["scenario"] == scenario and run.get(metric) is not None
    ]


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    changes = []
    for scenario in old.get("summary", {}):
        if scenario not in new.get("summary", {}):
            continue
        for metric, higher in METRICS.items():
            before, after = _rounds(old, scenario, metric), _rounds(new, scenario, metric)
            if before and after:
                a, b, noise, verdict = classify(before, after, higher_is_better=higher)
                changes.append(Change(scenario, metric, a, b, noise, verdict))
    old_cold, new_cold = old.get("cold_start_ms", {}), new.get("cold_start_ms", {})
    for server in old_cold:
        if server in new_cold and "samples" in old_cold[server] and "samples" in new_cold[server]:
            a, b, noise, verdict = classify(
                old_cold[server]["samples"], new_cold[server]["samples"], higher_is_better=False
            )
            changes.append(Change(f"{server} cold start", "ms", a, b, noise, verdict))
    old_memory, new_memory = old.get("memory", {}), new.get("memory", {})
    for server in old_memory:
        if server in new_memory:
            changes.append(
                Change(
                    f"{server} memory",
                    "rss_per_worker_mb",
                    old_memory[server]["rss_per_worker_mb"],
                    new_memory[server]["rss_per_worker_mb"],
                    None,
                    "not judged",
                )
            )
    return changes


def markdown(changes: list[Change], old_name: str, new_name: str) -> str:
    counts = {v: sum(c.verdict == v for c in changes) for v in ("faster", "slower")}
    lines = [
        f"{old_name} -> {new_name}: {counts['faster']} faster, {counts['slower']} slower, "
        f"{len(changes) - sum(counts.values())} within noise or not judged (noise: the larger "
        "of the two runs' min-max spread over their rounds).",
        "",
        "| scenario | metric | old | new | change | noise | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in changes:
        verdict = f"**{c.verdict}**" if c.verdict in ("faster", "slower") else c.verdict
        noise = "-" if c.noise is None else f"{c.noise:,.1f}"
        lines.append(
            f"| {c.scenario} | {c.metric} | {c.old:,.1f} | {c.new:,.1f} | {c.percent:+.1f}% | "
            f"{noise} | {verdict} |"
        )
    return "\n".join(lines) + "\n"
