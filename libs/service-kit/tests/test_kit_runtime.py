"""The process sampled: memory, file descriptors, CPU, garbage collection, and its age."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service_kit.runtime import process_age, resident_memory_bytes, sample_process
from service_kit.telemetry import Telemetry

#: How long a subprocess may take before the test calls it hung (not a performance threshold).
PATIENCE = 60.0

MakeTelemetry = Callable[..., Telemetry]


# --- runtime: memory, file descriptors, CPU, GC -------------------------------------------------


def test_sample_process_reports_memory_and_open_files(
    make_telemetry: MakeTelemetry, samples: Any, tmp_path: Path
) -> None:
    labels = make_telemetry().labels
    sample_process(labels)
    service = {"service_name": labels[0]}
    fds = samples.value("process_open_fds", **service)
    rss = samples.value("process_resident_memory_bytes", **service)
    assert fds >= 3
    status = Path("/proc/self/status").read_text()
    (vm_rss_kib,) = [
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
    ]
    assert rss == pytest.approx(vm_rss_kib * 1024, rel=0.2)
    files = [(tmp_path / f"f{i}").open("w") for i in range(40)]
    try:
        sample_process(labels)
        assert samples.value("process_open_fds", **service) >= fds + 40 - 5
    finally:
        for file in files:
            file.close()


def test_resident_memory_grows_with_what_the_process_holds() -> None:
    before = resident_memory_bytes()
    assert before is not None
    held = b"x" * (64 * 1024 * 1024)
    after = resident_memory_bytes()
    assert after is not None
    assert after - before >= 48 * 1024 * 1024
    del held


#: The sampler thread, started by setup(), with a short interval: CPU, memory, fds and GC.
SAMPLER = textwrap.dedent(
    """
    import gc, json, os, time
    from service_kit import metrics, runtime, telemetry

    runtime.SAMPLE_INTERVAL_SECONDS = 0.02
    tel = telemetry.setup("sampler-tests", "tests")
    labels = {"service_name": "sampler-tests", "framework": "tests"}
    value = lambda name, **extra: metrics.REGISTRY.get_sample_value(name, {**labels, **extra})
    spent = 0.0
    while spent < 0.3:  # burn CPU
        sum(range(10_000))
        times = os.times()
        spent = times.user + times.system
    gc.collect()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        cpu = value("process_cpu_seconds_total") or 0
        full = value("python_gc_collections_total", generation="2") or 0
        if cpu >= spent and full >= 1:
            break
        time.sleep(0.01)
    print(json.dumps({
        "spent": spent,
        "cpu": value("process_cpu_seconds_total"),
        "gc_full": value("python_gc_collections_total", generation="2"),
        "gc_pauses": value("python_gc_pause_seconds_count", generation="2"),
        "rss": value("process_resident_memory_bytes"),
        "fds": value("process_open_fds"),
    }))
    """
)


def test_sampler_thread_publishes_cpu_memory_fds_and_gc() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROMETHEUS_"))}
    result = subprocess.run(
        [sys.executable, "-c", SAMPLER],
        env={**env, "OTEL_TRACES_EXPORTER": "none"},
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["cpu"] >= found["spent"]
    assert found["gc_full"] >= 1
    assert found["gc_pauses"] == found["gc_full"]
    assert found["rss"] > 10 * 1024 * 1024
    assert found["fds"] >= 3


# --- how long has the server been running? ---------------------------------------------------


def test_process_age_orders_processes_by_start() -> None:
    mine = process_age(os.getpid())
    assert mine is not None
    assert mine >= 0
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        young = process_age(child.pid)
        assert young is not None
        assert young <= mine
    finally:
        child.communicate(timeout=PATIENCE)


def test_process_age_of_no_process() -> None:
    assert process_age(2**22 + 12345) is None  # above the kernel's pid_max


AGES = "from service_kit import runtime; import os, json; " + (
    "print(json.dumps([runtime.server_age(), runtime.process_age(os.getpid())]))"
)


#: A process group leader (as gunicorn's master is) that starts a member (as a worker) running
#: ``sys.argv[1]``, with its own age before and after: [before, after, *what the member prints].
LEADER = """
import json, os, subprocess, sys
from service_kit.runtime import process_age
before = process_age(os.getpid())
member = subprocess.run([sys.executable, "-c", sys.argv[1]], capture_output=True, text=True)
after = process_age(os.getpid())
print(json.dumps([before, after, *json.loads(member.stdout)]))
"""


def test_server_age_is_the_age_of_the_process_group_leader() -> None:
    """A gunicorn worker's group leader is the master, started before the worker. (The group
    is a new one: the test runner's own leader may have exited, as a shell's job may.)"""
    result = subprocess.run(
        [sys.executable, "-c", LEADER, AGES],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=True,
        start_new_session=True,
    )
    before, after, server, own = json.loads(result.stdout)
    assert before is not None
    assert after is not None
    tick = 0.02  # /proc's resolution
    assert before - tick <= server <= after + tick
    assert server >= own


def test_server_age_of_a_group_leader_is_its_own_age() -> None:
    result = subprocess.run(
        [sys.executable, "-c", AGES],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=True,
        start_new_session=True,
    )
    server, own = json.loads(result.stdout)
    assert server == own
    mine = process_age(os.getpid())
    assert mine is not None
    assert server <= mine  # the child's own age, not its parent's group's
