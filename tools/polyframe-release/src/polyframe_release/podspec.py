"""What the kubelet reads of a pod spec: quantities, ``$(VAR)`` expansion, a container's state
and probes, the labels and arguments of the runner's own containers, and the kubelet's limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
