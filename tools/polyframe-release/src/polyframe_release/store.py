"""The release's objects as a cluster's API would hold them, with their live status.

The runner's controllers and pod workers write here; the runner's Kubernetes API
(:mod:`polyframe_release.kubeapi`) and its own waiting read from here. Objects are kept in
their Kubernetes JSON shape (metadata/spec/status), so what the API serves is what ran.
"""

from __future__ import annotations

import base64
import copy
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

#: resource (plural, as the API names it) -> kind
RESOURCES = {
    "pods": "Pod",
    "events": "Event",
    "deployments": "Deployment",
    "replicasets": "ReplicaSet",
    "statefulsets": "StatefulSet",
    "jobs": "Job",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "services": "Service",
    "endpoints": "Endpoints",
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "serviceaccounts": "ServiceAccount",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "ingresses": "Ingress",
    "networkpolicies": "NetworkPolicy",
    "roles": "Role",
    "rolebindings": "RoleBinding",
}
KINDS = {kind: resource for resource, kind in RESOURCES.items()}
#: Events kept (the API server keeps about an hour's; a run is shorter).
MAX_EVENTS = 2000


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """Thread-safe objects by kind and name, in one namespace."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.lock = threading.RLock()
        self._objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self._version = 0
        self._events: list[dict[str, Any]] = []
        #: Called for a graceful pod delete: (pod name, grace period or None).
        self.on_delete_pod: Callable[[str, int | None], None] | None = None
        #: Called for a pod's log: (pod, container, previous, tail lines) -> text.
        self.on_log: Callable[[str, str | None, bool, int | None], str] | None = None

    # -- objects ----------------------------------------------------------------------------------

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace ``obj`` (metadata filled in as the API server would)."""
        with self.lock:
            kind = obj["kind"]
            meta = obj.setdefault("metadata", {})
            meta.setdefault("namespace", self.namespace)
            existing = self._objects[kind].get(meta["name"])
            meta.setdefault(
                "uid", (existing or {}).get("metadata", {}).get("uid") or str(uuid.uuid4())
            )
            meta.setdefault(
                "creationTimestamp",
                (existing or {}).get("metadata", {}).get("creationTimestamp") or now_iso(),
            )
            meta.setdefault("generation", 1)
            meta["resourceVersion"] = self._next_version()
            self._objects[kind][meta["name"]] = obj
            return obj

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            return self._objects[kind].get(name)

    def all(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self._objects[kind].values())

    def remove(self, kind: str, name: str) -> None:
        with self.lock:
            self._objects[kind].pop(name, None)

    def update_status(self, kind: str, name: str, status: dict[str, Any]) -> None:
        with self.lock:
            obj = self._objects[kind].get(name)
            if obj is not None:
                obj["status"] = status
                obj["metadata"]["resourceVersion"] = self._next_version()

    def secret_value(self, name: str, key: str) -> str | None:
        """A Secret's value (decoded), or None when the Secret or the key is missing."""
        secret = self.get("Secret", name)
        if secret is None:
            return None
        if key in (secret.get("stringData") or {}):
            return str(secret["stringData"][key])
        encoded = (secret.get("data") or {}).get(key)
        return None if encoded is None else base64.b64decode(encoded).decode()

    def secret_bytes(self, name: str) -> dict[str, bytes] | None:
        secret = self.get("Secret", name)
        if secret is None:
            return None
        values = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        values.update({k: str(v).encode() for k, v in (secret.get("stringData") or {}).items()})
        return values

    def config_map_bytes(self, name: str) -> dict[str, bytes] | None:
        config = self.get("ConfigMap", name)
        if config is None:
            return None
        return {k: str(v).encode() for k, v in (config.get("data") or {}).items()}

    # -- events -----------------------------------------------------------------------------------

    def event(
        self, obj: dict[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        """Record an event about ``obj``, counted like the API server's (same reason+message)."""
        with self.lock:
            meta = obj["metadata"]
            moment = now_iso()
            for existing in reversed(self._events[-200:]):
                involved = existing["involvedObject"]
                if (
                    involved["name"] == meta["name"]
                    and involved["kind"] == obj["kind"]
                    and existing["reason"] == reason
                    and existing["message"] == message
                ):
                    existing["count"] += 1
                    existing["lastTimestamp"] = moment
                    existing["metadata"]["resourceVersion"] = self._next_version()
                    return
            self._events.append(
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {
                        "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                        "namespace": self.namespace,
                        "uid": str(uuid.uuid4()),
                        "creationTimestamp": moment,
                        "resourceVersion": self._next_version(),
                    },
                    "involvedObject": {
                        "apiVersion": obj.get("apiVersion", "v1"),
                        "kind": obj["kind"],
                        "name": meta["name"],
                        "namespace": self.namespace,
                        "uid": meta.get("uid"),
                    },
                    "reason": reason,
                    "message": message,
                    "type": "Warning" if warning else "Normal",
                    "count": 1,
                    "firstTimestamp": moment,
                    "lastTimestamp": moment,
                    "source": {"component": "polyframe-release"},
                    "reportingComponent": "polyframe-release",
                }
            )
            del self._events[:-MAX_EVENTS]

    # -- the API's view (kubeapi.server.ObjectSource) --------------------------------------------

    def list(self, resource: str) -> list[dict[str, Any]]:
        with self.lock:
            if resource == "events":
                return copy.deepcopy(self._events)
            kind = RESOURCES.get(resource)
            return [] if kind is None else copy.deepcopy(list(self._objects[kind].values()))

    def delete(
        self, resource: str, name: str, grace_period_seconds: int | None
    ) -> dict[str, Any] | None:
        if resource != "pods":
            return None
        with self.lock:
            pod = self._objects["Pod"].get(name)
            if pod is None:
                return None
            if self.on_delete_pod is not None and "deletionTimestamp" not in pod["metadata"]:
                self.on_delete_pod(name, grace_period_seconds)
            return copy.deepcopy(pod)

    def log(
        self, pod: str, container: str | None, *, previous: bool, tail_lines: int | None
    ) -> str:
        if self.on_log is None:
            raise LookupError("logs are not available")
        return self.on_log(pod, container, previous, tail_lines)
