"""``polyframe-bench``: the framework comparison, measured on this machine (``make bench``)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from polyframe_bench import compare, rawfuzz, report, soak, wrk
from polyframe_bench.bench import DEFAULT_POSTGRES, Settings, run
from polyframe_bench.platform import Platform
from polyframe_dev.paths import repo_root


def _run(args: argparse.Namespace) -> int:
    postgres = None if args.sqlite else args.postgres
    settings = (
        Settings(
            rounds=1,
            seconds=1,
            warmup_seconds=1,
            cold_starts=1,
            workers=args.workers,
            quick=True,
            postgres=postgres,
        )
        if args.quick
        else Settings(
            rounds=args.rounds,
            seconds=args.seconds,
            warmup_seconds=args.warmup,
            cold_starts=args.cold_starts,
            workers=args.workers,
            postgres=postgres,
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
    if results["errors"]:
        print(
            "polyframe-bench: errors in "
            + ", ".join(f"{name} ({count})" for name, count in results["errors"].items())
            + f": zero are required; see the servers' logs in {Path(args.scratch) / stamp}",
            file=sys.stderr,
        )
        return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    old, new = (json.loads(Path(name).read_text()) for name in (args.old, args.new))
    print(compare.markdown(compare.compare(old, new), args.old, args.new), end="")
    return 0


def _report(args: argparse.Namespace) -> int:
    results = json.loads(Path(args.results).read_text())
    print(report.markdown(results))
    return 0


def _soak(args: argparse.Namespace) -> int:
    numbers = {flag.removeprefix("--").replace("-", "_") for flag in SOAK_NUMBERS}
    settings = soak.Settings(
        warmup=args.warmup, seed=args.seed, **{name: getattr(args, name) for name in numbers}
    )
    own: Platform | None = None
    try:
        if args.base_url:
            target = _soak_target(args)
        else:
            options = ["--workers", str(args.workers)]
            if args.postgres:
                options += ["--postgres", args.postgres]
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            own = Platform("soak", Path(args.scratch) / stamp, tuple(options))
            print(
                f"soak | starting the platform (logs: {own.folder}/platform.log)", file=sys.stderr
            )
            try:
                own.start()
            except RuntimeError as exc:
                raise soak.SoakError(f"{exc}; fix what it says, then run again") from exc
            target = soak.Target.from_ready(own.ready)
        results = soak.run(target, settings)
    except soak.SoakError as exc:
        print(f"polyframe-bench soak: {exc}", file=sys.stderr)
        return 2
    finally:
        if own is not None:
            own.stop()
    print(report.soak_markdown(results))
    if own is not None:
        if results["failures"]:
            print(f"soak | the platform's data and logs are kept in {own.folder}", file=sys.stderr)
        else:
            shutil.rmtree(own.folder, ignore_errors=True)  # a throw-away data folder
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"results: {args.json}", file=sys.stderr)
    return 1 if results["failures"] else 0


def _soak_target(args: argparse.Namespace) -> soak.Target:
    """``--base-url`` with ``--ready-file`` (staff and pids from it) or ``--staff``."""
    base_url = args.base_url.rstrip("/")
    if args.ready_file:
        try:
            ready = json.loads(Path(args.ready_file).read_text())
        except (OSError, ValueError) as exc:
            raise soak.SoakError(
                f"cannot read the ready file {args.ready_file} ({exc}): give the one "
                "`polyframe-dev up --ready-file` wrote"
            ) from exc
        target = soak.Target.from_ready(ready)
        staff = _staff(args.staff) if args.staff else target.staff
        return soak.Target(base_url, staff, target.pids)
    if not args.staff:
        raise soak.SoakError(
            "--base-url needs a support-acting staff member: --staff username:password "
            "(or SOAK_STAFF; `make up` prints the demo staff), or --ready-file of a local "
            "platform, which also lets the soak measure the servers' RSS"
        )
    return soak.Target(base_url, _staff(args.staff))


def _staff(value: str) -> tuple[str, str]:
    username, _, password = value.partition(":")
    if not (username and password):
        raise soak.SoakError("--staff takes username:password")
    return username, password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="polyframe-bench",
        description="Measure what each framework costs here: requests per second and latency "
        "of each service's cheapest authenticated read and a write, an order creation at 50 and "
        "200 connections, the bare framework apps and each framework's floor (the service's read "
        "with the raw driver on a pool) on the same servers, through Traefik and directly, with "
        "instrumentation on and off; memory and cold start; on PostgreSQL by default. Exits 1 "
        "if any request failed. Needs Debian's wrk.",
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
        default=DEFAULT_POSTGRES,
        help="the PostgreSQL server of the services' and floors' databases, fresh ones made "
        "for the run and dropped after it, also on failure or Ctrl-C (default "
        "$POLYFRAME_BENCH_POSTGRES or %(default)s)",
    )
    go.add_argument(
        "--sqlite",
        action="store_true",
        help="keep the services' databases in SQLite files instead (no floors then: they read "
        "PostgreSQL)",
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
    _add_soak(sub, root)
    _add_rawfuzz(sub)
    show = sub.add_parser("report", help="print the Markdown table of a results JSON")
    show.add_argument("results", help="a bench/results/*.json file")
    show.set_defaults(func=_report)
    diff = sub.add_parser(
        "compare",
        help="what got faster or slower between two runs, beyond their own spread",
        description="Per scenario and metric (req/s, p50, p99, CPU per request; cold start per "
        "server): the change of the median from OLD to NEW, judged against the noise, the "
        "larger of the two runs' min-max spread over their rounds (cold starts: over their "
        "samples). Beyond it: faster or slower; else: within noise. One-round runs have no "
        "spread, so every change counts: compare runs of 3 rounds or more. Memory (one reading "
        "per run) is shown, not judged.",
    )
    diff.add_argument("old", help="the earlier bench/results/*.json")
    diff.add_argument("new", help="the later bench/results/*.json")
    diff.set_defaults(func=_compare)
    args = parser.parse_args(argv)
    return int(args.func(args))


#: The soak's numeric settings (``soak.Settings`` fields) and what they mean.
SOAK_NUMBERS = {
    "--seconds": "seconds of load",
    "--users": "members, each registering and logging in once",
    "--rate": "requests per second of all members together",
    "--staff-rate": "requests per second of the staff member",
    "--timeout": "seconds one request may take",
    "--audit-timeout": "seconds to wait after the load for the audit trail to be complete",
    "--setup-timeout": "seconds the registrations and log-ins may take, rate limits included",
    "--rss-min-window": "RSS growth is asserted only when warm-up end to load end spans this "
    "many seconds; shorter runs report it",
}


def _add_soak(sub: Any, root: Path) -> None:
    defaults = soak.Settings()
    go = sub.add_parser(
        "soak",
        help="a bounded mixed load through the ingress; then every write and audit event checked",
        description="A bounded mixed load through the ingress: members (registered and logged "
        "in once each) read, create orders with an Idempotency-Key (retried with the same key "
        "on timeouts, connection errors and 5xx; some resent on purpose) and cancel some; a "
        "support-acting staff member uses the console (look-ups, user pages, refunds) and reads "
        "the audit trail. Then: every acknowledged order exactly once, in its final state; every "
        "event of those changes exactly once in /api/audit (polled, bounded); RSS of each "
        "server's process tree after the warm-up against the end. Fails (exit 1) on any 5xx, "
        "unexpected 4xx or unanswered request, a lost or doubled write, a missing or doubled "
        "event, or RSS growth of 10% or more (asserted only when warm-up end to load end spans "
        "--rss-min-window seconds). Exit 2: it could not run (the message says what to do). "
        "Without --base-url it starts its own platform, like `make up`, on free ports in a "
        "throw-away data folder.",
    )
    for flag, text in SOAK_NUMBERS.items():
        name = flag.removeprefix("--").replace("-", "_")
        default = getattr(defaults, name)
        go.add_argument(
            flag, type=type(default), default=default, help=f"{text} (default {default:g})"
        )
    go.add_argument(
        "--warmup",
        type=float,
        help="seconds of load before the first RSS sample (default: a fifth of --seconds, "
        "at most 60)",
    )
    go.add_argument("--seed", type=int, help="random seed of the request mix")
    go.add_argument(
        "--base-url",
        metavar="URL",
        help="load this running platform's ingress instead of starting one",
    )
    go.add_argument(
        "--staff",
        metavar="USER:PASSWORD",
        default=os.environ.get("SOAK_STAFF"),
        help="with --base-url: a support-acting staff member (default $SOAK_STAFF)",
    )
    go.add_argument(
        "--ready-file",
        metavar="PATH",
        help="with --base-url: the ready file of that local platform (`polyframe-dev up "
        "--ready-file`): its staff, and its pids to measure RSS",
    )
    go.add_argument(
        "--workers",
        type=int,
        default=2,
        help="workers per server of the platform it starts (default 2)",
    )
    go.add_argument(
        "--postgres",
        metavar="URL",
        help="the platform it starts keeps its databases on this PostgreSQL server",
    )
    go.add_argument(
        "--scratch",
        default=str(root / ".data" / "soak"),
        help="data folder and logs of the platform it starts (default .data/soak)",
    )
    go.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    go.set_defaults(func=_soak)


def _rawfuzz(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    print(f"rawfuzz | seed {seed} (--seed {seed} replays this run)", file=sys.stderr, flush=True)
    try:
        token = None if args.no_token else (args.token or rawfuzz.member_token(args.url))
        results = rawfuzz.run(
            args.url,
            seed=seed,
            requests=args.requests,
            seconds=args.seconds,
            token=token,
            concurrency=args.concurrency,
            timeout=args.timeout,
            cases=args.case or None,
            progress=lambda line: print(f"rawfuzz | {line}", file=sys.stderr, flush=True),
        )
    except (ValueError, OSError, httpx.HTTPError) as exc:
        print(f"polyframe-bench rawfuzz: cannot run against {args.url}: {exc}", file=sys.stderr)
        return 2
    print(results.table())
    if results.refused:
        print(f"\n{len(results.refused)} case(s) with broken framing refused by the ingress:")
        print(results.describe_failures((token,) if token else (), limit=3, refused=True))
    if results.failures:
        print(f"\n{len(results.failures)} case(s) answered 5xx:")
        print(results.describe_failures((token,) if token else ()))
        return 1
    return 0


def _add_rawfuzz(sub: Any) -> None:
    go = sub.add_parser(
        "rawfuzz",
        help="hostile raw HTTP bytes through the ingress; fails on any 5xx answer",
        description="Raw-HTTP fuzzing through the ingress (bytes, not schemas): valid requests "
        "to the platform's routes, mutated in the request line, headers, framing and body, each "
        "on its own TCP connection with a timeout; bounded in count and time. Prints the "
        "answers by mutation and by route. Exit 1 when any answer was a 5xx (each such case is "
        "printed with its seed and bytes), 2 when it could not run.",
    )
    go.add_argument(
        "--url",
        default=os.environ.get("E2E_BASE_URL", "").strip() or None,
        required=not os.environ.get("E2E_BASE_URL", "").strip(),
        help="the ingress, e.g. http://127.0.0.1:8080 (default $E2E_BASE_URL)",
    )
    go.add_argument("--requests", type=int, default=2000, help="cases at most (default 2000)")
    go.add_argument("--seconds", type=float, default=45, help="seconds at most (default 45)")
    go.add_argument("--seed", type=int, help="PRNG seed (default: random, printed)")
    go.add_argument(
        "--case",
        type=int,
        action="append",
        help="replay only this case of --seed (repeatable)",
    )
    go.add_argument("--concurrency", type=int, default=4, help="connections at once (default 4)")
    go.add_argument(
        "--timeout", type=float, default=10, help="seconds one connection may take (default 10)"
    )
    go.add_argument(
        "--token",
        default=os.environ.get("RAWFUZZ_TOKEN"),
        help="a member's bearer token (default $RAWFUZZ_TOKEN; else a new member registers)",
    )
    go.add_argument(
        "--no-token", action="store_true", help="send no bearer token (register no member)"
    )
    go.set_defaults(func=_rawfuzz)


if __name__ == "__main__":
    raise SystemExit(main())
