"""A pod's containers watched as the kubelet watches them: exits recorded, init containers run
to success, probes (startup, then liveness and readiness) acted on, and kills with preStop.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from typing import Any

import httpx

from polyframe_release.engine import EngineError
from polyframe_release.podcontainers import PodContainers
from polyframe_release.podspec import PROBE_USER_AGENT, TICK, ContainerRun, Probe, SpecError
from polyframe_release.store import now_iso


class PodProbes(PodContainers):
    """Watches the pod's containers: exits, restarts, probes, kills."""

    def _run_init(self, container: ContainerRun) -> bool:
        """Run an init container to success (restarting it unless restartPolicy is Never)."""
        while not self.deleting.is_set():
            if container.retry_at and time.monotonic() < container.retry_at:
                self._sleep(min(TICK, container.retry_at - time.monotonic()))
                continue
            if not self._start(container):
                continue
            code = self._wait_exit(container)
            if code is None:
                return False
            if code == 0:
                return True
            if self.restart_policy == "Never":
                self.phase, self.reason = "Failed", "Init:Error"
                self.message = f"init container {container.name} exited with {code}"
                return False
            self._schedule_restart(container)
            container.state = self._crash_loop_state(container)
            self.publish()
        return False

    def _wait_exit(self, container: ContainerRun) -> int | None:
        """The exit code of the current instance; None when the pod is deleted meanwhile."""
        assert container.current is not None
        with self.node.deaths.changed:
            while not self.deleting.is_set():
                code = self.node.deaths.exits.get(container.current)
                if code is not None:
                    break
                self.node.deaths.changed.wait(TICK)
            else:
                return None
        self._record_exit(container, code)
        return code

    def _record_exit(self, container: ContainerRun, code: int) -> None:
        """The instance ended: keep its log and state (``previous``), remove it."""
        assert container.current is not None
        reason = "Completed" if code == 0 else "Error"
        with contextlib.suppress(EngineError, IndexError, KeyError, TypeError):
            state = self.node.engine.json("inspect", container.current)[0]["State"]
            if state.get("OOMKilled"):
                reason = "OOMKilled"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log = self.logs_dir / f"{container.name}.{container.restart_count}.log"
        with log.open("w", encoding="utf-8") as sink:
            subprocess.run(
                [self.node.engine.name, "logs", container.current],
                env=self.node.engine.environ(),
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
            )
        container.previous_log = log
        started = container.state.get("running", {}).get("startedAt")
        terminated = {"exitCode": code, "reason": reason, "finishedAt": now_iso()}
        if started:
            terminated["startedAt"] = started
        container.state = {"terminated": terminated}
        container.ready = False
        self.node.engine.run("rm", "--force", "--ignore", container.current, check=False)
        container.current = None

    def _watch(self, container: ContainerRun, now: float) -> None:
        """One kubelet look at a main container: its exit, its restart, its probes."""
        if container.current is None:
            if container.retry_at and now >= container.retry_at:
                if container.restart_pending:
                    container.restart_pending = False
                    container.restart_count += 1  # a new instance after an exit, not a retry
                self._start(container)
            return
        code = self.node.deaths.exit_code(container.current)
        if code is not None:
            self._record_exit(container, code)
            container.last_state = container.state
            if self._may_restart(container):
                self._schedule_restart(container)
                container.restart_pending = True
                container.state = self._crash_loop_state(container)
                self.event(
                    "BackOff",
                    f"Back-off restarting failed container {container.name} in pod {self.name}",
                    warning=True,
                )
            return
        for probe in list(container.probes.values()):
            if now >= probe.next_due and self._probe_applies(container, probe):
                probe.next_due = now + probe.period
                if not self._probe(container, probe):
                    return

    def _may_restart(self, container: ContainerRun) -> bool:
        if self.restart_policy == "Always":
            return True
        if self.restart_policy == "OnFailure":
            terminated = (
                container.last_state.get("terminated") or container.state.get("terminated") or {}
            )
            return int(terminated.get("exitCode", 1)) != 0
        return False

    @staticmethod
    def _probe_applies(container: ContainerRun, probe: Probe) -> bool:
        return (
            probe.kind == "startupProbe" if not container.started else probe.kind != "startupProbe"
        )

    def _probe(self, container: ContainerRun, probe: Probe) -> bool:
        """Run one probe and act on it; False when the container was restarted."""
        ok, detail = self._check(container, probe)
        label = {
            "startupProbe": "Startup",
            "livenessProbe": "Liveness",
            "readinessProbe": "Readiness",
        }[probe.kind]
        if ok:
            probe.failures = 0
            probe.definitive = 0
            probe.successes += 1
            if probe.kind == "startupProbe":
                container.started = True
                if "readinessProbe" not in container.probes:
                    container.ready = True
            elif probe.kind == "readinessProbe" and probe.successes >= probe.success_threshold:
                container.ready = True
            return True
        probe.successes = 0
        probe.failures += 1
        probe.last_failure = f"{label} probe {self._describe_probe(probe)} failed: {detail}"
        if detail.startswith("HTTP probe failed with statuscode: 4"):
            probe.definitive += 1
        else:
            probe.definitive = 0
        self.event("Unhealthy", f"{label} probe failed: {detail}", warning=True)
        if probe.kind == "readinessProbe" and probe.failures >= probe.failure_threshold:
            container.ready = False
        if (
            probe.kind in {"startupProbe", "livenessProbe"}
            and probe.failures >= probe.failure_threshold
        ):
            self.event(
                "Killing",
                f"Container {container.name} failed {label.lower()} probe, will be restarted",
            )
            self._kill(container, self.grace)
            container.last_state = container.state
            # Restarted as after any exit: at once the first time, then with the back-off.
            self._schedule_restart(container)
            container.restart_pending = True
            return False
        return True

    @staticmethod
    def _describe_probe(probe: Probe) -> str:
        spec = probe.spec
        if "httpGet" in spec:
            return f"GET {spec['httpGet'].get('path', '/')} on port {spec['httpGet']['port']}"
        if "exec" in spec:
            return f"`{' '.join(spec['exec']['command'])}`"
        return f"tcp port {spec.get('tcpSocket', {}).get('port')}"

    def _check(self, container: ContainerRun, probe: Probe) -> tuple[bool, str]:
        spec = probe.spec
        if "exec" in spec:
            assert container.current is not None
            try:
                done = subprocess.run(
                    [self.node.engine.name, "exec", container.current, *spec["exec"]["command"]],
                    env=self.node.engine.environ(),
                    capture_output=True,
                    text=True,
                    # timeoutSeconds for the command, and a second for `podman exec` to start.
                    timeout=probe.timeout + 1,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return False, f"command timed out after {probe.timeout:g}s"
            output = (done.stdout + done.stderr).strip()[-300:]
            return done.returncode == 0, output or f"exit code {done.returncode}"
        handler = spec.get("httpGet") or spec.get("tcpSocket")
        if handler is None:
            raise SpecError(
                f"container {container.name}: {probe.kind} has no handler the runner implements"
            )
        port = self._container_port(container, handler["port"])
        host_port = self.ports.get(port)
        if host_port is None:
            return False, f"port {port} is not published"
        if "tcpSocket" in spec:
            try:
                socket.create_connection(("127.0.0.1", host_port), timeout=probe.timeout).close()
            except OSError as exc:
                return False, f"dial tcp {self.ip}:{port}: {exc}"
            return True, ""
        scheme = str(handler.get("scheme", "HTTP")).lower()
        headers = {"Host": f"{self.ip}:{port}", "User-Agent": PROBE_USER_AGENT, "Accept": "*/*"}
        for header in handler.get("httpHeaders") or []:
            headers[header["name"]] = header["value"]
        url = f"{scheme}://127.0.0.1:{host_port}{handler.get('path', '/')}"
        try:
            response = httpx.get(url, headers=headers, timeout=probe.timeout, verify=False)  # noqa: S501 (the kubelet skips TLS verification for probes)
        except httpx.HTTPError as exc:
            return False, f'Get "{scheme}://{self.ip}:{port}{handler.get("path", "/")}": {exc!r}'
        if 200 <= response.status_code < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {response.status_code}"

    @staticmethod
    def _container_port(container: ContainerRun, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for entry in container.spec.get("ports") or []:
            if entry.get("name") == port:
                return int(entry["containerPort"])
        raise SpecError(f"container {container.name}: no port named {port!r}")

    def _kill(self, container: ContainerRun, grace: int) -> None:
        """preStop, then the image's stop signal, SIGKILL after what is left of ``grace``."""
        if container.current is None:
            return
        deadline = time.monotonic() + grace
        pre_stop = ((container.spec.get("lifecycle") or {}).get("preStop") or {}).get("exec")
        if pre_stop:
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(
                    [self.node.engine.name, "exec", container.current, *pre_stop["command"]],
                    env=self.node.engine.environ(),
                    capture_output=True,
                    timeout=max(1.0, deadline - time.monotonic()),
                    check=False,
                )
        remaining = max(0, int(deadline - time.monotonic()))
        self.node.engine.run(
            "stop", "--time", str(remaining), container.current, check=False, timeout=remaining + 30
        )
        code = self.node.deaths.exit_code(container.current)
        self._record_exit(container, 137 if code is None else code)
