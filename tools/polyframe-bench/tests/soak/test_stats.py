"""What the load sent and what came back."""

from __future__ import annotations

from polyframe_bench.soak.stats import is_error, percentile


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([], 99) == 0.0


def test_errors_are_4xx_but_429_5xx_and_no_answer() -> None:
    assert [is_error(o) for o in ("201", "404", "429", "503", "timeout")] == [
        False,
        True,
        False,
        True,
        True,
    ]
