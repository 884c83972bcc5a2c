"""A run's JSON as a Markdown table in the seed article's shape, a PNG chart, and docs.

The seed article's table (its claims, not measured here): FastAPI 12,000 req/s,
90 MB, 300 ms cold start; Flask 4,500 req/s, 120 MB, 150 ms; Django 2,800
req/s, 310 MB, 1,200 ms.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from polyframe_bench.servers import BASELINE_OF, FLOOR_OF

SEED = {
    "users-fastapi": ("FastAPI", 12_000, 90, 300),
    "legacy-flask": ("Flask", 4_500, 120, 150),
    "admin-django": ("Django", 2_800, 310, 1_200),
}
BASELINE = {
    "users-fastapi": "bare-fastapi",
    "legacy-flask": "bare-flask",
    "admin-django": "bare-django",
}
DOCS_START = "<!-- bench:results:start -->"
DOCS_END = "<!-- bench:results:end -->"


def _median(results: dict[str, Any], scenario: str, key: str) -> float | None:
    entry = results["summary"].get(scenario)
    return float(entry[key]["median"]) if entry else None


def _spread(results: dict[str, Any], scenario: str, key: str, fmt: str = "{:,.0f}") -> str:
    entry = results["summary"].get(scenario)
    if not entry:
        return "-"
    value = entry[key]
    return f"{fmt.format(value['median'])} ({fmt.format(value['min'])}-{fmt.format(value['max'])})"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    settings = meta["settings"]
    lines = [
        f"Measured {meta['date']} at `{meta['git']}` on {meta['cpus']} CPUs ({meta['machine']}, "
        f"Python {meta['python']}): {settings['rounds']} interleaved rounds of "
        f"{settings['seconds']:g} s per scenario after a {settings['warmup_seconds']:g} s "
        f"warm-up, {settings['workers']} workers per server, wrk on the same cores. "
        "Medians (min-max).",
        "",
    ]
    lines += floors(results)
    lines += [
        "",
        "Against the seed article:",
        "",
        "| framework (service) | req/s, cheapest authenticated read | p50 / p99 ms | "
        "memory (RSS, all processes) | cold start to /readyz | bare app req/s | "
        "bare memory | bare cold start | seed's claim (req/s, MB, cold start) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    memory = results.get("memory", {})
    cold = results.get("cold_start_ms", {})
    for service, (framework, claim_rps, claim_mb, claim_ms) in SEED.items():
        read = f"{service} read direct instr-on"
        bare = BASELINE_OF[service]
        bare_scenario = f"{bare} hello direct"
        lines.append(
            "| "
            + " | ".join(
                [
                    f"{framework} ({service})",
                    _spread(results, read, "rps")
                    + " = "
                    + _ratio(_median(results, read, "rps"), _median(results, bare_scenario, "rps"))
                    + " bare",
                    f"{_median(results, read, 'p50_ms') or 0:.1f} / "
                    f"{_median(results, read, 'p99_ms') or 0:.1f}",
                    _mb(memory.get(service)),
                    _ms(cold.get(service)),
                    _spread(results, bare_scenario, "rps"),
                    _mb(memory.get(bare)),
                    _ms(cold.get(bare)),
                    f"{claim_rps:,} req/s, {claim_mb} MB, {claim_ms:,} ms",
                ]
            )
            + " |"
        )
    lines += ["", "Every scenario:", ""]
    lines += [
        "| scenario | connections | req/s | p50 ms | p99 ms | CPU µs/request | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in results["summary"].items():
        lines.append(
            f"| {name} | {entry['connections']} | {_spread(results, name, 'rps')} | "
            f"{entry['p50_ms']['median']:.1f} | {entry['p99_ms']['median']:.1f} | "
            f"{entry['cpu_us_per_request']['median']:,.0f} | {entry['errors']} |"
        )
    lines += ["", "Memory after the load (each server's whole process tree):", ""]
    lines += [
        "| server | processes | RSS MB | PSS MB | RSS per worker MB |",
        "|---|---|---|---|---|",
    ]
    for name, entry in memory.items():
        lines.append(
            f"| {name} | {entry['processes']} | {entry['rss_mb']:.1f} | {entry['pss_mb']:.1f} | "
            f"{entry['rss_per_worker_mb']:.1f} |"
        )
    lines += ["", "Cold start, process spawn to the first `/readyz` 200:", ""]
    lines += ["| server | median ms | min ms | max ms |", "|---|---|---|---|"]
    for name, entry in cold.items():
        lines.append(
            f"| {name} | {entry['median']:,.0f} | {entry['min']:,.0f} | {entry['max']:,.0f} |"
        )
    lines += ["", "Goals (issue 18; measured in this run):", ""]
    lines += ["| goal | service | measured | target | met |", "|---|---|---|---|---|"]
    for goal in results.get("goals", []):
        errors = f", {goal['errors']} errors" if "errors" in goal else ""
        lines.append(
            f"| {goal['goal']} | {goal['service']} | {goal['ratio']:g}{errors} | "
            f"{goal['target']}{' with zero errors' if errors else ''} | "
            f"{'met' if goal['met'] else '**not met**'} |"
        )
    found = results.get("errors", {})
    lines += [
        "",
        "Errors (non-2xx answers and socket errors; the run fails on any): "
        + (", ".join(f"{name}: {count}" for name, count in found.items()) or "none")
        + ".",
    ]
    postgres = results.get("postgres")
    if postgres:
        lines += [
            "",
            f"PostgreSQL: the run's databases held up to {postgres['peak_held_by_the_run']} "
            f"connections (sampled after each load run) of the server's "
            f"{postgres['max_connections']}; {postgres['free_at_start']} were free at the start.",
        ]
    return "\n".join(lines) + "\n"


def floors(results: dict[str, Any]) -> list[str]:
    """Per service: its costs against its floors, as ratios (and differences) of this run."""
    cold = results.get("cold_start_ms", {})
    memory = results.get("memory", {})
    rows = []
    for service in SEED:
        read = f"{service} read direct instr-on"
        floor = FLOOR_OF[service]
        bare = BASELINE_OF[service]
        cpu, floor_cpu = (
            _median(results, read, "cpu_us_per_request"),
            _median(results, f"{floor} read direct", "cpu_us_per_request"),
        )
        service_cold, floor_cold = (cold.get(service), cold.get(floor))
        service_mb, bare_mb = memory.get(service), memory.get(bare)
        on, off = (
            _median(results, read, "rps"),
            _median(results, read.replace("-on", "-off"), "rps"),
        )
        errors = sum(
            entry["errors"]
            for entry in results["summary"].values()
            if entry.get("subject") == service
        )
        rows.append(
            [
                service,
                f"{cpu or 0:,.0f} / {floor_cpu or 0:,.0f} = {_ratio(cpu, floor_cpu)}",
                f"{service_cold['median'] if service_cold else 0:,.0f} / "
                f"{floor_cold['median'] if floor_cold else 0:,.0f} = "
                + _ratio(
                    service_cold["median"] if service_cold else None,
                    floor_cold["median"] if floor_cold else None,
                ),
                f"{service_mb['rss_per_worker_mb']:.0f} - {bare_mb['rss_per_worker_mb']:.0f} = "
                f"+{service_mb['rss_per_worker_mb'] - bare_mb['rss_per_worker_mb']:.0f}"
                if service_mb and bare_mb
                else "-",
                _ratio(on, off),
                str(errors),
            ]
        )
    lines = ["Each service against its floors (medians of this run):", ""]
    lines += table(
        [
            "service",
            "CPU µs per read: service / floor",
            "cold start ms: service / readiness floor",
            "MB per worker: service - bare app",
            "observability tax (req/s on / off)",
            "errors",
        ],
        rows,
    )
    order = results["summary"].get("legacy-flask create order (calls users) ingress c50 instr-on")
    if order:
        lines += [
            "",
            f"Order creation through Traefik, 50 connections: p99 {order['p99_ms']['median']:,.0f} "
            f"ms ({order['p99_ms']['min']:,.0f}-{order['p99_ms']['max']:,.0f}), "
            f"{order['rps']['median']:,.0f} req/s, {order['errors']} errors.",
        ]
    return lines


def _mb(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    return (
        f"{entry['rss_mb']:.0f} MB ({entry['processes']} proc., "
        f"{entry['rss_per_worker_mb']:.0f}/worker)"
    )


def _ms(entry: dict[str, Any] | None) -> str:
    return f"{entry['median']:,.0f} ms" if entry else "-"


def chart(results: dict[str, Any], path: Path) -> None:
    """Requests per second and cold start, service against bare app, per framework."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frameworks = [SEED[s][0] for s in SEED]
    series = {
        "service (instrumented)": [
            _median(results, f"{s} read direct instr-on", "rps") or 0 for s in SEED
        ],
        "service (uninstrumented)": [
            _median(results, f"{s} read direct instr-off", "rps") or 0 for s in SEED
        ],
        "through Traefik": [
            _median(results, f"{s} read ingress instr-on", "rps") or 0 for s in SEED
        ],
        "bare app": [_median(results, f"{BASELINE_OF[s]} hello direct", "rps") or 0 for s in SEED],
    }
    cold = results.get("cold_start_ms", {})
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.2
    for index, (label, values) in enumerate(series.items()):
        left.bar([x + index * width for x in range(3)], values, width, label=label)
    left.set_xticks([x + 1.5 * width for x in range(3)], frameworks)
    left.set_ylabel("requests per second (median)")
    left.set_title("Cheapest authenticated read vs the bare app")
    left.legend(fontsize=8)
    right.bar(
        [x - 0.15 for x in range(3)],
        [cold.get(s, {}).get("median", 0) for s in SEED],
        0.3,
        label="service",
    )
    right.bar(
        [x + 0.15 for x in range(3)],
        [cold.get(BASELINE_OF[s], {}).get("median", 0) for s in SEED],
        0.3,
        label="bare app",
    )
    right.set_xticks(range(3), frameworks)
    right.set_ylabel("ms, spawn to /readyz 200 (median)")
    right.set_title("Cold start")
    right.legend(fontsize=8)
    figure.suptitle(f"Polyframe benchmark {results['meta']['date']} ({results['meta']['git']})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def update_docs(docs: Path, table: str, chart_name: str) -> None:
    """Replace the results between the markers of ``docs/benchmarks.md`` (the prose stays)."""
    text = docs.read_text(encoding="utf-8")
    if DOCS_START not in text or DOCS_END not in text:
        raise ValueError(f"{docs} has no {DOCS_START} … {DOCS_END} section to update")
    block = f"{DOCS_START}\n{table}\n![benchmark chart]({chart_name})\n{DOCS_END}"
    docs.write_text(
        re.sub(
            re.escape(DOCS_START) + ".*?" + re.escape(DOCS_END), lambda _: block, text, flags=re.S
        ),
        encoding="utf-8",
    )


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _ms_cell(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def soak_markdown(results: dict[str, Any]) -> str:
    """The summary of a soak: requests, errors, writes and events verified, RSS growth."""
    meta = results["meta"]
    settings = meta["settings"]
    failures = results["failures"]
    lines = [
        f"Soak of {meta['base_url']} on {meta['date']} at `{meta['git']}` ({meta['cpus']} CPUs, "
        f"Python {meta['python']}): {meta['load_seconds']:g} s of load after "
        f"{meta['setup_seconds']:g} s of setup; {settings['users']} members at "
        f"{settings['rate']:g} req/s together, one support-acting staff member at "
        f"{settings['staff_rate']:g} req/s; RSS after a {settings['warmup']:g} s warm-up and at "
        f"the end. Verdict: **{'FAILED' if failures else 'passed'}**.",
        "",
        "Requests sent (setup and verification included; every attempt of a retried request "
        "counts):",
        "",
    ]
    rows = []
    total: dict[str, int] = {}
    for kind, entry in results["requests"].items():
        outcomes: dict[str, int] = entry["outcomes"]
        for outcome, count in outcomes.items():
            total[outcome] = total.get(outcome, 0) + count
        ok = sum(n for o, n in outcomes.items() if o.isdigit() and int(o) < 400)
        errors = ", ".join(
            f"{o}: {n}" for o, n in outcomes.items() if not (o.isdigit() and int(o) < 400)
        )
        rows.append(
            [
                kind,
                f"{entry['sent']:,}",
                f"{ok:,}",
                errors or "-",
                *(_ms_cell(entry[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
            ]
        )
    sent = sum(total.values())
    ok_total = sum(n for o, n in total.items() if o.isdigit() and int(o) < 400)
    rows.append(["**all**", f"**{sent:,}**", f"{ok_total:,}", "", "", "", "", ""])
    lines += table(
        ["kind", "sent", "2xx/3xx", "other answers", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows
    )
    lines += [
        "",
        "Answers other than 2xx/3xx, all kinds together (429s are waited out, not errors):",
        "",
    ]
    others = {o: n for o, n in total.items() if not (o.isdigit() and int(o) < 400)}
    lines += table(
        ["status", "count"],
        [[o, f"{n:,}"] for o, n in sorted(others.items())] or [["none", "0"]],
    )
    lines += [
        "",
        "Writes verified (each acknowledged order exactly once in its owner's list, "
        "nothing else, in its final state):",
        "",
    ]
    lines += table(["", "count"], [[k, f"{v:,}"] for k, v in results["writes"].items()])
    events = results["events"]
    lines += [
        "",
        "Audit trail (read as staff; each event of an acknowledged change exactly once):",
        "",
    ]
    lines += table(
        ["expected", "verified", "missing", "duplicated", "unexpected", "polled for s"],
        [
            [
                f"{events['expected']:,}",
                f"{events['verified']:,}",
                str(events["missing"]),
                str(events["duplicated"]),
                str(events["unexpected"]),
                f"{events['seconds_to_complete']:g}",
            ]
        ],
    )
    memory = results["rss"]
    lines += [
        "",
        f"RSS of each server's process tree, warm-up end -> load end: {memory['note']}.",
        "",
    ]
    lines += table(
        ["server", "processes", "start MB", "end MB", "peak MB", "growth"],
        [
            [
                name,
                entry["processes"],
                f"{entry['start_mb']:.1f}",
                f"{entry['end_mb']:.1f}",
                f"{entry['peak_mb']:.1f}",
                f"{entry['growth_pct']:+.1f}%",
            ]
            for name, entry in memory["servers"].items()
        ]
        or [["-", "-", "-", "-", "-", "-"]],
    )
    if failures:
        lines += ["", "Failures:", ""] + [f"- {failure}" for failure in failures]
    return "\n".join(lines) + "\n"
