"""The release, run: what ``helm upgrade --install`` and a cluster would do with the render.

:meth:`Release.up` checks that the runner implements every object and field of the render,
says what it does not emulate and which stand-ins it uses, creates the release's network,
starts its Kubernetes API (the e2e suite's cluster mode reads it) and its ingress, then
installs as Helm installs: ``pre-install`` hooks by weight (ties by name), waiting for each
Job to complete and each Pod to succeed; then every other object in Helm's kind order; then
the ``post-install`` hooks; and waits, as ``skaffold run --status-check`` does, until every
Deployment has rolled out and every StatefulSet is ready, or says precisely why not.
:meth:`Release.helm_test` runs the ``test`` hooks as ``helm test`` does. :meth:`Release.down`
deletes every pod gracefully and removes every container, the network and the claims.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyframe_release import kinds, kubeapi, network, standins
from polyframe_release.controllers import Controllers
from polyframe_release.engine import Engine
from polyframe_release.node import DeathWatch, Node
from polyframe_release.pods import PodWorker
from polyframe_release.podspec import GIVE_UP_RESTARTS, RUN_LABEL
from polyframe_release.render import Render
from polyframe_release.store import KINDS as STORED_KINDS
from polyframe_release.store import Store

#: Helm's install order of kinds (pkg/release/util/kind_sorter.go); others come last.
INSTALL_ORDER = (
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
)
HOOK = "helm.sh/hook"
HOOK_WEIGHT = "helm.sh/hook-weight"
HOOK_DELETE = "helm.sh/hook-delete-policy"
#: The hook events of an install (upgrade hooks are never due: each run is an install) and of
#: helm test; and the delete policies, as Helm applies them.
HOOK_EVENTS = frozenset(
    {"pre-install", "post-install", "pre-upgrade", "post-upgrade", "test", "test-success"}
)
HOOK_DELETE_POLICIES = frozenset({"before-hook-creation", "hook-succeeded", "hook-failed"})
#: Helm's default --timeout, per hook and for the release to become ready.
HOOK_TIMEOUT = 300.0
READY_TIMEOUT = 600.0
TICK = 0.5
STATE_FILE = "runner.json"
#: The lines of a crashed container's log searched for the cause.
LOG_WINDOW = 60
ERROR_LINE = re.compile(r"(?i)error|exception|critical|fatal|refus|required|denied|not found")
E2E_SERVICE_ACCOUNT = "polyframe-e2e"


class ReleaseError(RuntimeError):
    """The release cannot run, or did not come up: the message says what and why."""


def kind_rank(kind: str) -> int:
    return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)


def hooks_of(objects: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    """The hooks of ``event`` in the order Helm runs them: by weight, ties by name (a stable
    sort over Helm's kind order)."""
    # Helm reads test-success as test.
    wanted = {event, *({"test-success"} if event == "test" else set())}
    found = [o for o in objects if wanted & set(hook_events(o))]
    found.sort(key=lambda o: kind_rank(o["kind"]))
    found.sort(
        key=lambda o: (
            int((o["metadata"].get("annotations") or {}).get(HOOK_WEIGHT, "0")),
            o["metadata"]["name"],
        )
    )
    return found


def hook_events(obj: dict[str, Any]) -> list[str]:
    text = (obj["metadata"].get("annotations") or {}).get(HOOK) or ""
    return [event.strip() for event in text.split(",") if event.strip()]


def delete_policies(obj: dict[str, Any]) -> set[str]:
    """A hook's delete policies; Helm's default is before-hook-creation."""
    text = (obj["metadata"].get("annotations") or {}).get(HOOK_DELETE) or "before-hook-creation"
    return {policy.strip() for policy in text.split(",") if policy.strip()}


def is_hook(obj: dict[str, Any]) -> bool:
    return HOOK in (obj["metadata"].get("annotations") or {})


def check(render: Render) -> tuple[list[str], list[str]]:
    """(errors, not emulated): every object and field the runner would not run as rendered."""
    errors, skipped = [], []
    for obj in render.objects:
        kind = obj.get("kind", "?")
        if kind in kinds.NOT_EMULATED:
            skipped.append(f"{kinds.describe(obj)}: {kinds.NOT_EMULATED[kind]}")
            continue
        if kind == "Service" and (obj.get("spec") or {}).get("clusterIP") == "None":
            skipped.append(
                f"{kinds.describe(obj)}: headless, served like the others (one address that "
                "reaches a ready pod), not by one DNS record per pod"
            )
        if kind not in kinds.EMULATED:
            errors.append(
                f"{kinds.describe(obj)}: the kind {kind} is not implemented by the release runner"
            )
            continue
        for path in kinds.unsupported_fields(obj):
            errors.append(
                f"{kinds.describe(obj)}: field {path} is not implemented by the release runner"
            )
        for hook in hook_events(obj):
            if hook not in HOOK_EVENTS:
                errors.append(
                    f"{kinds.describe(obj)}: hook {hook} is not implemented by the release runner"
                )
        for policy in delete_policies(obj) - HOOK_DELETE_POLICIES if is_hook(obj) else set():
            errors.append(
                f"{kinds.describe(obj)}: hook delete policy {policy} is not implemented by the "
                "release runner"
            )
    return errors, skipped


def summarize(skipped: list[str]) -> list[str]:
    """``Kind/name: why`` lines grouped by kind and why: ``Kind (n): why — names``."""
    groups: dict[tuple[str, str], list[str]] = {}
    for line in skipped:
        what, _, why = line.partition(": ")
        kind, _, name = what.partition("/")
        groups.setdefault((kind, why), []).append(name)
    return [
        f"{kind} ({len(names)}): {why} — {', '.join(names)}"
        for (kind, why), names in groups.items()
    ]


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
        self.api: kubeapi.KubeAPIServer | None = None
        self.pod_api: kubeapi.KubeAPIServer | None = None
        self.ingress: network.Ingress | None = None
        self.proxies: network.ServiceProxies | None = None
        self.controllers: Controllers | None = None
        self.gateway: str | None = None
        self.tokens: dict[str, str] = {}
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
        """The Kubernetes API of the release: on 127.0.0.1 for the host, on the network's
        gateway for pods (in-cluster config), TLS with a CA of this run."""
        assert self.gateway is not None
        tls = kubeapi.make_tls(
            self.run_dir / "api", ["127.0.0.1", self.gateway, "kubernetes.default.svc"]
        )
        # Every ServiceAccount of the render gets a token, holding the rules of the Roles bound
        # to it (none: the API refuses it everything, as RBAC would).
        users: dict[str, kubeapi.User] = {}
        for account in self.render.of_kind("ServiceAccount"):
            name = account["metadata"]["name"]
            rules = tuple(
                rule
                for role in self.render.of_kind("Role")
                if _binds(self.render, role, name)
                for rule in kubeapi.rules_from_role(role)
            )
            token = secrets.token_urlsafe(32)
            self.tokens[name] = token
            users[token] = kubeapi.User(
                f"system:serviceaccount:{self.render.namespace}:{name}", rules
            )
        admin_token = secrets.token_urlsafe(32)
        users[admin_token] = kubeapi.User("polyframe-release-admin", None)
        self.tokens["admin"] = admin_token
        self.api = kubeapi.KubeAPIServer(
            self.store, host="127.0.0.1", port=0, tokens=users, tls=tls
        )
        self.api.start()
        self.pod_api = kubeapi.KubeAPIServer(
            self.store, host=self.gateway, port=0, tokens=users, tls=tls
        )
        self.pod_api.start()
        pod_port = self.pod_api.url.rsplit(":", 1)[1]
        node.cluster_env.update(
            {
                "KUBERNETES_SERVICE_HOST": self.gateway,
                "KUBERNETES_SERVICE_PORT": pod_port,
                "KUBERNETES_SERVICE_PORT_HTTPS": pod_port,
                "KUBERNETES_PORT": f"tcp://{self.gateway}:{pod_port}",
            }
        )
        node.service_account_tokens = {k: v for k, v in self.tokens.items() if k != "admin"}
        node.api_ca = tls.ca_cert
        kubeapi.write_kubeconfig(
            self.state_dir / "kubeconfig",
            server=self.api.url,
            namespace=self.render.namespace,
            users={
                "polyframe-release": admin_token,
                **(
                    {E2E_SERVICE_ACCOUNT: self.tokens[E2E_SERVICE_ACCOUNT]}
                    if E2E_SERVICE_ACCOUNT in self.tokens
                    else {}
                ),
            },
            current="polyframe-release",
            ca_file=tls.ca_cert,
        )
        self.log(f"Kubernetes API: {self.api.url} (kubeconfig {self.state_dir / 'kubeconfig'})")

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
                    pods = self.controllers.pods_of("Job", name)
                    return f"{conditions['Failed']['reason']}: {self._explain_pods(pods)}"
            else:
                worker = self.controllers.workers.get(name)
                if worker is not None and worker.finished.is_set():
                    if worker.phase == "Succeeded":
                        return None
                    return self._explain_pods([worker])
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

    def problems(self) -> tuple[list[str], bool]:
        """What keeps the release from being ready, one line each; and whether waiting is
        pointless: every one of them is a failed Job or a workload with a pod that will not
        become ready without a change (PodWorker.hopeless). Waiting for the last of them to
        be known gives every cause in one report, not only the first."""
        assert self.controllers is not None
        found: list[str] = []
        stuck: list[bool] = []
        workloads = [
            *(
                ("Deployment", d, "availableReplicas", "available")
                for d in self.store.all("Deployment")
            ),
            *(("StatefulSet", s, "readyReplicas", "ready") for s in self.store.all("StatefulSet")),
        ]
        for kind, obj, field_name, word in workloads:
            status = obj.get("status") or {}
            want = int(obj["spec"].get("replicas", 1))
            if status.get(field_name, 0) >= want and status.get("replicas", 0) == want:
                continue
            pods = self.controllers.pods_of(kind, obj["metadata"]["name"])
            reasons = [f"pod {p.name}: {why}" for p in pods if (why := p.hopeless())]
            stuck.append(bool(reasons))
            found.append(
                f"{kind}/{obj['metadata']['name']}: {status.get(field_name, 0)} of {want} {word}"
                + (f" ({'; '.join(reasons)})" if reasons else "")
                + f"; {self._explain_pods(pods)}"
            )
        for job in self.store.all("Job"):
            conditions = {c["type"]: c for c in (job.get("status") or {}).get("conditions", [])}
            pods = self.controllers.pods_of("Job", job["metadata"]["name"])
            if conditions.get("Failed", {}).get("status") == "True":
                stuck.append(True)
                found.append(
                    f"Job/{job['metadata']['name']}: {conditions['Failed']['reason']}; "
                    f"{self._explain_pods(pods)}"
                )
            elif conditions.get("Complete", {}).get("status") != "True":
                # Still working (or backing off): what waits for it may yet become ready.
                stuck.append(False)
                found.append(
                    f"Job/{job['metadata']['name']}: not complete; {self._explain_pods(pods)}"
                )
        return found, bool(stuck) and all(stuck)

    def _explain_pods(self, pods: list[PodWorker]) -> str:
        if not pods:
            return "no pod"
        lines = []
        for pod in pods:
            states = []
            for container in [*pod.inits, *pod.containers]:
                state = container.state
                if "waiting" in state:
                    detail = state["waiting"].get("reason", "")
                    if state["waiting"].get("message"):
                        detail += f" ({state['waiting']['message']})"
                elif "terminated" in state:
                    ended = state["terminated"]
                    detail = f"terminated {ended.get('reason')} exit {ended.get('exitCode')}"
                else:
                    detail = "running" + (", ready" if container.ready else ", not ready")
                restarts = (
                    f", {container.restart_count} restarts" if container.restart_count else ""
                )
                states.append(f"{container.name}: {detail}{restarts}")
            warnings = self._recent_warnings(pod.name)
            log = self._last_log_lines(pod)
            line = (
                f"pod {pod.name} {pod.phase}{' (' + pod.reason + ')' if pod.reason else ''}: "
                + "; ".join(states)
            )
            if warnings:
                line += "\n      events: " + " | ".join(warnings)
            if log:
                line += "\n      last log lines: " + log
            lines.append(line)
        return "\n    " + "\n    ".join(lines)

    def _recent_warnings(self, pod: str) -> list[str]:
        events = [
            e
            for e in self.store.list("events")
            if e["involvedObject"]["name"] == pod and e["type"] == "Warning"
        ]
        return [f"{e['reason']}: {e['message']} (x{e['count']})" for e in events[-3:]]

    def _last_log_lines(self, pod: PodWorker) -> str:
        """What the last instance that ended said about why: its first error lines (the cause
        comes before the server's own exit messages), else its last lines."""
        for container in [*pod.inits, *pod.containers]:
            if container.previous_log is None:
                continue
            lines = [
                line.strip()
                for line in container.previous_log.read_text(errors="replace").splitlines()
                if line.strip()
            ][-LOG_WINDOW:]
            errors = [found for line in lines if (found := _error_text(line))][:4]
            chosen = errors or lines[-5:]
            return f"{container.name}: " + " / ".join(line[:300] for line in chosen)
        return ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last_report = 0.0
        while True:
            problems, hopeless = self.problems()
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
                *(server.stop for server in (self.api, self.pod_api) if server is not None),
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


def remove_run(engine: Engine, run_id: str) -> list[str]:
    """Remove every container and the network of run ``run_id`` (by its label): what is left."""
    names = engine.run(
        "ps",
        "--all",
        "--filter",
        f"label={RUN_LABEL}={run_id}",
        "--format",
        "{{.Names}}",
        check=False,
    ).stdout.split()
    if names:
        engine.run("rm", "--force", "--time", "5", *names, check=False, timeout=300)
    networks = engine.run(
        "network",
        "ls",
        "--filter",
        f"label={RUN_LABEL}={run_id}",
        "--format",
        "{{.Name}}",
        check=False,
    ).stdout.split()
    for name in networks:
        engine.run("network", "rm", "--force", name, check=False)
    return names


def _error_text(line: str) -> str:
    """The error a log line reports, or '': a JSON line at level error or above (its message
    and error's), or a plain line (a traceback's, stderr's) that reads like an error."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            if str(record.get("level", "")).lower() not in {"error", "critical", "fatal"}:
                return ""
            error = record.get("error")
            detail = error.get("message") or error.get("type") if isinstance(error, dict) else ""
            return f"{record.get('message', '')}{': ' + str(detail) if detail else ''}"
    return line if ERROR_LINE.search(line) else ""


def pod_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    kind = obj.get("kind")
    if kind == "Pod":
        spec = obj["spec"]
    elif kind in {"Deployment", "StatefulSet", "Job"}:
        spec = obj["spec"]["template"]["spec"]
    else:
        return []
    return [*(spec.get("initContainers") or []), *spec["containers"]]


def _binds(render: Render, role: dict[str, Any], service_account: str) -> bool:
    """Whether a RoleBinding of the render binds ``role`` to ``service_account``."""
    for binding in render.of_kind("RoleBinding"):
        if binding["roleRef"].get("name") != role["metadata"]["name"]:
            continue
        for subject in binding.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount" and subject.get("name") == service_account:
                return True
    return False


def write_state(state_dir: Path, release: Release, pid: int, *, ready: bool) -> None:
    """runner.json: written before anything starts (so `down` finds what a killed start left),
    and again once all is ready; replaced atomically (``up --detach`` polls it)."""
    document = {
        "run_id": release.run_id,
        "pid": pid,
        "network": release.network_name,
        "ingress": release.ingress.url if release.ingress is not None and ready else None,
        "api": release.api.url if release.api is not None and ready else None,
        "kubeconfig": str(state_dir / "kubeconfig"),
        "logs": str(release.run_dir / "logs"),
        "release": release.render.release,
        "namespace": release.render.namespace,
        "ready": ready,
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    network.write_atomically(state_dir / STATE_FILE, json.dumps(document, indent=2) + "\n")


def read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    if not path.is_file():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded
