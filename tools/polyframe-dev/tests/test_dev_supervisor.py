"""The supervisor starts, watches and stops real child processes."""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from polyframe_dev.supervisor import Interrupted, StartupError, Supervisor


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


def test_setup_command_failure_names_the_service() -> None:
    out = io.StringIO()
    sup = Supervisor(out=out, colour=False)
    with pytest.raises(StartupError, match=r"svc: .* failed with exit code 3"):
        sup.run("svc", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], {})
    assert "svc  " in out.getvalue()
    assert "| boom" in out.getvalue()


def test_output_is_prefixed_per_process() -> None:
    out = io.StringIO()
    Supervisor(out=out, colour=False).run("web", [sys.executable, "-c", "print('hello')"], {})
    assert any(
        line.startswith("web") and line.endswith("| hello") for line in out.getvalue().splitlines()
    )


def test_child_dying_before_ready_fails_fast(tmp_path: Path) -> None:
    sup = Supervisor(out=io.StringIO(), colour=False)
    child = sup.start("svc", [sys.executable, "-c", "raise SystemExit(7)"], {})
    try:
        with pytest.raises(StartupError, match="exited with code 7"):
            sup.wait_until(child, "http://127.0.0.1:9/readyz", timeout=30)
    finally:
        sup.stop_all(grace=1)


def test_stop_all_kills_what_ignores_sigterm_and_its_grandchildren(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = f"""
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open({str(pid_file)!r}, "w").write(str(grandchild.pid))
print("ready", flush=True)
time.sleep(60)
"""
    out = io.StringIO()
    sup = Supervisor(out=out, colour=False)
    child = sup.start("stubborn", [sys.executable, "-c", script], {})
    for _ in range(400):  # bounded: 20 s at most
        if pid_file.exists() and pid_file.read_text():
            break
        assert child.popen.poll() is None, "the test's child died early"
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    sup.stop_all(grace=0.5)
    assert child.popen.poll() is not None
    # SIGKILL is sent; on a busy machine the kernel may take a moment to end it.
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(grandchild)
    assert "did not stop in time" in out.getvalue()


def test_stop_all_stops_the_ingress_after_the_servers(tmp_path: Path) -> None:
    """A server still finishing requests keeps its way back to the client: the ingress
    gets SIGTERM only once every server has exited."""
    log = tmp_path / "order.log"
    script = """
import signal, sys, time
name, log = sys.argv[1], sys.argv[2]
def on_term(*_):
    open(log, "a").write(f"{name} got SIGTERM\\n")
    if name == "server":
        time.sleep(0.5)  # finishing what is in flight
    open(log, "a").write(f"{name} exited\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
time.sleep(60)
"""
    sup = Supervisor(out=io.StringIO(), colour=False)
    ingress = sup.start("traefik", [sys.executable, "-c", script, "traefik", str(log)], {})
    server = sup.start("server", [sys.executable, "-c", script, "server", str(log)], {})
    for child in (ingress, server):
        for _ in range(400):  # bounded: 20 s at most
            if any("ready" in line for line in child.tail):
                break
            assert child.popen.poll() is None, "the test's child died early"
            time.sleep(0.05)
        else:
            pytest.fail(f"{child.name} never said it was ready")
    sup.stop_all(grace=10, last=("traefik",))
    assert log.read_text().splitlines() == [
        "server got SIGTERM",
        "server exited",
        "traefik got SIGTERM",
        "traefik exited",
    ]


def test_ctrl_c_during_start_up_interrupts_the_waits() -> None:
    stop = threading.Event()
    sup = Supervisor(out=io.StringIO(), colour=False, stop=stop)
    child = sup.start("slow", [sys.executable, "-c", "import time; time.sleep(60)"], {})
    threading.Timer(0.2, stop.set).start()
    try:
        with pytest.raises(Interrupted):
            sup.wait_until(child, "http://127.0.0.1:9/readyz", timeout=60)
        with pytest.raises(Interrupted):
            sup.run("setup", [sys.executable, "-c", "import time; time.sleep(60)"], {})
    finally:
        sup.stop_all(grace=2)
    assert child.popen.poll() is not None
