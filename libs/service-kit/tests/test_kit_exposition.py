"""``/metrics``: exposition formats, exemplars, and multiprocess mode.

prometheus_client picks its mode when it is imported, from ``PROMETHEUS_MULTIPROC_DIR``;
this test process imported it in single-process mode. So the processes that *write*
in multiprocess mode are subprocesses started with their own folder, and the merge
(``render()``, which reads the folder named by the variable at call time, as the
worker answering a scrape does) runs here with the variable pointed at that folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client.parser import text_string_to_metric_families

from service_kit import exposition, metrics
from service_kit.exposition import MULTIPROC_ENV, reap_dead_processes, render
from service_kit.metrics import SERVICE
from service_kit.telemetry import Telemetry

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
#: How long a subprocess may take before the test calls it hung (never reached when the
#: code works; a deadlock detector, not a performance threshold).
PATIENCE = 60.0


# --- exposition, single process --------------------------------------------------------------


def families(body: bytes) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def test_exposition_is_classic_text_by_default(make_telemetry: Callable[..., Telemetry]) -> None:
    telemetry = make_telemetry()
    telemetry.finish_request(
        telemetry.start_request("GET"), route="/a", status=200, request_bytes=0, response_bytes=2
    )
    for accept in (None, "", "text/plain", "*/*"):
        body, content_type = render(accept)
        assert content_type.startswith("text/plain; version=0.0.4")
        assert b"# EOF" not in body
        assert f'service_name="{telemetry.service}"'.encode() in body
        assert "http_server_request_duration_seconds" in families(body)


def test_exposition_is_openmetrics_when_asked(make_telemetry: Callable[..., Telemetry]) -> None:
    telemetry = make_telemetry()
    telemetry.finish_request(
        telemetry.start_request("GET"), route="/a", status=200, request_bytes=0, response_bytes=2
    )
    body, content_type = render(f"{OPENMETRICS},text/plain;version=0.0.4;q=0.5")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    assert f'service_name="{telemetry.service}"'.encode() in body


@pytest.mark.parametrize("accept", [None, OPENMETRICS])
def test_exposition_has_no_created_series(
    make_telemetry: Callable[..., Telemetry], accept: str | None
) -> None:
    """``*_created`` would double every counter and histogram of the catalogue."""
    telemetry = make_telemetry()
    metrics.OUTBOX_DELIVERED.labels(*telemetry.labels).inc()
    telemetry.finish_request(
        telemetry.start_request("GET"), route="/a", status=200, request_bytes=0, response_bytes=2
    )
    body, _ = render(accept)
    created = [line for line in body.decode().splitlines() if "_created" in line]
    assert created == []


def exemplar_lines(body: bytes, service: str) -> list[str]:
    return [
        line
        for line in body.decode().splitlines()
        if line.startswith("http_server_request_duration_seconds_bucket")
        and f'service_name="{service}"' in line
        and " # {" in line
    ]


@pytest.mark.usefixtures("span_exporter")
def test_exemplar_carries_the_trace_id_of_a_sampled_span(
    make_telemetry: Callable[..., Telemetry],
) -> None:
    telemetry = make_telemetry()
    with trace.get_tracer("tests").start_as_current_span("request") as span:
        state = telemetry.start_request("GET")
        telemetry.finish_request(
            state, route="/a", status=200, request_bytes=None, response_bytes=None
        )
    trace_id = format(span.get_span_context().trace_id, "032x")
    (line,) = exemplar_lines(render(OPENMETRICS)[0], telemetry.service)
    assert f'# {{trace_id="{trace_id}"}}' in line
    assert b"trace_id" not in render(None)[0]  # the classic format has no exemplars


@pytest.mark.parametrize(
    "span",
    [
        NonRecordingSpan(
            SpanContext(
                0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False, TraceFlags(0)
            )
        ),
        trace.INVALID_SPAN,
    ],
    ids=["not-sampled", "no-trace"],
)
def test_no_exemplar_without_a_sampled_trace(
    make_telemetry: Callable[..., Telemetry], span: trace.Span
) -> None:
    telemetry = make_telemetry()
    with trace.use_span(span):
        state = telemetry.start_request("GET")
    telemetry.finish_request(state, route="/a", status=200, request_bytes=None, response_bytes=None)
    body = render(OPENMETRICS)[0]
    assert f'service_name="{telemetry.service}"'.encode() in body
    assert exemplar_lines(body, telemetry.service) == []


# --- multiprocess mode -------------------------------------------------------------------------

#: A worker process: records into the catalogue, then exits (or holds until its stdin closes).
WRITER = textwrap.dedent(
    """
    import sys
    from opentelemetry import trace
    from service_kit import metrics, telemetry

    requests, hold = int(sys.argv[1]), sys.argv[2] == "hold"
    tel = telemetry.setup("mp-tests", "tests")
    labels = tel.labels
    with trace.get_tracer("writer").start_as_current_span("request") as span:
        assert span.get_span_context().trace_flags.sampled  # an exemplar would be due
        for _ in range(requests):
            state = tel.start_request("GET")
            tel.finish_request(
                state, route="/r", status=200, request_bytes=10, response_bytes=20
            )
    metrics.OUTBOX_DELIVERED.labels(*labels).inc(requests)
    metrics.WORKER_THREADS.labels(*labels).set(2)
    metrics.WORKER_THREADS_BUSY.labels(*labels).inc()
    metrics.COLD_START.labels(*labels).set(float(sys.argv[3]))
    print("ready", flush=True)
    if hold:
        sys.stdin.read()
    """
)


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty multiprocess folder, which ``render()`` in this process merges."""
    path = tmp_path / "multiproc"
    path.mkdir()
    monkeypatch.setenv(MULTIPROC_ENV, str(path))
    return path


def child_env(multiproc: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env[MULTIPROC_ENV] = str(multiproc)
    # Nothing exported, but spans sampled and recorded (the writers observe under one).
    env["OTEL_TRACES_EXPORTER"] = "none"
    env["OTEL_TRACES_SAMPLER"] = "parentbased_always_on"
    return env


@pytest.fixture
def writers(multiproc_dir: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``writers(requests, hold=False, cold_start=1.0)``: a writer process; all stopped after."""
    started: list[subprocess.Popen[str]] = []

    def start(
        requests: int, *, hold: bool = False, cold_start: float = 1.0
    ) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(requests),
                "hold" if hold else "exit",
                str(cold_start),
            ],
            env=child_env(multiproc_dir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=PATIENCE)


def wait_ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line == "ready\n", process.stderr.read() if process.stderr else line


def finish(process: subprocess.Popen[str]) -> None:
    """Wait for ``process`` to exit (a holding one once its stdin is closed) and succeed."""
    _, err = process.communicate(timeout=PATIENCE)
    assert process.returncode == 0, err


def merged(labels: dict[str, str] | None = None, accept: str | None = None) -> dict[str, float]:
    """``{sample name and labels: value}`` of what a scrape would return now."""
    body, _ = render(accept)
    wanted = labels or {"service_name": "mp-tests"}
    result: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if wanted.items() <= sample.labels.items():
                extra = {k: v for k, v in sample.labels.items() if k not in SERVICE}
                key = sample.name + json.dumps(extra, sort_keys=True)
                assert key not in result, f"{key} appears twice"
                result[key] = sample.value
    return result


def test_multiprocess_sums_every_process_exactly_once(
    writers: Callable[..., subprocess.Popen[str]], multiproc_dir: Path
) -> None:
    processes = [writers(3, cold_start=2.5), writers(5, cold_start=1.5), writers(7, cold_start=9)]
    for process in processes:
        finish(process)
    samples = merged()
    route = '{"http_request_method": "GET", "http_response_status_code": "200", "http_route": "/r"}'
    assert samples["http_server_request_duration_seconds_count" + route] == 15
    size = '{"http_request_method": "GET", "http_route": "/r"}'
    assert samples["http_server_request_body_size_bytes_sum" + size] == 150
    assert samples["http_server_response_body_size_bytes_sum" + size] == 300
    assert samples["polyframe_outbox_delivered_total{}"] == 15
    # The first worker to become ready is the cold start (multiprocess_mode="min").
    assert samples["polyframe_cold_start_seconds{}"] == 1.5
    # Every finished request left the in-flight gauge as it found it.
    assert samples.get('http_server_active_requests{"http_request_method": "GET"}', 0) == 0
    # The same answer from whichever process merges it, as often as it is asked.
    assert merged() == samples


def test_a_worker_still_creating_its_files_does_not_fail_the_scrape(
    writers: Callable[..., subprocess.Popen[str]], multiproc_dir: Path
) -> None:
    """prometheus_client creates a file empty and sizes it a moment later: a scrape in
    between sees an empty file of a worker that is starting up."""
    finish(writers(3))
    for name in ("counter_4242.db", "gauge_livesum_4242.db", "histogram_4242.db"):
        (multiproc_dir / name).touch()
    samples = merged()
    route = '{"http_request_method": "GET", "http_response_status_code": "200", "http_route": "/r"}'
    assert samples["http_server_request_duration_seconds_count" + route] == 3


def test_multiprocess_has_no_exemplars(
    writers: Callable[..., subprocess.Popen[str]], multiproc_dir: Path
) -> None:
    """The writers recorded under a sampled span; the merged OpenMetrics carry no exemplar."""
    finish(writers(2))
    body, content_type = render(OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    assert b'service_name="mp-tests"' in body
    assert b"trace_id" not in body


def test_dead_process_live_gauges_reaped_and_counters_kept(
    writers: Callable[..., subprocess.Popen[str]], multiproc_dir: Path
) -> None:
    alive = writers(4, hold=True)
    dead = writers(6)
    wait_ready(alive)
    finish(dead)
    assert (multiproc_dir / f"gauge_livesum_{dead.pid}.db").exists()

    samples = merged()
    assert samples["polyframe_worker_threads_busy{}"] == 1  # the living worker's only
    assert samples["polyframe_worker_threads{}"] == 2
    assert samples["polyframe_outbox_delivered_total{}"] == 10  # the dead one's stay counted
    assert not (multiproc_dir / f"gauge_livesum_{dead.pid}.db").exists()
    assert (multiproc_dir / f"counter_{dead.pid}.db").exists()
    assert (multiproc_dir / f"gauge_livesum_{alive.pid}.db").exists()

    finish(alive)  # its stdin closed: it exits
    samples = merged()
    assert samples.get("polyframe_worker_threads_busy{}", 0) == 0
    assert samples.get("polyframe_worker_threads{}", 0) == 0
    assert samples["polyframe_outbox_delivered_total{}"] == 10
    assert samples["polyframe_cold_start_seconds{}"] == 1.0  # not a live gauge: kept


def test_reap_dead_processes_names_only_the_dead(
    writers: Callable[..., subprocess.Popen[str]], multiproc_dir: Path
) -> None:
    alive = writers(1, hold=True)
    dead = writers(1)
    wait_ready(alive)
    finish(dead)
    assert set(reap_dead_processes(str(multiproc_dir))) == {dead.pid}
    assert reap_dead_processes(str(multiproc_dir)) == []
    finish(alive)


def test_reap_dead_processes_treats_a_zombie_as_dead(multiproc_dir: Path) -> None:
    """A worker that exited but was not waited for yet (its parent is busy) is gone."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        stat = Path(f"/proc/{child.pid}/stat")
        deadline = time.monotonic() + PATIENCE
        while stat.read_text().rsplit(") ", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        (multiproc_dir / f"gauge_livesum_{child.pid}.db").write_bytes(b"")
        (multiproc_dir / f"gauge_liveall_{child.pid}.db").write_bytes(b"")
        (multiproc_dir / f"counter_{child.pid}.db").write_bytes(b"")
        (multiproc_dir / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")
        assert set(reap_dead_processes(str(multiproc_dir))) == {child.pid}
        remaining = sorted(path.name for path in multiproc_dir.iterdir())
        assert remaining == sorted([f"counter_{child.pid}.db", f"gauge_livesum_{os.getpid()}.db"])
    finally:
        child.wait(timeout=PATIENCE)


#: Many threads record into multiprocess metrics while the collector runs after (almost)
#: every allocation. A GC callback that recorded into a metric itself would wait for the
#: process-wide lock its own thread already holds: a deadlock, and the process hangs.
GC_STORM = textwrap.dedent(
    """
    import gc, json, threading
    from service_kit import metrics, runtime, telemetry

    # The GC callback setup() installs, without setup()'s sampler thread (which publishes
    # too: this test's publisher is the only one).
    tel = telemetry.Telemetry("gc-tests", "tests")
    runtime.watch_gc()
    gc.set_threshold(1, 1, 1)
    stop = threading.Event()

    def work():
        for _ in range(1500):
            cycle = []
            cycle.append(cycle)
            metrics.OUTBOX_DELIVERED.labels(*tel.labels).inc()
            metrics.HTTP_SERVER_DURATION.labels(*tel.labels, "GET", "/r", "200").observe(0.01)

    def publish():
        while not stop.is_set():
            runtime.publish_gc(tel.labels)

    publisher = threading.Thread(target=publish)
    publisher.start()
    workers = [threading.Thread(target=work) for _ in range(6)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    stop.set()
    publisher.join()
    gc.set_threshold(700, 10, 10)
    gc.collect()
    runtime.publish_gc(tel.labels)
    print(json.dumps({"done": True}))
    """
)


def test_gc_callback_never_deadlocks_recording_threads(multiproc_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", GC_STORM],
        env=child_env(multiproc_dir),
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"done": True}
    samples = merged({"service_name": "gc-tests"})
    assert samples["polyframe_outbox_delivered_total{}"] == 6 * 1500
    collections = {
        key: value for key, value in samples.items() if key.startswith("python_gc_collections")
    }
    assert sum(collections.values()) > 100  # thresholds of 1: thousands of collections
    assert collections['python_gc_collections_total{"generation": "2"}'] >= 1
    pauses = samples['python_gc_pause_seconds_count{"generation": "0"}']
    assert pauses == collections['python_gc_collections_total{"generation": "0"}']


def test_serve_merged_needs_multiprocess_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with pytest.raises(ValueError, match=MULTIPROC_ENV):
        exposition.serve_merged("127.0.0.1:0")
