"""``polyframe-bench``: the framework comparison, measured on this machine (``make bench``)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from polyframe_bench import report, wrk
from polyframe_bench.bench import Settings, run
from polyframe_dev.paths import repo_root


def _run(args: argparse.Namespace) -> int:
    settings = (
        Settings(
            rounds=1, seconds=1, warmup_seconds=1, cold_starts=1, workers=args.workers, quick=True
        )
        if args.quick
        else Settings(
            rounds=args.rounds,
            seconds=args.seconds,
            warmup_seconds=args.warmup,
            cold_starts=args.cold_starts,
            workers=args.workers,
            postgres=args.postgres,
        )
    )
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
    try:
        results = run(settings, Path(args.scratch) / stamp)
    except wrk.WrkMissingError as exc:
        print(f"polyframe-bench: {exc}", file=sys.stderr)
        return 2
    base = out / stamp
    base.with_suffix(".json").write_text(json.dumps(results, indent=2))
    table = report.markdown(results)
    base.with_suffix(".md").write_text(table)
    report.chart(results, base.with_suffix(".png"))
    print(table)
    print(f"results: {base}.json, {base}.md, {base}.png", file=sys.stderr)
    if args.update_docs:
        docs = repo_root() / "docs" / "benchmarks.md"
        shutil.copyfile(base.with_suffix(".png"), docs.with_suffix(".png"))
        report.update_docs(docs, table, docs.with_suffix(".png").name)
        print(f"updated {docs}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    results = json.loads(Path(args.results).read_text())
    print(report.markdown(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="polyframe-bench",
        description="Measure what each framework costs here: requests per second and latency "
        "of each service's cheapest authenticated read and a write, an order creation at 50 and "
        "200 connections, the bare framework apps on the same servers, through Traefik and "
        "directly, with instrumentation on and off; memory and cold start. Needs Debian's wrk.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="start everything on 127.0.0.1, measure, write the results")
    go.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    go.add_argument("--seconds", type=float, default=8, help="seconds per load run (default 8)")
    go.add_argument(
        "--warmup", type=float, default=2, help="warm-up seconds, discarded (default 2)"
    )
    go.add_argument("--cold-starts", type=int, default=5, help="cold starts per server (default 5)")
    go.add_argument("--workers", type=int, default=2, help="workers per server (default 2)")
    go.add_argument(
        "--postgres",
        metavar="URL",
        help="keep the services' databases on this PostgreSQL server (default: SQLite files)",
    )
    go.add_argument(
        "--quick",
        action="store_true",
        help="one short round of the direct reads and bare apps: checks the harness, not speed",
    )
    root = repo_root()
    go.add_argument(
        "--results-dir",
        default=str(root / "bench" / "results"),
        help="where the JSON, Markdown and PNG of the run go (default bench/results)",
    )
    go.add_argument(
        "--scratch",
        default=str(root / ".data" / "bench"),
        help="data folders and logs of the processes under test (default .data/bench)",
    )
    go.add_argument(
        "--update-docs", action="store_true", help="put the results into docs/benchmarks.md"
    )
    go.set_defaults(func=_run)
    show = sub.add_parser("report", help="print the Markdown table of a results JSON")
    show.add_argument("results", help="a bench/results/*.json file")
    show.set_defaults(func=_report)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
