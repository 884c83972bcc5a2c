"""gunicorn: the shared settings, the hooks, and the instrumented gthread worker for real.

The real-server tests start ``python -m gunicorn`` with the kit's :func:`settings` and
:class:`ThreadWorker` (2 workers x 2 threads, a multiprocess folder, a free port on
127.0.0.1) serving a tiny WSGI app written here, which records its requests into the
catalogue the way the adapters do and answers with the pid of the worker that served it.
While every thread is busy, a scrape of the app's own ``/metrics`` would wait for a thread
like any other request; the master's ``/metrics`` (``<PREFIX>_METRICS_BIND``) answers
from a thread of the master, so the in-flight state is read there.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from polyframe_testing.ports import free_ports
from service_kit import gunicorn as kit_gunicorn
from service_kit import unread
from service_kit.exposition import MULTIPROC_ENV
from service_kit.gunicorn import (
    ThreadWorker,
    drain_setting,
    import_modules,
    post_worker_init,
    settings,
    worker_exit,
)
from service_kit.workerexits import child_exit

SERVICE = "gunicorn-test"
#: How long the tests wait for the server to do something (never reached when it works;
#: not a performance threshold).
PATIENCE = 30.0


# --- settings and hooks ----------------------------------------------------------------------


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DEMO_BIND", "DEMO_WORKERS", "DEMO_THREADS", "DEMO_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    values = settings(
        prefix="DEMO", service="demo", framework="wsgi", wsgi_app="demo:app", default_port=8199
    )
    assert values["wsgi_app"] == "demo:app"
    assert values["bind"] == "127.0.0.1:8199"
    assert values["worker_class"] == "service_kit.gunicorn.ThreadWorker"
    assert (values["workers"], values["threads"]) == (2, 4)
    assert values["preload_app"] is False  # the app (and its telemetry) is made per worker
    assert values["proc_name"] == "demo"
    assert values["control_socket_disable"] is True
    assert values["post_worker_init"] is post_worker_init
    assert values["child_exit"].__name__ == "count_and_clean_up"  # child_exit, and the exit counted
    assert values["worker_exit"] is worker_exit
    assert values["logconfig_dict"]["root"]["level"] == "INFO"


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_BIND", "0.0.0.0:9000")
    monkeypatch.setenv("DEMO_WORKERS", "5")
    monkeypatch.setenv("DEMO_THREADS", "16")
    monkeypatch.setenv("DEMO_LOG_LEVEL", "WARNING")
    values = settings(
        prefix="DEMO",
        service="demo",
        framework="wsgi",
        wsgi_app="demo:app",
        default_port=8199,
        default_workers=1,
        default_threads=1,
    )
    assert values["bind"] == "0.0.0.0:9000"
    assert (values["workers"], values["threads"]) == (5, 16)
    assert values["logconfig_dict"]["root"]["level"] == "WARNING"


def test_drain_setting_is_checked() -> None:
    assert drain_setting({}, "DEMO") == 2.0
    assert drain_setting({"DEMO_DRAIN_SECONDS": "0"}, "DEMO") == 0.0
    assert drain_setting({"DEMO_DRAIN_SECONDS": "3.5"}, "DEMO") == 3.5
    # Negative, not a number, or so long that the master would kill requests still in flight.
    for raw in ("-1", "two", "7.5", "60"):
        with pytest.raises(SystemExit, match="DEMO_DRAIN_SECONDS"):
            drain_setting({"DEMO_DRAIN_SECONDS": raw}, "DEMO")


def test_the_master_imports_the_modules_before_forking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``import_before_fork``: the master empties the multiprocess folder (as on_starting
    does), then imports the modules, so the workers it forks find them imported."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_4242.db").write_bytes(b"")
    monkeypatch.setenv(MULTIPROC_ENV, str(folder))
    module = f"preimported_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    values = settings(
        prefix="DEMO",
        service="demo",
        framework="wsgi",
        wsgi_app=f"{module}:app",
        default_port=8199,
        import_before_fork=(module,),
    )
    assert module not in sys.modules
    values["on_starting"](None)
    assert sys.modules[module].LOADED is True
    assert list(folder.iterdir()) == []
    assert values["preload_app"] is False  # the app itself is still made in each worker
    import_modules(())(None)  # nothing to import: the folder emptied, nothing raised
    monkeypatch.delitem(sys.modules, module)


def test_child_exit_drops_the_live_gauges_of_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    names = [
        "gauge_livesum_4242.db",
        "gauge_liveall_4242.db",
        "counter_4242.db",
        "gauge_livesum_7.db",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    child_exit(None, SimpleNamespace(pid=4242))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_4242.db", "gauge_livesum_7.db"]


def test_child_exit_without_multiprocess_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    child_exit(None, SimpleNamespace(pid=4242))  # nothing to do, nothing raised


def test_worker_without_telemetry_is_not_instrumented(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kit_gunicorn.telemetry, "_current", None)
    worker = ThreadWorker.__new__(ThreadWorker)
    assert worker.instrument() is False
    post_worker_init(worker)  # safe too
    assert worker._busy is None


# --- a real gunicorn ---------------------------------------------------------------------------

APP = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    from urllib.parse import parse_qs

    from service_kit import exposition, telemetry

    TELEMETRY = telemetry.setup("gunicorn-test", "wsgi")
    SIGNALS = Path(os.environ["GUNICORN_TEST_SIGNALS"])


    def app(environ, start_response):
        path = environ["PATH_INFO"]
        pid = str(os.getpid()).encode()
        if path == "/metrics":
            body, content_type = exposition.render(environ.get("HTTP_ACCEPT"))
            start_response("200 OK", [("Content-Type", content_type), ("X-Worker", pid.decode())])
            return [body]
        state = TELEMETRY.start_request(environ["REQUEST_METHOD"])
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if path == "/slow":
            time.sleep(int(query["ms"][0]) / 1000)
        elif path == "/hold":
            (SIGNALS / f"started-{os.getpid()}-{query['name'][0]}").touch()
            deadline = time.monotonic() + 30
            while not (SIGNALS / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(pid)))]
        start_response("200 OK", [*headers, ("X-Worker", pid.decode())])
        TELEMETRY.finish_request(
            state, route=path, status=200, request_bytes=0, response_bytes=len(pid)
        )
        return [pid]
    """
)

