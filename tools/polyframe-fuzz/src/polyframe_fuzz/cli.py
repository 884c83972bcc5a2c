"""``polyframe-fuzz``: coverage-guided fuzzing of one service's request path, in process.

``polyframe-fuzz run SERVICE`` starts the libFuzzer target (``polyframe-fuzz-target``, see
:mod:`polyframe_fuzz.harness`) in a subprocess on a copy of the repository's corpus
(``tools/polyframe-fuzz/corpus/SERVICE``), shows its progress (executions, coverage) and
exits non-zero on a crash, with the crashing input saved and shown. ``--grow`` keeps what
the run found: the corpus and the new inputs are merged (libFuzzer's ``-merge=1``: the
fewest, smallest inputs that keep every feature) back into the repository's corpus.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from polyframe_fuzz.harness import HANG_VARIABLE, SERVICE_VARIABLE
from polyframe_fuzz.targets import SERVICES

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
CORPUS_ROOT = PACKAGE_ROOT / "corpus"
REGRESSIONS_ROOT = PACKAGE_ROOT / "regressions"
#: libFuzzer's status lines: "#1024  NEW    cov: 1300 ft: 1900 corp: 30/80b … exec/s: 400 …".
STATUS = re.compile(
    r"^#(?P<runs>\d+)\s+(?P<event>\w+)\s+cov: (?P<cov>\d+) ft: (?P<ft>\d+) corp: (?P<corp>\d+)"
    r"(?:.*?exec/s: (?P<rate>\d+))?"
)
ARTIFACT = re.compile(r"Test unit written to (?P<path>\S+)")
#: How many of the target's last lines (not progress) a failure shows.
REPORT_LINES = 120
STARTED = re.compile(r"==polyframe-fuzz== \S+ started in (?P<seconds>[\d.]+) s")


@dataclass
class Outcome:
    """What one run did, read from libFuzzer's output."""

    returncode: int = 0
    runs: int = 0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    rate: int = 0
    startup_seconds: float = 0.0
    fuzz_seconds: float = 0.0
    crashes: list[Path] = field(default_factory=list)
    report: list[str] = field(default_factory=list)

    @property
    def crashed(self) -> bool:
        return bool(self.crashes) or self.returncode != 0

    def summary(self, service: str) -> str:
        return (
            f"{service}: {self.runs} executions in {self.fuzz_seconds:.0f} s "
            f"(~{self.runs / max(self.fuzz_seconds, 0.001):.0f}/s, last exec/s {self.rate}), "
            f"cov {self.cov} ft {self.ft}, corpus {self.corpus}, start-up "
            f"{self.startup_seconds:.1f} s, crashes {len(self.crashes)}"
        )


def target_script() -> str:
    """``polyframe-fuzz-target`` of this environment (next to its Python), else on PATH."""
    beside = Path(sys.executable).parent / "polyframe-fuzz-target"
    return str(beside) if beside.exists() else shutil.which("polyframe-fuzz-target") or beside.name


def fuzz(
    service: str,
    corpus: Path,
    artifacts: Path,
    *,
    seconds: int | None = None,
    runs: int | None = None,
    seed: int | None = None,
    hang_seconds: float = 2.0,
    extra: list[str] | None = None,
    echo: bool = True,
) -> Outcome:
    """Run the target on ``corpus`` (new inputs are written there) until ``seconds`` or
    ``runs``; crashes are saved under ``artifacts``. ``seed``: libFuzzer's (random if None)."""
    command = [
        target_script(),
        f"-artifact_prefix={artifacts}/",
        # The harness's watchdog bounds each input at hang_seconds. atheris's own alarm is a
        # backstop far above it: it reads 0 as "no time at all" and kills the process.
        f"-timeout={int(hang_seconds * 10 + 60)}",
        "-rss_limit_mb=4096",
        "-print_final_stats=1",
        *([f"-max_total_time={seconds}"] if seconds is not None else []),
        *([f"-runs={runs}"] if runs is not None else []),
        *([f"-seed={seed}"] if seed is not None else []),
        str(corpus),  # the first directory is where new inputs (or a merge's) are written
        *(extra or []),
    ]
    environment = {**os.environ, SERVICE_VARIABLE: service, HANG_VARIABLE: str(hang_seconds)}
    # Start-up is mostly compiling the imports (a few seconds each): let the bytecode cache
    # be written even where the shell says otherwise (__pycache__ is ignored by git).
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    outcome = Outcome()
    started = time.monotonic()
    fuzzing_since = started
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=environment,
        text=True,
        errors="replace",
    )
    assert process.stderr is not None
    last_shown = 0.0
    for line in process.stderr:
        line = line.rstrip("\n")
        if match := STARTED.search(line):
            outcome.startup_seconds = float(match["seconds"])
            fuzzing_since = time.monotonic()
            if echo:
                print(f"{service}: started in {outcome.startup_seconds:.1f} s", flush=True)
        elif match := STATUS.match(line):
            outcome.runs = int(match["runs"])
            outcome.cov, outcome.ft, outcome.corpus = (
                int(match["cov"]),
                int(match["ft"]),
                int(match["corp"]),
            )
            outcome.rate = int(match["rate"] or outcome.rate)
            now = time.monotonic()
            if echo and (now - last_shown > 5 or match["event"] in ("DONE", "INITED")):
                last_shown = now
                print(
                    f"{service}: #{outcome.runs} {match['event'].lower()} cov {outcome.cov} "
                    f"ft {outcome.ft} corpus {outcome.corpus} exec/s {outcome.rate}",
                    flush=True,
                )
        elif match := ARTIFACT.search(line):
            outcome.crashes.append(Path(match["path"]))
        if not line.startswith(("INFO: Instrumenting", "#")):
            outcome.report.append(line)  # what led to a crash: the last lines before it
            del outcome.report[:-REPORT_LINES]
    process.stderr.close()
    outcome.returncode = process.wait()
    outcome.fuzz_seconds = time.monotonic() - fuzzing_since
    return outcome


