"""What every controller shares: the pods it creates, deletes and finds by owner, status
writes that keep a condition's times while it holds, selectors and scaled values.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from polyframe_release.node import Node
from polyframe_release.pods import PodWorker
from polyframe_release.store import Store, now_iso


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A label selector (``matchLabels`` and ``matchExpressions``, or a Service's plain map)
    against ``labels``; an empty one selects nothing here (no object of ours means "all")."""
    if not selector:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        return all(labels.get(k) == v for k, v in selector.items())
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = set(expression.get("values") or [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def name_suffix(length: int = 5) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet
    return "".join(random.choice(alphabet) for _ in range(length))


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return "".join(c for c in digest if c in "0123456789bcdf")[:10]


@dataclass
class PodControl:
    """The pods of the release's workloads, by name (the base of the controllers)."""

    node: Node
    store: Store
    #: pod name -> its worker
    workers: dict[str, PodWorker] = field(default_factory=dict)
    #: Job name -> (failures counted, time the next pod may start)
    job_backoff: dict[str, tuple[int, float]] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    on_endpoints: Callable[[dict[str, list[tuple[str, dict[str, Any]]]]], None] | None = None
    _last_endpoints: str = ""

    @property
    def store_lock(self) -> Any:
        return self.store.lock

    # -- pods -------------------------------------------------------------------------------------

    def create_pod(
        self,
        owner: dict[str, Any] | None,
        name: str,
        template: dict[str, Any],
        extra_labels: dict[str, str],
    ) -> PodWorker:
        meta = copy.deepcopy(template.get("metadata") or {})
        labels = {**(meta.get("labels") or {}), **extra_labels}
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": meta.get("annotations") or {},
            },
            "spec": copy.deepcopy(template["spec"]),
        }
        if owner is not None:
            kind, owner_name = owner["kind"], owner["metadata"]["name"]
            uid = owner["metadata"].get("uid")
            if kind == "Deployment":
                kind, owner_name = "ReplicaSet", f"{owner_name}-{extra_labels['pod-template-hash']}"
                uid = f"rs-{owner_name}"
            pod["metadata"]["ownerReferences"] = [
                {
                    "apiVersion": "batch/v1" if kind == "Job" else "apps/v1",
                    "kind": kind,
                    "name": owner_name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        self.store.put(pod)
        worker = PodWorker(self.node, pod, self._gone)
        self.workers[name] = worker
        worker.start()
        return worker

    def _gone(self, worker: PodWorker) -> None:
        """A pod worker ended: its pod leaves the store (a finished Job pod stays)."""
        owner = (worker.pod["metadata"].get("ownerReferences") or [{}])[0].get("kind")
        keep = (
            worker.phase in {"Succeeded", "Failed"}
            and owner == "Job"
            and not worker.deleting.is_set()
        )
        keep = keep or (owner is None and not worker.deleting.is_set())
        if not keep:
            self.store.remove("Pod", worker.name)
            self.workers.pop(worker.name, None)

    def delete_pod(self, name: str, grace: int | None = None) -> None:
        worker = self.workers.get(name)
        if worker is None:
            return
        if worker.finished.is_set() and not worker.is_alive():
            # A finished pod that was kept (a Job's, a test's): nothing runs, it just goes.
            self.store.remove("Pod", name)
            self.workers.pop(name, None)
            return
        worker.delete(grace)

    def pods_of(self, owner_kind: str, owner_name: str) -> list[PodWorker]:
        found = []
        for worker in list(self.workers.values()):
            refs = worker.pod["metadata"].get("ownerReferences") or []
            if not refs:
                continue
            ref = refs[0]
            if owner_kind == "Deployment" and ref["kind"] == "ReplicaSet":
                if ref["name"].rsplit("-", 1)[0] == owner_name:
                    found.append(worker)
            elif ref["kind"] == owner_kind and ref["name"] == owner_name:
                found.append(worker)
        return found

    def _status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        """Write ``status`` when it changed; a condition keeps its times while it holds."""
        old = obj.get("status") or {}
        previous = {c["type"]: c for c in old.get("conditions") or []}
        for condition in status.get("conditions") or []:
            before = previous.get(condition["type"])
            if before is not None and before["status"] == condition["status"]:
                condition["lastTransitionTime"] = before.get("lastTransitionTime")
                if before.get("reason") == condition.get("reason"):
                    condition["lastUpdateTime"] = before.get("lastUpdateTime")
        if old != status:
            self.store.update_status(obj["kind"], obj["metadata"]["name"], status)


def make_condition(kind: str, value: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if value else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now_iso(),
        "lastUpdateTime": now_iso(),
    }


def allowed_unavailable(spec: dict[str, Any], replicas: int) -> int:
    """A Deployment's maxUnavailable as its controller resolves it: 0 unless RollingUpdate;
    25% (rounded down) by default; 1 when surge and unavailable both come to 0."""
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0
    rolling = strategy.get("rollingUpdate") or {}
    unavailable = scaled(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    surge = scaled(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    return 1 if unavailable == 0 and surge == 0 else unavailable


def scaled(value: Any, total: int, *, round_up: bool) -> int:
    """An int-or-percent (``25%``) of ``total``, as the controllers round it."""
    text = str(value)
    if text.endswith("%"):
        share = int(text[:-1]) * total  # hundredths, in integers: 7% of 100 is 7
        return -(-share // 100) if round_up else share // 100
    return int(text)
