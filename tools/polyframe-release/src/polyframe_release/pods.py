"""The kubelet's part: one Pod, run as containers exactly as its spec says.

Each Pod gets an infrastructure container that holds its network namespace (its IP on the
project network stays the Pod's across container restarts, as a sandbox does) and publishes
its container ports on 127.0.0.1 for the probes; its init containers then run in order and its
containers start, each with the spec's command and args, environment (``secretKeyRef``,
``configMapKeyRef``, ``fieldRef``, ``$(VAR)`` expansion), volumes as files at their mount
paths (Secret, ConfigMap, projected, ``emptyDir``, the StatefulSet's claims), user and groups,
read-only root file system, capabilities, no-new-privileges, seccomp, memory and CPU limits.
Probes run as the kubelet runs them (startup first, then liveness and readiness, with the
spec's delays, periods, timeouts and thresholds), a container whose liveness or startup probe
fails is killed (preStop first) and restarted with the kubelet's back-off, and a graceful
delete runs preStop, then the image's stop signal, then SIGKILL at the grace period's end.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from polyframe_release import kinds
from polyframe_release.engine import Engine, EngineError
from polyframe_release.store import Store, now_iso

RUN_LABEL = "io.polyframe.release.run"
POD_LABEL = "io.polyframe.release.pod"
#: The kubelet's restart back-off: 10 s doubled per crash, at most 5 minutes, reset after 10
#: minutes of running.
BACKOFF_START = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET = 600.0
#: What the engine itself reads from its environment: a pod's value may not replace them.
ENGINE_VARIABLES = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "XDG_RUNTIME_DIR",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "CONTAINERS_CONF",
        "CONTAINERS_STORAGE_CONF",
        "CONTAINERS_REGISTRIES_CONF",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
    }
)
#: When the runner stops waiting for a pod (see PodWorker.hopeless).
GIVE_UP_STUCK = 20.0
GIVE_UP_RESTARTS = 3
GIVE_UP_UNREADY = 150.0
#: How often the kubelet checks an emptyDir's size against its sizeLimit.
VOLUME_CHECK_SECONDS = 10.0
TICK = 0.25
#: How often the engine's exited containers are compared with the deaths its events reported.
RECONCILE_SECONDS = 15.0
#: Where a pod finds its ServiceAccount's token (and the folder's name among its volumes).
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 (a path)
TOKEN_VOLUME = "kube-api-access"  # noqa: S105 (a folder's name)
PROBE_USER_AGENT = "kube-probe/1.31"
DNS_DOMAIN = "cluster.local"


class ConfigError(Exception):
    """The container cannot be created from its spec yet (CreateContainerConfigError)."""


class SpecError(Exception):
    """The spec asks for something the runner does not implement: the run fails."""


def infrastructure_args(
    name: str,
    *,
    run_id: str,
    role: str,
    network: str,
    memory: str,
    user: str | None = "65534:65534",
) -> list[str]:
    """``run`` arguments of a container of the runner's own (a pod's sandbox, a Service's
    proxy, the ingress): labelled as the run's, on its network, locked down."""
    args = [
        "run", "--detach", "--name", name,
        "--label", f"{RUN_LABEL}={run_id}", "--label", f"{POD_LABEL}={role}",
        "--network", network, "--read-only", "--read-only-tmpfs=false",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--memory", memory, "--pull", "never",
    ]  # fmt: skip
    return [*args, "--user", user] if user else args


# -- quantities ---------------------------------------------------------------------------------

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "m": 10**-3}


def quantity(value: Any) -> float:
    """A Kubernetes quantity (``384Mi``, ``500m``, ``1``, ``1e3``) as a number."""
    text = str(value).strip()
    match = re.fullmatch(r"([0-9.]+(?:e[0-9]+)?)([A-Za-z]*)", text)
    if match is None:
        raise SpecError(f"not a quantity: {value!r}")
    number, suffix = float(match[1]), match[2]
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    if suffix:
        raise SpecError(f"unknown quantity suffix in {value!r}")
    return number


# -- environment --------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion (``$$`` escapes, unknown references stay)."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return env.get(match[1], match[0])

    return _REFERENCE.sub(replace, text)


# -- the pod's node ------------------------------------------------------------------------------


