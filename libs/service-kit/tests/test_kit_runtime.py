"""The process sampled: memory, file descriptors, CPU, garbage collection, and its age.

With real servers (gunicorn with 2 workers, uvicorn alone and with 2 workers, on 127.0.0.1):
the master's own figures as ``process_role="master"``, and the cold start recorded by the
server itself, with no probe from outside.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from polyframe_testing.ports import free_ports
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
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert samples.value("process_max_fds", **service) == soft  # what the fd alert divides by
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
        cpu = value("process_cpu_seconds_total", process_role="worker") or 0
        full = value("python_gc_collections_total", generation="2") or 0
        if cpu >= spent and full >= 1:
            break
        time.sleep(0.01)
    print(json.dumps({
        "spent": spent,
        "cpu": value("process_cpu_seconds_total", process_role="worker"),
        "gc_full": value("python_gc_collections_total", generation="2"),
        "gc_pauses": value("python_gc_pause_seconds_count", generation="2"),
        "rss": value("process_resident_memory_bytes", process_role="worker"),
        "fds": value("process_open_fds", process_role="worker"),
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
    # Read one after the other from /proc/uptime (10 ms ticks): equal but for that.
    assert server == pytest.approx(own, abs=0.02)
    mine = process_age(os.getpid())
    assert mine is not None
    assert server <= mine  # the child's own age, not its parent's group's


# --- real servers: the master counted, the cold start measured by the server itself -----------

FLASK_APP = textwrap.dedent(
    """
    from flask import Flask

    from service_kit import flask as kit, telemetry


    def create_app():
        app = Flask("runtime_test")
        kit.install(app, telemetry=telemetry.setup("runtime-test", "flask"))
        kit.add_health_routes(app, "runtime-test", lambda: {"ok": lambda: "fine"})
        return app
    """
)

GUNICORN_CONF = textwrap.dedent(
    """
    from service_kit.gunicorn import settings

    globals().update(
        settings(
            prefix="RTTEST",
            service="runtime-test",
            framework="flask",
            wsgi_app="rtapp_flask:create_app()",
            default_port=8199,
            default_workers=2,
            default_threads=2,
        )
    )
    """
)

FASTAPI_APP = textwrap.dedent(
    """
    from fastapi import FastAPI

    from service_kit import fastapi as kit, telemetry


    async def fine():
        return "fine"


    def create_app():
        app = FastAPI()
        instruments = telemetry.setup("runtime-test", "fastapi")
        kit.install(app, telemetry=instruments)
        kit.add_health_routes(app, "runtime-test", lambda request: {"ok": fine}, instruments)
        return app
    """
)

Series = list[tuple[str, dict[str, str], float]]


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int | None
    log: Path

    def get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=PATIENCE)
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def series(self, port: int | None = None) -> Series:
        """``/metrics`` of the server (or of ``port``): this test service's samples."""
        status, body = self.get("/metrics", port)
        assert status == 200
        return [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
            if sample.labels.get("service_name") == "runtime-test"
        ]

    def wait_for(self, what: str, condition: Callable[[], Any]) -> Any:
        """Poll ``condition`` until it returns something true (bounded: PATIENCE)."""
        deadline = time.monotonic() + PATIENCE
        while True:
            assert self.process.poll() is None, f"the server exited:\n{self.output()}"
            with contextlib.suppress(OSError, AssertionError):
                found = condition()
                if found:
                    return found
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.output()}"
            time.sleep(0.05)

    def children(self) -> set[int]:
        pid = self.process.pid
        try:
            return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
        except OSError:
            return set()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def serving(tmp_path: Path, argv: list[str], env: dict[str, str]) -> Iterator[Running]:
    (tmp_path / "rtapp_flask.py").write_text(FLASK_APP)
    (tmp_path / "rtapp_fastapi.py").write_text(FASTAPI_APP)
    (tmp_path / "rt_gunicorn_conf.py").write_text(GUNICORN_CONF)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROMETHEUS_"))}
    port, second = free_ports(2)
    metrics_port = second if "RTTEST_METRICS_BIND" in env else None
    full = {
        **base,
        "OTEL_TRACES_EXPORTER": "none",
        "PYTHONPATH": str(tmp_path),
        "RTTEST_BIND": f"127.0.0.1:{port}",
        "RTTEST_LOG_LEVEL": "WARNING",
        **env,
    }
    if metrics_port is not None:
        full["RTTEST_METRICS_BIND"] = f"127.0.0.1:{metrics_port}"
    argv = [arg.replace("{port}", str(port)) for arg in argv]
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        # A session of its own: the server's main process leads its group (server_age).
        process = subprocess.Popen(
            argv,
            cwd=tmp_path,
            env=full,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Running(process, port, metrics_port, log)
    try:
        yield running
    finally:
        children = running.children()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=PATIENCE)
        for pid in children:  # only this server's workers, should any be left
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def gunicorn(tmp_path: Path) -> contextlib.AbstractContextManager[Running]:
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    return serving(
        tmp_path,
        [sys.executable, "-m", "gunicorn", "-c", str(tmp_path / "rt_gunicorn_conf.py")],
        {
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
            "RTTEST_METRICS_BIND": "",  # a port of its own: see serving()
            "RTTEST_DRAIN_SECONDS": "0",
        },
    )


def uvicorn(tmp_path: Path, workers: int) -> contextlib.AbstractContextManager[Running]:
    env: dict[str, str] = {}
    if workers > 1:
        multiproc = tmp_path / "multiproc"
        multiproc.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    argv = [sys.executable, "-m", "uvicorn", "--factory", "rtapp_fastapi:create_app"]
    argv += ["--host", "127.0.0.1", "--port", "{port}", "--workers", str(workers)]
    return serving(tmp_path, [*argv, "--log-level", "warning"], env)


def by_role(series: Series, name: str, role: str) -> dict[str, float]:
    """``{pid: value}`` of ``name`` for the processes of ``role`` (pid "" when it has none)."""
    return {
        labels.get("pid", ""): value
        for sample, labels, value in series
        if sample == name and labels.get("process_role") == role
    }


def vm_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    (kib,) = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")]
    return kib * 1024


def test_gunicorn_master_is_counted_as_master(tmp_path: Path) -> None:
    with gunicorn(tmp_path) as server:
        assert server.metrics_port is not None
        master = str(server.process.pid)
        workers = server.wait_for(
            "the memory of both workers",
            lambda: (
                len(
                    found := by_role(
                        server.series(server.metrics_port),
                        "process_resident_memory_bytes",
                        "worker",
                    )
                )
                == 2
                and found
            ),
        )
        assert set(workers) == {str(pid) for pid in server.children()}
        assert master not in workers
        seen = server.series(server.metrics_port)  # served by a thread of the master
        rss = by_role(seen, "process_resident_memory_bytes", "master")
        assert list(rss) == [master]
        assert rss[master] == pytest.approx(vm_rss(server.process.pid), rel=0.25)
        (fds,) = by_role(seen, "process_open_fds", "master").values()
        assert fds == pytest.approx(len(list(Path(f"/proc/{master}/fd").iterdir())), abs=3)
        (limit,) = by_role(seen, "process_max_fds", "master").values()
        assert limit == resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # inherited from us
        (cpu,) = by_role(seen, "process_cpu_seconds_total", "master").values()
        assert 0 < cpu <= process_cpu(server.process.pid)
        # And through a worker's /metrics (no METRICS_BIND needed): the same master.
        through_worker = server.series()
        assert list(by_role(through_worker, "process_resident_memory_bytes", "master")) == [master]
        assert set(by_role(through_worker, "process_open_fds", "worker")) == set(workers)


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_uvicorn_supervisor_is_counted_as_master(tmp_path: Path) -> None:
    with uvicorn(tmp_path, workers=2) as server:
        supervisor = str(server.process.pid)
        rss = server.wait_for(
            "the supervisor's memory",
            lambda: by_role(server.series(), "process_resident_memory_bytes", "master"),
        )
        assert list(rss) == [supervisor]
        assert rss[supervisor] == pytest.approx(vm_rss(server.process.pid), rel=0.25)
        workers = by_role(server.series(), "process_resident_memory_bytes", "worker")
        assert supervisor not in workers
        assert set(workers) <= {str(pid) for pid in server.children()}


def test_lone_uvicorn_is_one_worker(tmp_path: Path) -> None:
    with uvicorn(tmp_path, workers=1) as server:
        # Its own sampler's figure (every 5 s; the first one taken while the app loads):
        # the process's own memory, once a sample is recent.
        rss = server.wait_for(
            "the process's memory, sampled",
            lambda: (
                (found := by_role(server.series(), "process_resident_memory_bytes", "worker"))
                and found == {"": pytest.approx(vm_rss(server.process.pid), rel=0.25)}
                and found
            ),
        )
        assert list(rss) == [""]  # one process, no pid label: single-process mode
        assert by_role(server.series(), "process_resident_memory_bytes", "master") == {}


#: Seconds the tests leave a started server alone: no request at all, /readyz least of all.
UNPROBED = 3.0


@pytest.mark.parametrize("server_kind", ["gunicorn", "uvicorn", "uvicorn-workers"])
def test_cold_start_is_measured_without_any_probe(tmp_path: Path, server_kind: str) -> None:
    """The server records its cold start itself, right after it starts: left alone for a
    few seconds (no /readyz from outside), it reports one from before that pause."""
    start = {
        "gunicorn": lambda: gunicorn(tmp_path),
        "uvicorn": lambda: uvicorn(tmp_path, workers=1),
        "uvicorn-workers": lambda: uvicorn(tmp_path, workers=2),
    }[server_kind]
    with start() as server:
        server.wait_for("the server to answer", lambda: server.get("/healthz")[0] == 200)
        time.sleep(UNPROBED)
        age = process_age(server.process.pid)
        (cold_start,) = [
            value for name, _, value in server.series() if name == "polyframe_cold_start_seconds"
        ]
        assert age is not None
        # Recorded before the pause began: nothing but the server asked for /readyz.
        assert 0 < cold_start < age - UNPROBED + 1.0
