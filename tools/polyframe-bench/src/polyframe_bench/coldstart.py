"""Cold start: process spawn to the first 200 of ``/readyz``, one server alone.

A service's server is started exactly as ``make up`` starts it (the same command
line and environment, from ``polyframe_dev.services``), on a port of its own,
against the running platform's data (migrated databases, secrets) and peers; a
bare app from :mod:`polyframe_bench.servers`. Nothing else loads the machine
meanwhile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from polyframe_bench.platform import BareProcess, Platform, stop, wait_ready
from polyframe_bench.servers import BareServer
from polyframe_dev.localsecrets import LocalSecrets
from polyframe_dev.plan import free_port
from polyframe_dev.services import SERVICES, Context


def service(platform: Platform, name: str, workers: int, scratch: Path) -> float:
    data_dir = Path(platform.ready["data_dir"])
    ports = {other: int(url.rsplit(":", 1)[1]) for other, url in platform.ready["services"].items()}
    ports[name] = free_port(avoid=ports.values())
    spec = SERVICES[name]
    if spec.metrics_port_name:  # never the running server's own metrics port
        ports[spec.metrics_port_name] = free_port(avoid=ports.values())
    context = Context(
        data_dir=data_dir,
        secrets=LocalSecrets(data_dir / "secrets"),
        ports=ports,
        workers=workers,
        instrumentation="--no-instrumentation" not in platform.options,
        postgres=platform.option("--postgres"),
    )
    env = spec.server_env(context)
    if "PROMETHEUS_MULTIPROC_DIR" in env:  # never the running server's own folder
        metrics_dir = scratch / f"metrics-{name}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    process = subprocess.Popen(
        spec.serve(context),
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=(scratch / f"coldstart-{name}.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        return wait_ready(f"{context.url(name)}/readyz", process)
    finally:
        stop(process)


def bare(server: BareServer, scratch: Path, env: dict[str, str] | None = None) -> float:
    process = BareProcess(server, env=dict(env or {}))
    try:
        return process.start(scratch / f"coldstart-{server.name}.log")
    finally:
        process.stop()
