"""Telemetry of one process: what the adapters record, set-up, runtime probes, ages."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from service_kit import telemetry
from service_kit.settings import ServiceSettings
from service_kit.telemetry import (
    Telemetry,
    for_service,
    process_age,
    resident_memory_bytes,
    sample_process,
    setup,
)

DURATION = "http_server_request_duration_seconds"
#: How long a subprocess may take before the test calls it hung (not a performance threshold).
PATIENCE = 60.0

MakeTelemetry = Callable[..., Telemetry]


def request(
    telemetry: Telemetry,
    method: str = "GET",
    *,
    route: str | None = "/api/things/{id}",
    status: int = 200,
    request_bytes: int | None = 12,
    response_bytes: int | None = 345,
) -> None:
    state = telemetry.start_request(method)
    telemetry.finish_request(
        state,
        route=route,
        status=status,
        request_bytes=request_bytes,
        response_bytes=response_bytes,
    )


# --- recording ---------------------------------------------------------------------------------


def test_a_request_is_counted_with_its_labels(make_telemetry: MakeTelemetry, samples: Any) -> None:
    telemetry = make_telemetry("flask")
    service = {"service_name": telemetry.service, "framework": "flask"}
    state = telemetry.start_request("post")
    assert samples.value("http_server_active_requests", **service, http_request_method="POST") == 1
    telemetry.finish_request(
        state, route="/api/things/{id}", status=201, request_bytes=12, response_bytes=345
    )
    labels = {
        **service,
        "http_request_method": "POST",
        "http_route": "/api/things/{id}",
        "http_response_status_code": "201",
    }
    assert samples.value(f"{DURATION}_count", **labels) == 1
    assert samples.value(f"{DURATION}_sum", **labels) > 0
    assert samples.value("http_server_active_requests", **service, http_request_method="POST") == 0
    sizes = {**service, "http_request_method": "POST", "http_route": "/api/things/{id}"}
    assert samples.value("http_server_request_body_size_bytes_sum", **sizes) == 12
    assert samples.value("http_server_response_body_size_bytes_sum", **sizes) == 345
    assert samples.value("http_server_response_body_size_bytes_bucket", **sizes, le="256.0") == 0
    assert samples.value("http_server_response_body_size_bytes_bucket", **sizes, le="1024.0") == 1


def test_unknown_sizes_are_not_observed(make_telemetry: MakeTelemetry, samples: Any) -> None:
    telemetry = make_telemetry()
    request(telemetry, request_bytes=None, response_bytes=None)
    assert samples.value(f"{DURATION}_count", service_name=telemetry.service) == 1
    assert (
        samples.series("http_server_request_body_size_bytes_count", service_name=telemetry.service)
        == []
    )
    assert (
        samples.series("http_server_response_body_size_bytes_count", service_name=telemetry.service)
        == []
    )


def test_label_values_are_bounded(make_telemetry: MakeTelemetry, samples: Any) -> None:
    telemetry = make_telemetry()
    request(telemetry, "BREW", route=None, status=999)
    request(telemetry, "get", route="", status=42)
    series = {
        (s["http_request_method"], s["http_route"], s["http_response_status_code"])
        for s in samples.series(f"{DURATION}_count", service_name=telemetry.service)
    }
    assert series == {("_OTHER", "__unmatched__", "_OTHER"), ("GET", "__unmatched__", "_OTHER")}


def test_disabled_telemetry_records_nothing(make_telemetry: MakeTelemetry, samples: Any) -> None:
    telemetry = make_telemetry(enabled=False)
    state = telemetry.start_request("GET")
    assert state is None
    telemetry.finish_request(state, route="/a", status=200, request_bytes=1, response_bytes=1)
    telemetry.mark_ready()
    for name in (
        DURATION + "_count",
        "http_server_active_requests",
        "polyframe_cold_start_seconds",
    ):
        assert samples.series(name, service_name=telemetry.service) == []


def test_cold_start_recorded_once(
    make_telemetry: MakeTelemetry, samples: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    instruments = make_telemetry()
    ages = iter([12.5, 99.0])
    monkeypatch.setattr(telemetry, "server_age", lambda: next(ages))
    instruments.mark_ready()
    instruments.mark_ready()
    assert samples.value("polyframe_cold_start_seconds", service_name=instruments.service) == 12.5
    assert next(ages) == 99.0  # asked once only


# --- set-up ------------------------------------------------------------------------------------


def test_setup_publishes_build_info(samples: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_current", telemetry.current())  # put back afterwards
    instance = setup("service-kit", "flask")
    assert instance.enabled
    assert instance.labels == ("service-kit", "flask")
    assert telemetry.current() is instance
    (labels,) = samples.series(
        "polyframe_build_info", service_name="service-kit", framework="flask"
    )
    assert labels["version"] == metadata.version("service-kit")
    assert labels["framework_version"] == metadata.version("flask")
    assert labels["python_version"] == platform.python_version()
    assert labels["server"] == "other" or labels["server"].startswith(("gunicorn ", "uvicorn "))
    assert samples.value("polyframe_build_info", **labels) == 1
    assert telemetry.tracer_provider() is not None
    assert setup("service-kit", "flask") is not instance  # again: safe, a new binding


def test_setup_disabled_sets_nothing_up(samples: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_current", telemetry.current())
    instance = setup("svc-disabled-setup", "flask", enabled=False)
    assert not instance.enabled
    assert telemetry.current() is instance
    assert samples.series("polyframe_build_info", service_name="svc-disabled-setup") == []


class DemoSettings(ServiceSettings):
    service_name = "demo-telemetry"
    service_secret: SecretStr | None = None


@pytest.mark.parametrize(("instrumentation", "threshold"), [(True, 4), (False, 10)])
def test_for_service_follows_the_settings(instrumentation: bool, threshold: int) -> None:
    settings = DemoSettings(
        environment="test", instrumentation=instrumentation, db_repeated_query_threshold=threshold
    )
    instance = for_service(settings, "django")
    assert (instance.service, instance.framework) == ("demo-telemetry", "django")
    assert instance.enabled is instrumentation
    assert instance.repeated_query_threshold == threshold


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
    from service_kit import metrics, telemetry

    telemetry.SAMPLE_INTERVAL_SECONDS = 0.02
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


AGES = "from service_kit import telemetry; import os, json; " + (
    "print(json.dumps([telemetry.server_age(), telemetry.process_age(os.getpid())]))"
)


def test_server_age_is_the_age_of_the_process_group_leader() -> None:
    """A gunicorn worker's group leader is the master, started before the worker."""
    leader = os.getpgid(0)
    before = process_age(leader)
    result = subprocess.run(
        [sys.executable, "-c", AGES], capture_output=True, text=True, timeout=PATIENCE, check=True
    )
    after = process_age(leader)
    assert before is not None
    assert after is not None
    server, own = json.loads(result.stdout)
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