_PRCTL: Callable[..., int] | None
try:  # resolved here, so that the child after fork only calls it (no import, no lock)
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def _die_with_parent() -> None:
    """In a child process: receive SIGTERM when the runner dies (Linux PR_SET_PDEATHSIG)."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGTERM))


class DeathWatch:
    """Exit codes of the run's containers, from the engine's event stream.

    The stream is restarted if it ends, and every RECONCILE_SECONDS (and after each restart)
    the engine's list of exited containers fills in any death the stream did not report.
    """

    def __init__(self, engine: Engine, run_id: str) -> None:
        self.engine = engine
        self.run_id = run_id
        self.exits: dict[str, int] = {}
        self.changed = threading.Condition()
        self.process: subprocess.Popen[str] | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="engine events", daemon=True)
        self.reconciler = threading.Thread(
            target=self._reconcile_loop, name="engine exits", daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        self.reconciler.start()

    def stop(self) -> None:
        self.stopping.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self.thread.join(10)
        self.reconciler.join(10)

    def _watch(self) -> None:
        while not self.stopping.is_set():
            process = subprocess.Popen(
                [
                    self.engine.name,
                    "events",
                    "--format",
                    "json",
                    "--filter",
                    f"label={RUN_LABEL}={self.run_id}",
                    "--filter",
                    "event=died",
                ],
                env=self.engine.environ(),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                preexec_fn=_die_with_parent,
            )
            self.process = process
            assert process.stdout is not None
            with process.stdout:
                self.reconcile()  # what died before the stream began
                for line in process.stdout:
                    self._event(line)
            process.wait()
            self.stopping.wait(1.0)

    def _event(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        name = event.get("Name") or event.get("Actor", {}).get("Attributes", {}).get("name")
        code = event.get("ContainerExitCode")
        if name:
            # podman leaves ContainerExitCode out of the event when it is 0.
            self._record(str(name), int(code) if code is not None else 0)

    def _record(self, name: str, code: int) -> None:
        with self.changed:
            self.exits.setdefault(name, code)
            self.changed.notify_all()

    def reconcile(self) -> None:
        """The engine's exited containers of this run, recorded if the stream missed them."""
        done = self.engine.run(
            "ps", "--all", "--filter", f"label={RUN_LABEL}={self.run_id}",
            "--filter", "status=exited", "--format", "{{.Names}} {{.ExitCode}}",
            check=False, timeout=60,
        )  # fmt: skip
        for line in done.stdout.splitlines():
            name, _, code = line.strip().rpartition(" ")
            if name and code.lstrip("-").isdigit():
                self._record(name, int(code))

    def _reconcile_loop(self) -> None:
        while not self.stopping.wait(RECONCILE_SECONDS):
            with contextlib.suppress(EngineError):
                self.reconcile()

    def exit_code(self, container: str) -> int | None:
        with self.changed:
            return self.exits.get(container)

    def forget(self, container: str) -> None:
        with self.changed:
            self.exits.pop(container, None)


@dataclass
class Node:
    """What every pod worker shares: the engine, the network, the store and the folders."""

    engine: Engine
    run_id: str
    network: str
    namespace: str
    store: Store
    #: This run's own folder (pods' volumes, claims, logs): a new install starts empty.
    run_dir: Path
    #: The image of the pods' infrastructure containers (anything with ``sleep``).
    pause_image: str
    deaths: DeathWatch
    #: Extra environment every container gets (the Kubernetes API's address, as a cluster does).
    cluster_env: dict[str, str] = field(default_factory=dict)
    log: Callable[[str], None] = print
    images_checked: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ServiceAccount -> its token on the runner's API (what the kubelet would mount).
    service_account_tokens: dict[str, str] = field(default_factory=dict)
    #: The CA of the runner's API (ca.crt of a mounted ServiceAccount token).
    api_ca: Path | None = None
    #: Restarts after which a crash-looping container gives up the run (PodWorker.hopeless).
    give_up_restarts: int = GIVE_UP_RESTARTS

    def container_name(self, *parts: str) -> str:
        return "-".join(("pfr", self.run_id, *parts))

    def image_config(self, image: str) -> dict[str, Any] | None:
        """The image's config (user, entry point), or None when it is not in local storage."""
        if image not in self.images_checked:
            if not self.engine.image_exists(image):
                return None
            self.images_checked[image] = dict(self.engine.image_inspect(image).get("Config") or {})
        return self.images_checked[image]


# -- one container ---------------------------------------------------------------------------


@dataclass
class Probe:
    kind: str
    spec: dict[str, Any]
    next_due: float = 0.0
    successes: int = 0
    failures: int = 0
    #: The last failure, and how many in a row were answers no retry changes (HTTP 4xx).
    last_failure: str = ""
    definitive: int = 0

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold", 3))

    @property
    def success_threshold(self) -> int:
        return int(self.spec.get("successThreshold", 1))