#: The kit's Flask adapter on the same server: the request clock as the services run it.
FLASK_APP = textwrap.dedent(
    """
    import os, time
    from pathlib import Path

    from flask import Flask, request

    from service_kit import flask as kit_flask, telemetry

    SIGNALS = Path(os.environ["GUNICORN_TEST_SIGNALS"])
    app = Flask(__name__)
    kit_flask.install(app, telemetry=telemetry.setup("gunicorn-test", "flask"))


    @app.after_request
    def which_worker(response):
        response.headers["X-Worker"] = str(os.getpid())
        return response


    @app.get("/hold")
    def hold():
        name = request.args["name"]
        (SIGNALS / f"started-{os.getpid()}-{name}").touch()
        deadline = time.monotonic() + 30
        while not (SIGNALS / f"release-{name}").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return "held"


    @app.get("/fast")
    def fast():
        return "fast"
    """
)

CONF = textwrap.dedent(
    """
    import os

    from service_kit.gunicorn import settings

    globals().update(
        settings(
            prefix="KITTEST",
            service="gunicorn-test",
            framework="wsgi",
            wsgi_app=os.environ["KITTEST_APP"],
            default_port=8199,
            default_workers=2,
            default_threads=2,
        )
    )
    timeout = int(os.environ["KITTEST_TIMEOUT"])
    """
)


