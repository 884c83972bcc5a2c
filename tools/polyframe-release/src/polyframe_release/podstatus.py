"""A pod worker's status as the kubelet reports it: conditions, phase, events, when the runner
gives the pod up, and the start of a graceful delete.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from polyframe_release.node import Node
from polyframe_release.podspec import GIVE_UP_STUCK, GIVE_UP_UNREADY, ContainerRun
from polyframe_release.store import Store, now_iso

if TYPE_CHECKING:
    from polyframe_release.pods import PodWorker


class PodStatus(threading.Thread):
    """One Pod's state and its status in the store (the base of :class:`PodWorker`)."""

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

    def _sleep(self, seconds: float) -> bool:
        """Wait; True when the pod is being deleted."""
        return self.deleting.wait(seconds)
