"""The release, run as ``helm upgrade --install`` and a cluster would: :meth:`Release.up` checks
the render, starts the network, API and ingress, installs in Helm's order and waits until all is
ready; :meth:`Release.helm_test` runs the test hooks; :meth:`Release.down` removes it all.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyframe_release import clusterapi, explain, kinds, network, standins
from polyframe_release.controllers import Controllers
from polyframe_release.engine import Engine
from polyframe_release.hooks import (
    check,
    delete_policies,
    hooks_of,
    is_hook,
    kind_rank,
    pod_containers,
    summarize,
)
from polyframe_release.node import DeathWatch, Node
from polyframe_release.podspec import GIVE_UP_RESTARTS
from polyframe_release.render import Render
from polyframe_release.runstate import remove_run
from polyframe_release.store import KINDS as STORED_KINDS
from polyframe_release.store import Store

#: Helm's default --timeout, per hook and for the release to become ready.
HOOK_TIMEOUT = 300.0
READY_TIMEOUT = 600.0
TICK = 0.5


class ReleaseError(RuntimeError):
    """The release cannot run, or did not come up: the message says what and why."""


@dataclass
class Release:
    """One run of the rendered release, as containers."""

    render: Render
    engine: Engine
    state_dir: Path
    ingress_port: int = 0
    log: Callable[[str], None] = print
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    ready_timeout: float = READY_TIMEOUT
    #: Restarts after which a crash-looping container gives up the run.
    give_up_restarts: int = GIVE_UP_RESTARTS

    def __post_init__(self) -> None:
        self.network_name = f"pfr-{self.run_id}"
        self.store = Store(self.render.namespace)
        self.deaths = DeathWatch(self.engine, self.run_id)
        self.stop_event = threading.Event()
        self.loop_thread: threading.Thread | None = None
        self.api: clusterapi.ClusterAPI | None = None
        self.ingress: network.Ingress | None = None
        self.proxies: network.ServiceProxies | None = None
        self.controllers: Controllers | None = None
        self.gateway: str | None = None
        self.started = time.monotonic()
        #: This run's folder: the pods' volumes and claims (Secrets as files), the API's keys,
        #: the proxies' endpoints, the logs. A run starts from none of an earlier run's.
        self.run_dir = self.state_dir / "runs" / self.run_id

    # -- start ------------------------------------------------------------------------------------

    def up(self, python_image: str) -> None:
        errors, skipped = check(self.render)
        if errors:
            raise ReleaseError(
                "the release runner cannot run this render as rendered:\n  " + "\n  ".join(errors)
            )
        self.log(
            f"release {self.render.release} (namespace {self.render.namespace}), run {self.run_id}"
        )
        if skipped:
            self.log("not emulated (only a cluster enforces these):")
            for line in summarize(skipped):
                self.log(f"  {line}")
        images = {c["image"] for obj in self.render.objects for c in pod_containers(obj)}
        missing = sorted(i for i in {*images, python_image} if not self.engine.image_exists(i))
        if missing:
            raise ReleaseError(
                f"images not in local storage: {', '.join(missing)} (the runner never pulls): "
                "make images"
            )
        for stand_in in standins.announce(self.engine, [*images, python_image]):
            self.log(f"  {stand_in}")
        self._prepare_folders()
        subnet = network.create_network(self.engine, self.network_name, self.run_id)
        self.gateway = str(next(subnet.hosts()))
        self.log(f"network {self.network_name} ({subnet}, gateway {self.gateway})")
        self.deaths.start()
        node = Node(
            engine=self.engine,
            run_id=self.run_id,
            network=self.network_name,
            namespace=self.render.namespace,
            store=self.store,
            run_dir=self.run_dir,
            pause_image=python_image,
            deaths=self.deaths,
            log=self.log,
            give_up_restarts=self.give_up_restarts,
        )
        self.controllers = Controllers(node, self.store, on_endpoints=self._endpoints_changed)
        self.store.on_delete_pod = self.controllers.delete_pod
        self.store.on_log = self._pod_log
        self.proxies = network.ServiceProxies(
            self.engine,
            run_id=self.run_id,
            network=self.network_name,
            namespace=self.render.namespace,
            image=python_image,
            folder=self.run_dir / "services",
        )
        self.ingress = network.Ingress(
            self.engine,
            run_id=self.run_id,
            network=self.network_name,
            folder=self.run_dir / "ingress",
            port=self.ingress_port,
        )
        self.ingress.start(network.ensure_traefik_image(self.engine))
        self.log(f"ingress: Traefik on {self.ingress.url} (kind: http://localhost:8080)")
        # The network's bridge (and so its gateway address) exists once a container uses it.
        self._start_api(node)
        self.loop_thread = threading.Thread(target=self._loop, name="controllers", daemon=True)
        self.loop_thread.start()
        self._install()
        self._wait_ready()

    def _prepare_folders(self) -> None:
        """Only the owner reads the state (it holds the release's Secrets); what earlier runs
        left (their claims: a database with other passwords) is removed."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        runs = self.state_dir / "runs"
        if runs.is_dir():
            for earlier in runs.iterdir():
                if earlier.name != self.run_id:
                    shutil.rmtree(earlier, ignore_errors=True)
        self.run_dir.mkdir(parents=True, mode=0o700, exist_ok=True)

    def _start_api(self, node: Node) -> None:
        """The Kubernetes API of the release (clusterapi): for the host and for the pods."""
        assert self.gateway is not None
        self.api = clusterapi.start(
            self.render,
            self.store,
            node,
            gateway=self.gateway,
            run_dir=self.run_dir,
            state_dir=self.state_dir,
        )
        self.log(
            f"Kubernetes API: {self.api.host.url} (kubeconfig {self.state_dir / 'kubeconfig'})"
        )

    # -- install ----------------------------------------------------------------------------------

    def _install(self) -> None:
        objects = self.render.objects
        self._run_hooks("pre-install")
        for obj in sorted(
            (o for o in objects if not is_hook(o)), key=lambda o: kind_rank(o["kind"])
        ):
            self.apply(obj)
        self._run_hooks("post-install")

    def _run_hooks(self, event: str) -> list[str]:
        """Apply each hook of ``event`` in Helm's order, waiting for Jobs and Pods; the failed."""
        failed = []
        for hook in hooks_of(self.render.objects, event):
            self.log(f"  hook {event}: {kinds.describe(hook)}")
            # before-hook-creation: an install has no earlier hook object to delete.
            self.apply(hook)
            if hook["kind"] not in {"Job", "Pod"}:
                continue
            problem = self._wait_hook(hook)
            policies = delete_policies(hook)
            if ("hook-succeeded" if problem is None else "hook-failed") in policies:
                self._delete(hook)
            if problem is not None:
                if event == "test":
                    failed.append(f"{kinds.describe(hook)}: {problem}")
                    continue
                raise ReleaseError(f"{event} hook {kinds.describe(hook)} failed: {problem}")
        return failed

    def _delete(self, obj: dict[str, Any]) -> None:
        """A hook removed as its delete policy says (a Job with its pods)."""
        assert self.controllers is not None
        name = obj["metadata"]["name"]
        if obj["kind"] == "Pod":
            self.controllers.delete_pod(name)
            return
        for worker in self.controllers.pods_of(obj["kind"], name):
            self.controllers.delete_pod(worker.name)
        self.store.remove(obj["kind"], name)

    def _wait_hook(self, hook: dict[str, Any]) -> str | None:
        """None when the Job completed / the Pod succeeded; else why not."""
        assert self.controllers is not None
        name = hook["metadata"]["name"]
        deadline = time.monotonic() + HOOK_TIMEOUT
        while time.monotonic() < deadline:
            if hook["kind"] == "Job":
                job = self.store.get("Job", name) or {}
                conditions = {c["type"]: c for c in (job.get("status") or {}).get("conditions", [])}
                if conditions.get("Complete", {}).get("status") == "True":
                    return None
                if conditions.get("Failed", {}).get("status") == "True":
                    pods = explain.explain_pods(self.store, self.controllers.pods_of("Job", name))
                    return f"{conditions['Failed']['reason']}: {pods}"
            else:
                worker = self.controllers.workers.get(name)
                if worker is not None and worker.finished.is_set():
                    if worker.phase == "Succeeded":
                        return None
                    return explain.explain_pods(self.store, [worker])
            time.sleep(TICK)
        return f"not done after {HOOK_TIMEOUT:g} s"

    def apply(self, obj: dict[str, Any]) -> None:
        """Create ``obj`` as the API server and its controllers would."""
        assert self.controllers is not None
        assert self.proxies is not None
        kind = obj["kind"]
        copy = json.loads(json.dumps(obj))
        if kind == "Pod":
            self.controllers.create_pod(None, obj["metadata"]["name"], copy, {})
            return
        if kind not in STORED_KINDS:
            return  # a kind only a cluster acts on (listed at start): nothing to run
        self.store.put(copy)
        if kind == "Service":
            self.proxies.start(copy)
        if kind == "Ingress":
            self._endpoints_changed(self.controllers.endpoints())

    # -- the loop ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self.controllers is not None
        while not self.stop_event.is_set():
            try:
                self.controllers.tick()
                self._restart_infrastructure()
            except Exception as exc:  # keep reconciling; say what went wrong
                self.log(f"controllers: {exc!r}")
            self.stop_event.wait(TICK)

    def _restart_infrastructure(self) -> None:
        """A Service's proxy or the ingress that died is started again (as a node restarts
        kube-proxy or a DaemonSet pod), and said."""
        assert self.proxies is not None
        assert self.ingress is not None
        for name in [*self.proxies.containers.values(), self.ingress.container]:
            code = self.deaths.exit_code(name)
            if code is None or self.stop_event.is_set():
                continue
            self.log(f"{name} exited ({code}): starting it again")
            self.deaths.forget(name)
            self.engine.run("start", name, check=False)

    def _endpoints_changed(self, ready: dict[str, list[tuple[str, dict[str, Any]]]]) -> None:
        assert self.proxies is not None
        assert self.ingress is not None
        services = {s["metadata"]["name"]: s for s in self.store.all("Service")}
        for name, service in services.items():
            self.proxies.update(service, ready.get(name, []))
        routes = network.ingress_routes(self.store.all("Ingress"))
        self.ingress.update(network.traefik_dynamic(routes, services, ready))

    # -- ready ------------------------------------------------------------------------------------

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last_report = 0.0
        while True:
            assert self.controllers is not None
            problems, hopeless = explain.problems(self.store, self.controllers)
            if not problems:
                self.log(f"all ready in {time.monotonic() - self.started:.0f} s")
                return
            if hopeless or time.monotonic() > deadline:
                why = (
                    "it cannot become ready as rendered"
                    if hopeless
                    else f"not ready after {self.ready_timeout:g} s"
                )
                raise ReleaseError(
                    f"the release did not come up ({why}):\n  " + "\n  ".join(problems)
                )
            if time.monotonic() - last_report > 15:
                last_report = time.monotonic()
                waiting = ", ".join(p.split(":")[0] for p in problems)
                self.log(f"  waiting for {waiting} ({time.monotonic() - self.started:.0f} s)")
            time.sleep(1.0)

    # -- helm test --------------------------------------------------------------------------------

    def helm_test(self) -> list[str]:
        """Run the ``test`` hooks as ``helm test`` does: each to its end, in Helm's order."""
        return self._run_hooks("test")

    # -- logs ---------------------------------------------------------------------------------

    def _pod_log(
        self, pod: str, container: str | None, previous: bool, tail_lines: int | None
    ) -> str:
        assert self.controllers is not None
        worker = self.controllers.workers.get(pod)
        if worker is None:
            raise LookupError(f'pods "{pod}" not found')
        return worker.log(container, previous=previous, tail_lines=tail_lines)

    # -- stop -------------------------------------------------------------------------------------

    def down(self) -> None:
        """Delete every pod gracefully, then the Services, the ingress, the API and the network;
        each step runs even when one before it failed (and Ctrl-C cannot cut it short)."""
        main = threading.current_thread() is threading.main_thread()
        previous = (
            (
                signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.signal(signal.SIGTERM, signal.SIG_IGN),
            )
            if main
            else None
        )
        try:
            self.stop_event.set()
            steps: list[Callable[[], object]] = [
                self._stop_pods,
                lambda: remove_run(self.engine, self.run_id),
                *((self.api.stop,) if self.api is not None else ()),
                self.deaths.stop,
                self._forget_secrets,
            ]
            for step in steps:
                try:
                    step()
                except Exception as exc:  # the next steps still run
                    self.log(f"stopping: {exc!r}")
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous[0] or signal.SIG_DFL)
                signal.signal(signal.SIGTERM, previous[1] or signal.SIG_DFL)

    def _stop_pods(self) -> None:
        if self.loop_thread is not None:
            self.loop_thread.join(10)
        if self.controllers is None:
            return
        workers = list(self.controllers.workers.values())
        for worker in workers:
            worker.delete()
        for worker in workers:
            worker.join(worker.grace + 90)

    def _forget_secrets(self) -> None:
        """The run's files but its logs: volumes, claims, the API's keys, env files."""
        for folder in ("pods", "claims", "api", "env", "services", "ingress"):
            shutil.rmtree(self.run_dir / folder, ignore_errors=True)
