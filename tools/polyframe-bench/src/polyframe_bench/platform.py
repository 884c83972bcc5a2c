"""The platform under benchmark: ``polyframe-dev up`` (as ``make up``), and the bare apps.

Everything listens on 127.0.0.1 on free ports; every process started here is
stopped here, by its own pid (the platform by SIGINT, as Ctrl-C stops ``make up``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from polyframe_bench.servers import BareServer
from polyframe_dev.plan import free_port
from polyframe_dev.services import SERVICES, drop_postgres_databases

READY_TIMEOUT = 180.0


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> float:
    """Poll ``url`` every 10 ms until 200; return the seconds it took. Fails if it dies."""
    started = time.monotonic()
    with httpx.Client(timeout=2) as client:
        while time.monotonic() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
            try:
                if client.get(url).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.01)
    raise RuntimeError(f"{url} not ready after {timeout:g}s")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop a process this harness started (its own process group), then reap it."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class Platform:
    """One ``polyframe-dev up``, with what the scenarios need: a user, an order, credentials."""

    name: str
    folder: Path
    options: tuple[str, ...] = ()
    #: Over the bench's environment (the services' settings, e.g. their pools).
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    ready: dict[str, Any] = field(default_factory=dict, init=False)
    email: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex}@example.com", init=False)
    password: str = "a long bench passphrase"  # noqa: S105 - a throw-away bench account
    order_id: str = ""
    user_id: str = ""

    def start(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        ready_file = self.folder / "ready.json"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "polyframe_dev.cli",
                "up",
                "--port",
                "0",
                "--free-ports",
                "--no-prometheus",
                "--data-dir",
                str(self.folder / "data"),
                "--ready-file",
                str(ready_file),
                "--no-color",
                *self.options,
            ],
            stdout=(self.folder / "platform.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"platform {self.name} did not start; see {self.folder / 'platform.log'}"
                )
            time.sleep(0.2)
        self.ready = json.loads(ready_file.read_text())

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, signal.SIGINT, timeout=60)
        server = self.option("--postgres")
        if server:  # its databases were made for this run only (also if it failed to start)
            drop_postgres_databases(server, self.folder / "data", SERVICES)

    def option(self, name: str) -> str | None:
        """The value given to ``polyframe-dev up`` option ``name`` (None if not given)."""
        options = list(self.options)
        return options[options.index(name) + 1] if name in options else None

    @property
    def ingress(self) -> str:
        return str(self.ready["ingress"])

    def service(self, name: str) -> str:
        return str(self.ready["services"][name])

    def server_pid(self, name: str) -> int:
        return int(self.ready["pids"][name])

    def secret(self, service: str) -> str:
        path = Path(self.ready["data_dir"]) / "secrets" / f"service-{service}.secret"
        return path.read_text().strip()

    def prepare(self) -> None:
        """A member with one order (for the reads), through the ingress."""
        with httpx.Client(base_url=self.ingress, timeout=30) as client:
            registered = client.post(
                "/api/users/register",
                json={"email": self.email, "password": self.password, "full_name": "Bench"},
            )
            registered.raise_for_status()
            self.user_id = registered.json()["id"]
            created = client.post(
                "/api/orders",
                json={
                    "currency": "EUR",
                    "items": [{"sku": "BENCH-1", "quantity": 1, "unit_price_cents": 100}],
                },
                headers={"Authorization": self.bearer()},
            )
            created.raise_for_status()
            self.order_id = created.json()["id"]

    def bearer(self) -> str:
        """A fresh access token (they live 15 minutes; a long benchmark outlives one)."""
        response = httpx.post(
            f"{self.ingress}/api/users/login",
            json={"email": self.email, "password": self.password},
            # A log-in is argon2, queued behind the requests of the run before (a 200-connection
            # order creation) on a busy machine: it may take long, and must not fail the run.
            timeout=120,
        )
        response.raise_for_status()
        return f"Bearer {response.json()['access_token']}"


@dataclass
class BareProcess:
    server: BareServer
    #: Picked when it starts, not before: a port picked early may be taken meanwhile by
    #: the platforms the bench starts first (they pick free ports of their own).
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    #: Over the bench's environment (a floor app's database).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path) -> float:
        """Start it; return its cold start (spawn to the first 200 of ``/readyz``)."""
        self.port = free_port()
        with log.open("ab") as output:  # the child keeps its own copy
            self.process = subprocess.Popen(
                self.server.command(self.port),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            )
        return wait_ready(f"{self.url}/readyz", self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None