@dataclass
class ContainerRun:
    """One container of the pod: its spec and what the kubelet knows of it."""

    spec: dict[str, Any]
    init: bool
    restart_count: int = 0
    #: The engine's container of the current instance.
    current: str | None = None
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    started_at: float = 0.0
    backoff: float = 0.0
    retry_at: float = 0.0
    probes: dict[str, Probe] = field(default_factory=dict)
    uid: int | None = None
    previous_log: Path | None = None
    #: Since when it waits on something only a change of the spec can fix (monotonic).
    stuck_since: float = 0.0
    #: It exited and will be started again (the next start counts as a restart).
    restart_pending: bool = False

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return "running" in self.state

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.spec["image"],
            "imageID": self.spec["image"],
            "ready": self.ready,
            "started": self.started if not self.init else None,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.current:
            status["containerID"] = f"podman://{self.current}"
        if self.uid is not None:
            status["user"] = {"linux": {"uid": self.uid, "gid": 0}}
        return {k: v for k, v in status.items() if v is not None}


# -- the pod ---------------------------------------------------------------------------------


class PodWorker(threading.Thread):
    """Runs one Pod from creation to its removal, keeping its status in the store."""

    def __init__(
        self, node: Node, pod: dict[str, Any], on_gone: Callable[[PodWorker], None]
    ) -> None:
        # The thread's name is the pod's: workers are known by it everywhere.
        super().__init__(name=str(pod["metadata"]["name"]), daemon=True)
        self.node = node
        self.pod = pod
        self.on_gone = on_gone
        spec = pod["spec"]
        self.restart_policy = spec.get("restartPolicy", "Always")
        self.grace = int(spec.get("terminationGracePeriodSeconds", 30))
        self.inits = [ContainerRun(c, True) for c in spec.get("initContainers") or []]
        self.containers = [ContainerRun(c, False) for c in spec["containers"]]
        self.deleting = threading.Event()
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.ip: str | None = None
        self.ports: dict[int, int] = {}
        self.infra: str | None = None
        self.initialized = False
        self.finished = threading.Event()
        self.volumes_dir = node.run_dir / "pods" / self.name
        self.logs_dir = node.run_dir / "logs" / self.name
        self.conditions: dict[str, dict[str, Any]] = {}
        self.ready_since = 0.0
        #: Since when its volumes cannot be written (a Secret or key missing), and why.
        self.stuck_since = 0.0
        self.mount_failure = ""
        self._set_condition("PodScheduled", True)
        self.publish()

    @property
    def store(self) -> Store:
        return self.node.store

    # -- status -----------------------------------------------------------------------------------

    def _set_condition(self, kind: str, value: bool, reason: str | None = None) -> None:
        old = self.conditions.get(kind)
        status = "True" if value else "False"
        if old is not None and old["status"] == status:
            return
        condition: dict[str, Any] = {
            "type": kind,
            "status": status,
            "lastTransitionTime": now_iso(),
        }
        if reason:
            condition["reason"] = reason
        self.conditions[kind] = condition

    def publish(self) -> None:
        """The pod's status, as the kubelet reports it to the API server."""
        ready = (
            self.phase == "Running"
            and not self.deleting.is_set()
            and all(c.ready for c in self.containers)
        )
        self._set_condition("Initialized", self.initialized)
        self._set_condition("ContainersReady", ready)
        self._set_condition("Ready", ready)
        if ready and not self.ready_since:
            self.ready_since = time.monotonic()
        elif not ready:
            self.ready_since = 0.0
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": list(self.conditions.values()),
            "hostIP": "127.0.0.1",
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.inits:
            status["initContainerStatuses"] = [c.status() for c in self.inits]
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        self.store.update_status("Pod", self.name, status)

    @property
    def ready(self) -> bool:
        return self.conditions.get("Ready", {}).get("status") == "True"

    def hopeless(self) -> str | None:
        """Why this pod will not become ready without a change of the release, or None.

        A cluster would keep trying; the runner, having created every object at install,
        knows nothing more will come: a container that cannot be created (a missing Secret
        key, image) for GIVE_UP_STUCK seconds, one that crashed GIVE_UP_RESTARTS times, a probe
        answered with an HTTP 4xx failureThreshold times in a row (its path is wrong: no wait
        changes that), or a container that runs but has not been ready for GIVE_UP_UNREADY
        seconds gives up the run.
        """
        now = time.monotonic()
        if self.reason in {"UnsupportedSpec", "RunnerError"}:
            return f"{self.reason}: {self.message}"
        if self.stuck_since and now - self.stuck_since > GIVE_UP_STUCK:
            return self.mount_failure
        for container in [*self.inits, *self.containers]:
            waiting = container.state.get("waiting") or {}
            if container.stuck_since and now - container.stuck_since > GIVE_UP_STUCK:
                return f"{container.name}: {waiting.get('reason')}: {waiting.get('message')}"
            if waiting.get("reason") == "ErrImageNeverPull":
                return f"{container.name}: {waiting.get('message')}"
            if container.restart_count >= self.node.give_up_restarts:
                return f"{container.name}: restarted {container.restart_count} times"
            for probe in container.probes.values():
                if probe.definitive >= probe.failure_threshold:
                    return f"{container.name}: {probe.last_failure}"
            if (
                not container.init
                and container.running
                and not container.ready
                and now - container.started_at > GIVE_UP_UNREADY
            ):
                unready = now - container.started_at
                return f"{container.name}: running but not ready for {unready:.0f} s"
        return None

    def ready_for(self) -> float:
        """Seconds since the pod became ready (0 when it is not)."""
        return time.monotonic() - self.ready_since if self.ready and self.ready_since else 0.0

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.store.event(self.pod, reason, message, warning=warning)

    # -- deletion ---------------------------------------------------------------------------------

    def delete(self, grace: int | None = None) -> None:
        """A graceful delete: preStop, then the stop signal, SIGKILL at the grace period's end."""
        if self.deleting.is_set():
            return
        if grace is not None:
            self.grace = grace
        with self.store.lock:
            self.pod["metadata"]["deletionTimestamp"] = now_iso()
            self.pod["metadata"]["deletionGracePeriodSeconds"] = self.grace
        self.deleting.set()
        self.publish()

    # -- the worker -------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._lifecycle()
        except SpecError as exc:
            self.phase, self.reason, self.message = "Failed", "UnsupportedSpec", str(exc)
            self.event("Failed", str(exc), warning=True)
            self.node.log(f"pod {self.name}: {exc}")
        except Exception as exc:  # a bug of the runner: say so on the pod, never hang
            self.phase, self.reason, self.message = "Failed", "RunnerError", repr(exc)
            self.event("Failed", f"the release runner failed on this pod: {exc!r}", warning=True)
            self.node.log(f"pod {self.name}: runner error {exc!r}")
        finally:
            self.publish()
            self.finished.set()
            self._terminate()
            self.on_gone(self)

    def _sleep(self, seconds: float) -> bool:
        """Wait; True when the pod is being deleted."""
        return self.deleting.wait(seconds)

    def _lifecycle(self) -> None:
        while not self._prepare():
            if self._sleep(2.0):
                return
        for container in self.inits:
            if not self._run_init(container):
                return
        self.initialized = True
        self.publish()
        for container in self.containers:
            self._start(container)
        self.phase = "Running"
        self.publish()
        last_volume_check = time.monotonic()
        while not self.deleting.is_set():
            now = time.monotonic()
            for container in self.containers:
                self._watch(container, now)
            if now - last_volume_check >= VOLUME_CHECK_SECONDS:
                last_volume_check = now
                if self._evicted():
                    return
            if self._finished():
                return
            self.publish()
            self._sleep(TICK)

    # -- preparing the sandbox --------------------------------------------------------------------

    def _prepare(self) -> bool:
        """Images present, volumes written, the sandbox up; False: retry later (events say why)."""
        for container in [*self.inits, *self.containers]:
            image = container.spec["image"]
            if self.node.image_config(image) is None:
                message = (
                    f"image {image} is not in local storage and the release runner never pulls: "
                    "build it (make images)"
                )
                container.state = {"waiting": {"reason": "ErrImageNeverPull", "message": message}}
                self.event("Failed", message, warning=True)
                self.publish()
                return False
        try:
            self._write_volumes()
        except ConfigError as exc:
            self.mount_failure = str(exc)
            self.stuck_since = self.stuck_since or time.monotonic()
            self.event("FailedMount", str(exc), warning=True)
            self.publish()
            return False
        self.stuck_since, self.mount_failure = 0.0, ""
        if self.infra is None:
            self._start_sandbox()
            self.event(
                "Scheduled",
                f"Successfully assigned {self.node.namespace}/{self.name} to the release runner",
            )
        return True

    def _fs_group(self) -> int | None:
        value = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        return None if value is None else int(value)

    def _automounts_token(self) -> bool:
        spec = self.pod["spec"]
        if "automountServiceAccountToken" in spec:
            return bool(spec["automountServiceAccountToken"])
        account = self.store.get("ServiceAccount", spec.get("serviceAccountName", "default")) or {}
        return bool(account.get("automountServiceAccountToken", True))

    def _write_token(self, group: int) -> None:
        """The ServiceAccount's token, the API's CA and the namespace, where a pod finds them."""
        account = self.pod["spec"].get("serviceAccountName", "default")
        token = self.node.service_account_tokens.get(account)
        if token is None:
            token = self.node.service_account_tokens.setdefault(account, os.urandom(24).hex())
        target = self.volumes_dir / TOKEN_VOLUME
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(0o755)
        files = {"token": token.encode(), "namespace": self.node.namespace.encode()}
        if self.node.api_ca is not None:
            files["ca.crt"] = self.node.api_ca.read_bytes()
        for name, content in files.items():
            path = target / name
            path.write_bytes(content)
            os.chown(path, 0, group)
            path.chmod(0o644)

    def _write_volumes(self) -> None:
        fs_group = self._fs_group()
        group = fs_group if fs_group is not None else 0
        if self._automounts_token():
            self._write_token(group)
        for volume in self.pod["spec"].get("volumes") or []:
            target = self.volumes_dir / volume["name"]
            if "emptyDir" in volume:
                target.mkdir(parents=True, exist_ok=True)
                os.chown(target, 0, group)
                target.chmod(0o2777 if fs_group is not None else 0o777)
            elif "persistentVolumeClaim" in volume:
                continue  # the claim's folder (StatefulSet controller)
            else:
                files = self._volume_files(volume)
                mode = self._volume_mode(volume)
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir(parents=True)
                target.chmod(0o755)
                for relative, (content, item_mode) in files.items():
                    path = target / relative
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(content)
                    os.chown(path, 0, group)
                    path.chmod(item_mode if item_mode is not None else mode)

    @staticmethod
    def _volume_mode(volume: dict[str, Any]) -> int:
        for kind in ("secret", "configMap", "projected"):
            if kind in volume and volume[kind].get("defaultMode") is not None:
                return int(volume[kind]["defaultMode"])
        return 0o644

    def _volume_files(self, volume: dict[str, Any]) -> dict[str, tuple[bytes, int | None]]:
        sources: list[tuple[str, dict[str, Any]]] = []
        if "secret" in volume:
            sources.append(("secret", {**volume["secret"], "name": volume["secret"]["secretName"]}))
        elif "configMap" in volume:
            sources.append(("configMap", volume["configMap"]))
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                kind = next(iter(source))
                sources.append((kind, source[kind]))
        else:
            raise SpecError(f"volume {volume['name']}: kind {sorted(volume)} not implemented")
        files: dict[str, tuple[bytes, int | None]] = {}
        for kind, source in sources:
            data = (
                self.store.secret_bytes(source["name"])
                if kind == "secret"
                else self.store.config_map_bytes(source["name"])
            )
            what = "secret" if kind == "secret" else "configmap"
            if data is None:
                if source.get("optional"):
                    continue
                raise ConfigError(
                    f'MountVolume.SetUp failed for volume "{volume["name"]}" : {what} '
                    f'"{source["name"]}" not found'
                )
            items = source.get("items")
            if items is None:
                files.update({key: (value, None) for key, value in data.items()})
                continue
            for item in items:
                if item["key"] not in data:
                    if source.get("optional"):
                        continue
                    missing = (
                        f"references non-existent secret key: {item['key']}"
                        if kind == "secret"
                        else f"configmap references non-existent config key: {item['key']}"
                    )
                    raise ConfigError(
                        f'MountVolume.SetUp failed for volume "{volume["name"]}" : {missing}'
                    )
                mode = item.get("mode")
                files[item["path"]] = (data[item["key"]], None if mode is None else int(mode))
        return files

    def _start_sandbox(self) -> None:
        """The pod's network namespace: an IP on the project network, ports on 127.0.0.1."""
        name = self.node.container_name(self.name)
        ports = sorted(
            {
                int(port["containerPort"])
                for c in [*self.inits, *self.containers]
                for port in c.spec.get("ports") or []
                if port.get("protocol", "TCP") == "TCP"
            }
            | self._probe_ports()
        )
        args = [
            *infrastructure_args(
                name,
                run_id=self.node.run_id,
                role=self.name,
                network=self.node.network,
                memory="32m",
            ),
            "--hostname",
            self.name,
            "--entrypoint",
            "sleep",
        ]
        for domain in self._search_domains():
            args += ["--dns-search", domain]
        for port in ports:
            args += ["--publish", f"127.0.0.1::{port}"]
        self.node.engine.run(*args, self.node.pause_image, "infinity", timeout=120)
        self.infra = name
        info = self.node.engine.json("inspect", name)[0]
        network = (info.get("NetworkSettings") or {}).get("Networks", {}).get(
            self.node.network
        ) or {}
        self.ip = network.get("IPAddress")
        for binding, hosts in ((info.get("NetworkSettings") or {}).get("Ports") or {}).items():
            port = int(binding.split("/")[0])
            for host in hosts or []:
                self.ports[port] = int(host["HostPort"])
        self.publish()

    def _search_domains(self) -> list[str]:
        namespace = self.node.namespace
        return [f"{namespace}.svc.{DNS_DOMAIN}", f"svc.{DNS_DOMAIN}", DNS_DOMAIN]

    def _probe_ports(self) -> set[int]:
        found = set()
        for container in self.containers:
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.spec.get(kind) or {}
                handler = probe.get("httpGet") or probe.get("tcpSocket")
                if handler and isinstance(handler.get("port"), int):
                    found.add(int(handler["port"]))
        return found

    # -- containers -------------------------------------------------------------------------------

    def _env(self, container: ContainerRun) -> dict[str, str]:
        env: dict[str, str] = dict(self.node.cluster_env)
        for entry in container.spec.get("env") or []:
            name = entry["name"]
            if "value" in entry:
                env[name] = expand(str(entry["value"]), env)
                continue
            source = entry.get("valueFrom") or {}
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                value = self.store.secret_value(ref["name"], ref["key"])
                if value is None:
                    if ref.get("optional"):
                        continue
                    secret = self.store.get("Secret", ref["name"])
                    raise ConfigError(
                        f'secret "{ref["name"]}" not found'
                        if secret is None
                        else f"couldn't find key {ref['key']} in Secret "
                        f"{self.node.namespace}/{ref['name']}"
                    )
                env[name] = value
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                data = self.store.config_map_bytes(ref["name"])
                if data is None or ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(
                        f'configmap "{ref["name"]}" not found'
                        if data is None
                        else f"couldn't find key {ref['key']} in ConfigMap "
                        f"{self.node.namespace}/{ref['name']}"
                    )
                env[name] = data[ref["key"]].decode()
            elif "fieldRef" in source:
                env[name] = self._field(source["fieldRef"]["fieldPath"])
            else:
                raise SpecError(f"env {name}: valueFrom {sorted(source)} not implemented")
        return env

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": self.node.namespace,
            "metadata.uid": meta.get("uid", ""),
            "spec.nodeName": "polyframe-release",
            "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", "default"),
            "status.hostIP": "127.0.0.1",
            "status.podIP": self.ip or "",
            "status.podIPs": self.ip or "",
        }
        assert set(simple) == kinds.FIELD_PATHS  # one list of what is implemented
        if path in simple:
            return str(simple[path])
        match = kinds.LABEL_FIELD.fullmatch(path)
        if match:
            return str((meta.get(match[1]) or {}).get(match[2], ""))
        raise SpecError(f"fieldRef {path} not implemented")

    def _user(self, container: ContainerRun) -> tuple[int | None, int | None]:
        pod_context = self.pod["spec"].get("securityContext") or {}
        context = container.spec.get("securityContext") or {}
        user = context.get("runAsUser", pod_context.get("runAsUser"))
        group = context.get("runAsGroup", pod_context.get("runAsGroup"))
        return (None if user is None else int(user)), (None if group is None else int(group))

    def _check_non_root(self, container: ContainerRun, user: int | None) -> int | None:
        """The uid the container runs as; ConfigError when runAsNonRoot forbids it (kubelet)."""
        pod_context = self.pod["spec"].get("securityContext") or {}
        context = container.spec.get("securityContext") or {}
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if non_root and user == 0:
            raise ConfigError(
                f"container's runAsUser breaks non-root policy (pod: "
                f'"{self.node.namespace}/{self.name}", container: {container.name})'
            )
        if user is None:
            image_user = str(
                (self.node.image_config(container.spec["image"]) or {}).get("User") or "0"
            )
            name = image_user.split(":")[0]
            if not name.isdigit():
                if non_root:
                    raise ConfigError(
                        f"container has runAsNonRoot and image has non-numeric user ({name}), "
                        "cannot verify user is non-root"
                    )
                return None
            user = int(name)
        if non_root and user == 0:
            raise ConfigError("container has runAsNonRoot and image will run as root")
        return user

    def _run_args(self, container: ContainerRun, instance: str, env: dict[str, str]) -> list[str]:
        spec = container.spec
        pod_spec = self.pod["spec"]
        context = spec.get("securityContext") or {}
        pod_context = pod_spec.get("securityContext") or {}
        assert self.infra is not None
        args = [
            "run",
            "--detach",
            "--name",
            instance,
            "--label",
            f"{RUN_LABEL}={self.node.run_id}",
            "--label",
            f"{POD_LABEL}={self.name}",
            "--network",
            f"container:{self.infra}",
            "--uts",
            f"container:{self.infra}",
            "--pull",
            "never",
            "--pids-limit",
            "-1",
            "--read-only-tmpfs=false",
            "--log-driver",
            "k8s-file",
        ]
        user, group = self._user(container)
        if user is not None:
            # No runAsGroup: the primary group is the image's for that user, as with containerd.
            args += ["--user", str(user) if group is None else f"{user}:{group}"]
        elif group is not None:
            raise SpecError(
                f"container {container.name}: runAsGroup without runAsUser not implemented"
            )
        fs_group = self._fs_group()
        if fs_group is not None:
            args += ["--group-add", str(fs_group)]
        if context.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if context.get("privileged"):
            raise SpecError(f"container {container.name}: privileged containers are not run")
        capabilities = context.get("capabilities") or {}
        for cap in capabilities.get("drop") or []:
            args += ["--cap-drop", str(cap)]
        for cap in capabilities.get("add") or []:
            args += ["--cap-add", str(cap)]
        if context.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get(
            "type"
        )
        if seccomp in (None, "Unconfined"):
            args += ["--security-opt", "seccomp=unconfined"]
        elif seccomp != "RuntimeDefault":
            raise SpecError(f"container {container.name}: seccompProfile {seccomp} not implemented")
        resources = spec.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        if "memory" in limits:
            memory = str(int(quantity(limits["memory"])))
            args += ["--memory", memory, "--memory-swap", memory]
        if "cpu" in limits:
            args += ["--cpus", f"{quantity(limits['cpu']):.3f}"]
        if "cpu" in requests:
            args += ["--cpu-shares", str(max(2, int(quantity(requests["cpu"]) * 1024)))]
        for mount in spec.get("volumeMounts") or []:
            source = self._mount_source(mount)
            options = f"type=bind,source={source},destination={mount['mountPath']}"
            if mount.get("readOnly") or self._read_only_volume(mount["name"]):
                options += ",ro=true"
            args += ["--mount", options]
        if self._automounts_token():
            token = self.volumes_dir / TOKEN_VOLUME
            args += ["--mount", f"type=bind,source={token},destination={TOKEN_PATH},ro=true"]
        if spec.get("workingDir"):
            args += ["--workdir", str(spec["workingDir"])]
        # The values go through a 0600 file (never the command line); the file is removed as
        # soon as the engine has read it (_start). A value on several lines cannot be written
        # there: it comes from the engine's environment by name (--env NAME).
        args += ["--env-file", str(self._env_file(instance))]
        for name, value in env.items():
            if "\n" in value:
                args += ["--env", name]
        command = [expand(str(part), env) for part in spec.get("command") or []]
        arguments = [expand(str(part), env) for part in spec.get("args") or []]
        if command:
            args += ["--entrypoint", json.dumps(command)]
        return [*args, spec["image"], *arguments]

    def _read_only_volume(self, name: str) -> bool:
        """Secret, ConfigMap and projected volumes the kubelet always mounts read-only; a
        claim when the pod says so."""
        volume = next(v for v in self.pod["spec"].get("volumes") or [] if v["name"] == name)
        claim = volume.get("persistentVolumeClaim") or {}
        return bool({"secret", "configMap", "projected"} & set(volume)) or bool(
            claim.get("readOnly")
        )

    def _env_file(self, instance: str) -> Path:
        return self.node.run_dir / "env" / f"{instance}.env"

    def _mount_source(self, mount: dict[str, Any]) -> Path:
        volumes: dict[str, dict[str, Any]] = {
            str(v["name"]): v for v in self.pod["spec"].get("volumes") or []
        }
        volume = volumes.get(mount["name"])
        if volume is None:
            raise SpecError(f"volumeMount {mount['name']}: no such volume in the pod")
        if "persistentVolumeClaim" in volume:
            base = self.node.run_dir / "claims" / str(volume["persistentVolumeClaim"]["claimName"])
            if not base.is_dir():
                raise ConfigError(f'persistentvolumeclaim "{base.name}" not found')
        else:
            base = self.volumes_dir / str(mount["name"])
        sub = mount.get("subPath")
        if sub:
            if sub.startswith("/") or ".." in Path(sub).parts:
                raise SpecError(f"volumeMount {mount['name']}: subPath {sub!r} escapes the volume")
            target = base / str(sub)
            if not target.exists():
                target.mkdir(parents=True)
                fs_group = self._fs_group()
                os.chown(target, 0, fs_group if fs_group is not None else 0)
                target.chmod(0o2777 if fs_group is not None else 0o777)
            return target
        return base

    def _start(self, container: ContainerRun) -> bool:
        """Create and start one instance of ``container``; False when it cannot yet."""
        container.retry_at = 0.0
        try:
            env = self._env(container)
            user, _group = self._user(container)
            container.uid = self._check_non_root(container, user)
        except ConfigError as exc:
            container.stuck_since = container.stuck_since or time.monotonic()
            container.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
            }
            self.event("Failed", f"Error: {exc}", warning=True)
            container.retry_at = time.monotonic() + 2.0
            self.publish()
            return False
        instance = self.node.container_name(self.name, container.name, str(container.restart_count))
        self.node.engine.run("rm", "--force", "--ignore", instance, check=False)
        self.node.deaths.forget(instance)
        args = self._run_args(container, instance, env)
        env_file = self._env_file(instance)
        multiline = {name: value for name, value in env.items() if "\n" in value}
        reserved = sorted(set(multiline) & ENGINE_VARIABLES)
        if reserved:
            raise SpecError(f"container {container.name}: {reserved} on several lines")
        env_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            for name, value in env.items():
                if name not in multiline:
                    handle.write(f"{name}={value}\n")
        try:
            done = subprocess.run(
                [self.node.engine.name, *args],
                env={**self.node.engine.environ(), **multiline},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            env_file.unlink(missing_ok=True)
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip()[-500:]
            container.state = {"waiting": {"reason": "RunContainerError", "message": message}}
            self.event("Failed", f"Error: {message}", warning=True)
            self._schedule_restart(container)
            self.publish()
            return False
        container.current = instance
        container.stuck_since = 0.0
        container.state = {"running": {"startedAt": now_iso()}}
        container.started_at = time.monotonic()
        container.ready = False
        container.started = not container.spec.get("startupProbe")
        container.probes = {}
        now = time.monotonic()
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.spec.get(kind)
            if probe:
                delay = float(probe.get("initialDelaySeconds", 0))
                container.probes[kind] = Probe(kind, probe, next_due=now + delay)
        if not container.init and "readinessProbe" not in container.probes:
            container.ready = container.started
        self.event("Started", f"Started container {container.name}")
        return True

    def _crash_loop_state(self, container: ContainerRun) -> dict[str, Any]:
        delay = max(0.0, container.retry_at - time.monotonic())
        return {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:.0f}s restarting failed container={container.name} "
                f"pod={self.name}",
            }
        }

    def _schedule_restart(self, container: ContainerRun) -> None:
        """The kubelet's back-off: the first restart at once, then 10 s doubled up to 5
        minutes; forgotten after 10 minutes of running."""
        ran = time.monotonic() - container.started_at if container.started_at else 0.0
        if ran >= BACKOFF_RESET:
            container.backoff = 0.0
        container.retry_at = time.monotonic() + container.backoff
        container.backoff = (
            BACKOFF_START if container.backoff == 0 else min(BACKOFF_MAX, container.backoff * 2)
        )

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
            import socket

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

    # -- the end ----------------------------------------------------------------------------------

    def _finished(self) -> bool:
        """Succeeded or Failed, as the kubelet sets the phase; True when nothing will restart."""
        if any(c.current is not None or c.retry_at for c in self.containers):
            return False
        codes = [int(c.state.get("terminated", {}).get("exitCode", 1)) for c in self.containers]
        self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        self.publish()
        return True

    def _evicted(self) -> bool:
        for volume in self.pod["spec"].get("volumes") or []:
            limit = (volume.get("emptyDir") or {}).get("sizeLimit")
            if limit is None:
                continue
            used = _folder_size(self.volumes_dir / volume["name"])
            if used > quantity(limit):
                self.phase, self.reason = "Failed", "Evicted"
                # As the kubelet marks the pods it evicts (a Job's podFailurePolicy reads it).
                self._set_condition("DisruptionTarget", True, "TerminationByKubelet")
                self.message = (
                    f'Usage of EmptyDir volume "{volume["name"]}" exceeds the limit "{limit}".'
                )
                self.event("Evicted", self.message, warning=True)
                return True
        return False

    def _terminate(self) -> None:
        """Stop every container (gracefully), then the sandbox; the pod leaves the store."""
        threads = [
            threading.Thread(target=self._kill, args=(c, self.grace), daemon=True)
            for c in [*self.inits, *self.containers]
            if c.current is not None
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.grace + 60)
        if self.infra is not None:
            self.node.engine.run(
                "rm", "--force", "--time", "0", "--ignore", self.infra, check=False
            )
        shutil.rmtree(self.volumes_dir, ignore_errors=True)

    # -- logs -------------------------------------------------------------------------------------

    def log(self, container: str | None, *, previous: bool, tail_lines: int | None) -> str:
        runs = {c.name: c for c in [*self.inits, *self.containers]}
        if container is None:
            if len(self.containers) != 1:
                raise LookupError(
                    f"a container name must be specified for pod {self.name}, choose one of: "
                    f"{[c.name for c in self.containers]}"
                )
            container = self.containers[0].name
        run = runs.get(container)
        if run is None:
            raise LookupError(f"container {container} is not valid for pod {self.name}")
        if previous:
            if run.previous_log is None or run.restart_count == 0:
                raise LookupError(
                    f'previous terminated container "{container}" in pod "{self.name}" not found'
                )
            text = run.previous_log.read_text(encoding="utf-8", errors="replace")
        elif run.current is not None:
            done = self.node.engine.run("logs", run.current, check=False, timeout=60)
            text = done.stdout + done.stderr
        elif run.previous_log is not None:
            text = run.previous_log.read_text(encoding="utf-8", errors="replace")
        else:
            raise LookupError(f'container "{container}" in pod "{self.name}" is waiting to start')
        if tail_lines is not None:
            text = "\n".join(text.splitlines()[-tail_lines:]) + "\n"
        return text


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total