def merge(service: str, into: Path, *sources: Path, artifacts: Path) -> None:
    """The smallest set of inputs of ``sources`` that keeps all their features, in ``into``."""
    fuzz(service, into, artifacts, extra=["-merge=1", *map(str, sources)], echo=False)


def run(args: argparse.Namespace) -> int:
    service: str = args.service
    repo_corpus = CORPUS_ROOT / service
    repo_corpus.mkdir(parents=True, exist_ok=True)
    artifacts = Path(
        args.artifacts or tempfile.mkdtemp(prefix=f"polyframe-fuzz-{service}-crashes-")
    )
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"polyframe-fuzz-{service}-") as scratch:
        corpus = Path(scratch) / "corpus"
        shutil.copytree(repo_corpus, corpus)
        before = len(list(corpus.iterdir()))
        print(f"{service}: fuzzing from {before} corpus inputs ({repo_corpus})", flush=True)
        outcome = fuzz(
            service,
            corpus,
            artifacts,
            seconds=args.seconds,
            runs=args.runs,
            hang_seconds=args.hang_seconds,
        )
        print(outcome.summary(service), flush=True)
        if outcome.crashed:
            print("\n".join(outcome.report[-60:]), file=sys.stderr)
            print(f"{service}: the target exited with {outcome.returncode}", file=sys.stderr)
            for crash in outcome.crashes:
                print(f"{service}: crashing input saved as {crash}", file=sys.stderr)
            print(
                f"{service}: replay with `polyframe-fuzz replay {service} <file>`; keep it as a "
                f"regression case in {REGRESSIONS_ROOT / service}/",
                file=sys.stderr,
            )
            return 1
        if args.grow:
            minimised = Path(scratch) / "minimised"
            minimised.mkdir()
            merge(service, minimised, corpus, artifacts=artifacts)
            kept = sorted(minimised.iterdir())
            if kept:  # never empty the repository's corpus on a failed merge
                for old in repo_corpus.iterdir():
                    old.unlink()
                for new in kept:
                    shutil.copy2(new, repo_corpus / new.name)
            print(f"{service}: corpus {before} → {len(kept)} inputs (minimised) in {repo_corpus}")
    return 0


def replay(args: argparse.Namespace) -> int:
    """Run the given inputs once each (no mutation): a crash's reproduction."""
    with tempfile.TemporaryDirectory(prefix="polyframe-fuzz-replay-") as artifacts:
        outcome = fuzz(
            args.service,
            Path(args.inputs[0]),
            Path(artifacts),
            hang_seconds=args.hang_seconds,
            extra=["-runs=1", *args.inputs[1:]],
            echo=False,
        )
    if outcome.crashed:
        print("\n".join(outcome.report[-60:]), file=sys.stderr)
        return 1
    print(f"{args.service}: {len(args.inputs)} input(s) answered without a failure")
    return 0


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(
        prog="polyframe-fuzz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main_parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="fuzz one service for a while")
    run_parser.add_argument("service", choices=SERVICES)
    run_parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz (60)")
    run_parser.add_argument("--runs", type=int, default=None, help="stop after this many inputs")
    run_parser.add_argument(
        "--grow",
        action="store_true",
        help="merge what the run found, minimised, into the repository's corpus",
    )
    run_parser.add_argument(
        "--hang-seconds",
        type=float,
        default=2.0,
        help="an input still running after this long is a hang (2)",
    )
    run_parser.add_argument("--artifacts", help="where crashing inputs go (a temporary dir)")
    run_parser.set_defaults(handler=run)
    replay_parser = commands.add_parser("replay", help="run saved inputs once (a crash's repro)")
    replay_parser.add_argument("service", choices=SERVICES)
    replay_parser.add_argument("inputs", nargs="+", help="input files (or one directory)")
    replay_parser.add_argument("--hang-seconds", type=float, default=2.0)
    replay_parser.set_defaults(handler=replay)
    return main_parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    sys.exit(args.handler(args))
