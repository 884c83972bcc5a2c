"""RSS: growth asserted only over a long enough window, a server that died, a real process."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from polyframe_bench.soak.memory import rss, rss_report
from polyframe_bench.soak.settings import Settings
from polyframe_bench.soak.stats import Stats
from polyframe_bench.soak.verify import failures

Results = Callable[..., dict[str, Any]]


def _sample(mb: float, processes: int = 3) -> dict[str, int]:
    return {"rss_bytes": int(mb * 2**20), "processes": processes}


def test_rss_growth_is_asserted_only_over_a_long_enough_window(results: Results) -> None:
    settings = Settings(rss_min_window=120)
    start = {"a": _sample(100), "b": _sample(100)}
    end = {"a": _sample(115), "b": _sample(105)}
    short = rss_report(start, end, {}, 30, settings)
    assert not short["asserted"]
    assert "not asserted" in short["note"]
    assert short["servers"]["a"]["growth_pct"] == 15.0
    stats = Stats()
    assert not [f for f in failures(results(stats, short), stats, []) if "RSS" in f]

    long = rss_report(start, end, {}, 240, settings)
    assert long["asserted"]
    assert (long["servers"]["a"]["ok"], long["servers"]["b"]["ok"]) == (False, True)
    assert [f for f in failures(results(stats, long), stats, []) if "RSS" in f] == [
        "RSS of a grew 15.0% (100.0 -> 115.0 MB, processes 3->3)"
    ]


def test_a_server_that_died_fails_the_run_even_when_rss_is_not_asserted(
    results: Results,
) -> None:
    memory = rss_report({"a": _sample(100)}, {"a": _sample(0, 0)}, {}, 10, Settings())
    stats = Stats()
    assert "a is gone (its process exited during the soak)" in failures(
        results(stats, memory), stats, []
    )


def test_rss_of_a_real_process_tree() -> None:
    measured = rss({"me": os.getpid()})
    assert measured["me"]["processes"] >= 1
    assert measured["me"]["rss_bytes"] > 0
