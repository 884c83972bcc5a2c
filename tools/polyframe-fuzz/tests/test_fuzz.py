"""The in-process fuzzers in ``make test``: each service fuzzed for a bounded time from the
committed corpus, plus every saved regression input, with no failure (a status >= 500, an
exception out of the app, an "unhandled exception" log record, an input over the hang bound).

atheris is a Python dependency of this package, so nothing here is ever skipped (with or
without ``CI=true`` / ``POLYFRAME_STRICT_TOOLS``): a missing atheris is an install failure.
Each test starts the service in a subprocess (a few seconds, more on a busy machine) and
fuzzes ``FUZZ_RUNS`` inputs from a fixed seed (``FUZZ_SEED``), stopping early at
``FUZZ_SECONDS``: the same inputs in every run, so what passed here passes in CI (a slower
machine runs a prefix of them). Exploring with new seeds is ``make fuzz``'s job; what it finds
comes here as a corpus entry or a fixed regression input.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from polyframe_fuzz.cli import CORPUS_ROOT, REGRESSIONS_ROOT, Outcome, fuzz
from polyframe_fuzz.targets import SERVICES

#: Inputs fuzzed per service: about 12 s of fuzzing each on this machine (~1,200 inputs a
#: second for users-fastapi and legacy-flask, ~80 for admin-django).
FUZZ_RUNS = {"users-fastapi": 15_000, "legacy-flask": 15_000, "admin-django": 1_000}
#: libFuzzer's seed: the same inputs every run.
FUZZ_SEED = 17
#: The most fuzzing time per service (start-up comes on top), whatever the runs.
FUZZ_SECONDS = 30
#: The hang bound here: more generous than the CLI's 2 s, as CI shares two cores.
HANG_SECONDS = 5.0
#: Inputs that broke a service once (fixed since); libFuzzer runs them before fuzzing.
FIXED = "fixed"


def failure(outcome: Outcome) -> str:
    saved = "\n".join(f"  {crash}: {crash.read_bytes()!r}" for crash in outcome.crashes)
    return "\n".join([*outcome.report[-80:], f"exit status {outcome.returncode}", saved])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("service", SERVICES)
def test_fuzzing_the_service_finds_no_failure(service: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS_ROOT / service, corpus)
    fixed = REGRESSIONS_ROOT / service / FIXED
    extra = [str(fixed)] if fixed.is_dir() else []
    outcome = fuzz(
        service,
        corpus,
        tmp_path,
        seconds=FUZZ_SECONDS,
        runs=FUZZ_RUNS[service],
        seed=FUZZ_SEED,
        hang_seconds=HANG_SECONDS,
        extra=extra,
        echo=False,
    )
    assert not outcome.crashed, failure(outcome)
    assert outcome.runs > len(list(corpus.iterdir())), outcome.summary(service)