STALE_RUN = textwrap.dedent(
    """
    from service_kit import metrics

    requests = metrics.HTTP_SERVER_DURATION.labels("gunicorn-test", "wsgi", "GET", "/fast", "200")
    for _ in range(1000):
        requests.observe(0.01)
    """
)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    multiproc: Path
    signals: Path
    log: Path

    def get(
        self, path: str, timeout: float = PATIENCE, *, port: int | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def scrape(self) -> tuple[int, dict[str, float]]:
        """``/metrics`` over HTTP: the pid of the worker that answered, and our samples."""
        status, headers, body = self.get("/metrics")
        assert status == 200
        return int(headers["X-Worker"]), parse(body)

    def master(self) -> dict[str, float]:
        """The master's ``/metrics``: every worker's samples, no worker thread needed."""
        status, _, body = self.get("/metrics", port=self.metrics_port)
        assert status == 200
        return parse(body)

    def workers(self) -> set[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return {int(pid) for pid in children.read_text().split()}
        except OSError:
            return set()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def parse(body: bytes) -> dict[str, float]:
    """``{"name{label=value,...}": value}`` of this service's samples, labels sorted."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.labels.get("service_name") != SERVICE:
                continue
            labels = {
                k: v for k, v in sample.labels.items() if k not in ("service_name", "framework")
            }
            key = sample.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
            found[key] = sample.value
    return found


def wait_for(condition: Callable[[], bool], what: str, server: Server) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert server.process.poll() is None, f"gunicorn exited:\n{server.output()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{server.output()}"
        time.sleep(0.05)


def busy(server: Server) -> float:
    return server.master().get("polyframe_worker_threads_busy{}", 0)


def busy_settles_at(server: Server, expected: float) -> None:
    """Busy threads become ``expected``: a thread that has sent its response still
    counts itself busy for a moment, until its handler returns."""
    wait_for(lambda: busy(server) == expected, f"{expected} busy threads", server)


def threads_available(server: Server) -> float:
    try:
        return server.scrape()[1].get("polyframe_worker_threads{}", 0)
    except OSError:
        return 0


@contextlib.contextmanager
def running_gunicorn(
    tmp_path: Path,
    *,
    app: str = "tinyapp:app",
    workers: int = 2,
    threads: int = 2,
    log_level: str = "WARNING",
    timeout: int = 30,
) -> Iterator[Server]:
    """A real gunicorn of the kit (``workers`` x ``threads``) serving ``app``, until the end."""
    (tmp_path / "tinyapp.py").write_text(APP)
    (tmp_path / "tinyflask.py").write_text(FLASK_APP)
    (tmp_path / "gunicorn_test_conf.py").write_text(CONF)
    multiproc = tmp_path / "multiproc"
    signals = tmp_path / "signals"
    multiproc.mkdir()
    signals.mkdir()
    port, metrics_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KITTEST_"))}
    env.update(
        {
            MULTIPROC_ENV: str(multiproc),
            "OTEL_TRACES_EXPORTER": "none",
            "KITTEST_APP": app,
            "KITTEST_TIMEOUT": str(timeout),
            "KITTEST_BIND": f"127.0.0.1:{port}",
            "KITTEST_METRICS_BIND": f"127.0.0.1:{metrics_port}",
            "KITTEST_WORKERS": str(workers),
            "KITTEST_THREADS": str(threads),
            "KITTEST_LOG_LEVEL": log_level,
            "GUNICORN_TEST_SIGNALS": str(signals),
            "PYTHONPATH": str(tmp_path),
        }
    )
    # Files of an earlier run in the folder (a restarted container keeps its emptyDir):
    # requests that this server never served.
    stale = subprocess.run(
        [sys.executable, "-c", STALE_RUN],
        env=env,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=True,
    )
    stale_files = sorted(multiproc.iterdir())
    assert stale_files, stale.stderr
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(tmp_path / "gunicorn_test_conf.py")],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    running = Server(process, port, metrics_port, multiproc, signals, log)
    try:
        # Every worker loaded the app and reported its threads (post_worker_init).
        capacity = workers * threads
        wait_for(
            lambda: threads_available(running) == capacity,
            f"{workers} workers x {threads} threads",
            running,
        )
        # The master emptied the folder before its workers started (on_starting).
        assert not any(path.exists() for path in stale_files)
        yield running
    finally:
        (signals / "release").touch()
        workers_left = running.workers()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=PATIENCE)
        for pid in workers_left:  # only the workers of this master, should any be left
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running_gunicorn(tmp_path) as running:
        yield running


def send_raw(port: int, path: str) -> socket.socket:
    """Send a request and return the socket unread (so many can be in flight at once)."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    return connection


def read_raw(connection: socket.socket) -> tuple[int, int]:
    """(status, worker pid) of the response on ``connection``."""
    with connection:
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, int(body)


def route_count(samples: dict[str, float], route: str) -> float:
    return samples.get(
        "http_server_request_duration_seconds_count"
        f"{{http_request_method=GET,http_response_status_code=200,http_route={route}}}",
        0,
    )


def test_thread_pool_busy_capacity_and_queue_time(server: Server) -> None:
    # Six requests of 0.8 s on four threads: at least two wait for a thread.
    connections = [send_raw(server.port, "/slow?ms=800") for _ in range(6)]
    wait_for(lambda: busy(server) >= 1, "busy threads on the master's /metrics", server)
    during = server.master()
    assert 1 <= during["polyframe_worker_threads_busy{}"] <= 4
    assert during["polyframe_worker_threads{}"] == 4
    answers = [read_raw(connection) for connection in connections]
    assert all(status == 200 for status, _ in answers)
    busy_settles_at(server, 0)

    _, samples = server.scrape()  # through a worker: its own thread is busy meanwhile
    assert samples["polyframe_worker_threads{}"] == 4
    assert samples["polyframe_worker_threads_busy{}"] >= 1
    assert route_count(samples, "/slow") == 6
    assert route_count(server.master(), "/slow") == 6
    queue_count = samples["polyframe_request_queue_duration_seconds_count{}"]
    assert queue_count >= 6  # every request handled by a thread (scrapes too) waited once
    waited = queue_count - samples["polyframe_request_queue_duration_seconds_bucket{le=0.25}"]
    # The two (or more) that found their worker's threads busy for 0.8 s.
    assert waited >= 2, {k: v for k, v in samples.items() if "queue" in k}


def test_every_request_counted_once_whichever_worker_served_it(server: Server) -> None:
    served: list[int] = []
    with ThreadPoolExecutor(max_workers=6) as pool:
        # Batches of concurrent requests until both workers served some (bounded).
        for _ in range(20):
            answers = list(pool.map(lambda _: server.get("/fast"), range(12)))
            assert all(status == 200 for status, _, _ in answers)
            served += [int(body) for _, _, body in answers]
            if len(set(served)) == 2:
                break
    assert set(served) == server.workers()  # both workers took part
    scrapes = [server.scrape() for _ in range(8)]
    assert {round(route_count(samples, "/fast")) for _, samples in scrapes} == {len(served)}
    by_worker = {pid for pid, _ in scrapes}
    assert by_worker <= server.workers()


def test_a_killed_worker_leaves_no_busy_gauge_and_keeps_its_counters(server: Server) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        served = [int(body) for _, _, body in pool.map(lambda _: server.get("/fast"), range(12))]
    _, before = server.scrape()
    assert route_count(before, "/fast") == 12

    name = uuid.uuid4().hex
    held = send_raw(server.port, f"/hold?name={name}")
    wait_for(lambda: any(server.signals.glob(f"started-*-{name}")), "the held request", server)
    (started,) = server.signals.glob(f"started-*-{name}")
    victim = int(started.name.split("-")[1])
    assert victim in server.workers()
    busy_settles_at(server, 1)  # the held request's thread, and no other
    assert (server.multiproc / f"gauge_livesum_{victim}.db").exists()

    os.kill(victim, signal.SIGKILL)
    # The master's child_exit drops its live gauges (nobody scrapes meanwhile).
    wait_for(
        lambda: not (server.multiproc / f"gauge_livesum_{victim}.db").exists(),
        "child_exit to drop the killed worker's gauges",
        server,
    )
    with held:  # the connection died with its worker, unanswered
        try:
            answer = held.recv(65536)
        except ConnectionResetError:
            answer = b""
    assert answer == b""
    # The master replaced it: capacity is back, and the dead worker's busy thread is gone.
    wait_for(lambda: threads_available(server) == 4, "the replacement worker", server)
    assert victim not in server.workers()
    busy_settles_at(server, 0)
    after = server.master()
    assert after["polyframe_worker_threads{}"] == 4
    # Counters did not go backwards: the dead worker's requests are still counted.
    assert route_count(after, "/fast") == 12
    if victim in served:
        assert (server.multiproc / f"histogram_{victim}.db").exists()
    for key, value in before.items():
        if "_total{" in key or "_count{" in key:
            assert after.get(key, 0) >= value, key


def raw_answer(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one raw request (gunicorn closes the connection after)."""
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as connection:
        connection.sendall(request)
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (f"GET /?q={'a' * 5000} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), 414),
        (f"GET / HTTP/1.1\r\nHost: t\r\nX-Big: {'a' * 9000}\r\n\r\n".encode(), 431),
        (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", 400),
    ],
    ids=["request-line-too-long", "header-too-large", "malformed-header"],
)
def test_what_gunicorn_refuses_itself_is_a_problem(
    server: Server, request_bytes: bytes, status: int
) -> None:
    """Not gunicorn's HTML page: problem+json, with the headers of every API answer."""
    answer_status, headers, body = raw_answer(server.port, request_bytes)

    assert answer_status == status
    assert headers["content-type"] == "application/problem+json"
    assert int(headers["content-length"]) == len(body)
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    problem = json.loads(body)
    assert problem["status"] == status
    assert problem["type"] == "about:blank"
    assert problem["title"]
    assert problem["detail"]
    assert problem["instance"] is None


# --- a request body the app left unread --------------------------------------------------------


def read_answer(
    connection: socket.socket, pending: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One response read off a kept connection (its Content-Length frames it); b"" kept
    for the next."""
    data = pending
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of a response body")
        rest += chunk
    return int(status_line.split()[1]), headers, rest[:length]


def chunked(body: bytes, size: int = 8192) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


BIG = b"x" * (200 * 1024)  # over the 64 KiB gunicorn drains after a response by itself


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /fast HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(BIG), BIG),
        b"POST /fast HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(BIG),
        b"POST /fast HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789",
    ],
    ids=["200-KiB-length", "200-KiB-chunked", "10-bytes"],
)
def test_a_body_the_app_left_unread_leaves_the_connection_usable(
    server: Server, request_bytes: bytes
) -> None:
    """The app (it reads no body) answers keep-alive, and the connection then serves the next
    request: gunicorn drains 64 KiB of an unread body by itself and then closed a connection
    it had announced as kept alive, under a proxy's next request (Traefik's 502)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE) as connection:
        connection.sendall(request_bytes)
        status, headers, _ = read_answer(connection)
        assert (status, headers.get("connection")) == (200, "keep-alive")

        connection.sendall(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = read_answer(connection)
        assert (status, headers.get("connection")) == (200, "keep-alive")
        assert body.isdigit()  # the worker's pid: the app answered it


def test_a_body_too_large_to_read_is_answered_with_connection_close(server: Server) -> None:
    """More than the kit reads of a body it drops (16 MiB): the response says the connection
    closes, and it does (no body byte is sent here, so the close is clean)."""
    length = unread.DISCARD_LIMIT + 1
    with socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE) as connection:
        connection.sendall(b"POST /fast HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % length)
        status, headers, _ = read_answer(connection)
        assert (status, headers.get("connection")) == (200, "close")
        assert connection.recv(1) == b""


# --- the request clock, the oldest request, busy seconds, worker exits ------------------------


def access_lines(server: Server) -> list[dict[str, object]]:
    lines = []
    for raw in server.log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(raw)
            if entry.get("logger") == "service_kit.access":
                lines.append(entry)
    return lines


def buckets(samples: dict[str, float], name: str, **labels: str) -> dict[float, float]:
    """``{le: cumulative count}`` of histogram ``name`` (labels as :func:`parse` keeps them)."""
    found = {}
    for key, value in samples.items():
        if not key.startswith(f"{name}_bucket{{"):
            continue
        pairs = dict(pair.split("=", 1) for pair in key[key.index("{") + 1 : -1].split(","))
        if labels.items() <= pairs.items():
            found[float(pairs["le"])] = value
    return found


def test_the_request_clock_starts_when_gunicorn_queued_the_request(tmp_path: Path) -> None:
    """One thread: a request that arrives while another holds it waits, and its duration
    (metric and access log) is what its client waited: the queue included."""
    with running_gunicorn(
        tmp_path, app="tinyflask:app", workers=1, threads=1, log_level="INFO"
    ) as server:
        name = uuid.uuid4().hex
        holding = send_raw(server.port, f"/hold?name={name}")
        wait_for(lambda: any(server.signals.glob(f"started-*-{name}")), "the held request", server)
        waiting = send_raw(server.port, "/fast")
        time.sleep(0.5)  # the first one keeps the only thread meanwhile (not an assertion)
        (server.signals / f"release-{name}").touch()
        with holding, waiting:
            for connection in (holding, waiting):
                while connection.recv(65536):
                    pass
        wait_for(lambda: route_count(server.master(), "/fast") == 1, "the waiting request", server)
        samples = server.master()

    # What the queue histogram says the waiting request waited (more than ``waited``)...
    queue = buckets(samples, "polyframe_request_queue_duration_seconds")
    total = samples["polyframe_request_queue_duration_seconds_count{}"]
    waited = max(le for le, count in queue.items() if count < total)
    # ...its duration says too: no bucket up to ``waited`` holds it.
    duration = buckets(samples, "http_server_request_duration_seconds", http_route="/fast")
    assert duration[waited] == 0, (waited, duration)
    assert duration[float("inf")] == 1
    (line,) = [line for line in access_lines(server) if line["route"] == "/fast"]
    assert float(str(line["duration_ms"])) > waited * 1000


def test_a_held_request_is_the_oldest_in_flight_and_its_busy_seconds_count_meanwhile(
    tmp_path: Path,
) -> None:
    with running_gunicorn(tmp_path, app="tinyflask:app", workers=1, threads=1) as server:
        oldest = "polyframe_oldest_request_start_timestamp_seconds{}"
        busy_seconds = "polyframe_worker_threads_busy_seconds_total{}"
        assert server.master()[oldest] == float("inf")  # none in flight
        name = uuid.uuid4().hex
        before = time.time()
        held = send_raw(server.port, f"/hold?name={name}")
        wait_for(lambda: any(server.signals.glob(f"started-*-{name}")), "the held request", server)
        started = time.time()
        during = server.master()
        assert before <= during[oldest] <= started
        # Still running, and already counted: the worker adds its busy time every second
        # (``counted``: the requests before it, the start-up scrapes through the worker).
        counted = during.get(busy_seconds, 0)
        wait_for(
            lambda: server.master().get(busy_seconds, 0) > counted,
            "busy seconds of the held request",
            server,
        )
        (server.signals / f"release-{name}").touch()
        with held:
            while held.recv(65536):
                pass
        wait_for(lambda: server.master()[oldest] == float("inf"), "none in flight", server)


def exits(server: Server) -> dict[str, float]:
    """Each reason's count; every reason is a series from the start (0, not "no data")."""
    samples = server.master()
    return {
        reason: samples[f"polyframe_worker_exits_total{{reason={reason}}}"]
        for reason in ("timeout", "crash", "restart")
    }


def test_worker_exits_are_counted_by_the_master_by_reason(tmp_path: Path) -> None:
    with running_gunicorn(tmp_path, timeout=2) as server:
        assert exits(server) == {"timeout": 0, "crash": 0, "restart": 0}

        # Killed from outside (as the OOM killer does): a crash.
        victim = min(server.workers())
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: exits(server)["crash"] == 1, "the crash counted", server)

        # Stopped as a whole (its main loop no longer notifies): the master aborts it.
        wait_for(lambda: len(server.workers()) == 2, "the replacement worker", server)
        stuck = min(server.workers())
        os.kill(stuck, signal.SIGSTOP)
        wait_for(lambda: exits(server)["timeout"] == 1, "the timeout counted", server)

        # A reload (HUP): every worker leaves cleanly and is replaced.
        wait_for(lambda: len(server.workers()) == 2, "the replacement worker", server)
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: exits(server)["restart"] == 2, "the restarts counted", server)
        assert exits(server) == {"timeout": 1, "crash": 1, "restart": 2}
