"""The controllers' part: Deployments, StatefulSets and Jobs keep their pods, Services their
endpoints, PodDisruptionBudgets their status — as the kube-controller-manager does.

- Deployment: ``replicas`` pods of its template (one ReplicaSet, ``pod-template-hash``), a pod
  that is deleted, fails or is evicted is replaced at once; status and the Available and
  Progressing conditions (``ProgressDeadlineExceeded`` after ``progressDeadlineSeconds``).
- StatefulSet: pods ``<name>-0…`` one after the other (OrderedReady), each with its claims of
  ``volumeClaimTemplates`` (kept across pod restarts); a deleted pod comes back under the same
  name once the old one is gone.
- Job: one pod at a time; a failed pod is replaced after the controller's back-off (10 s
  doubled) until ``backoffLimit`` failures; ``activeDeadlineSeconds``; Complete or Failed.
- Endpoints: a Service's ready, not terminating pods (what kube-proxy and Traefik route to).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from polyframe_release.node import Node
from polyframe_release.pods import PodWorker
from polyframe_release.store import Store, now_iso

JOB_BACKOFF_START = 10.0
JOB_BACKOFF_MAX = 360.0


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


def _suffix(length: int = 5) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet
    return "".join(random.choice(alphabet) for _ in range(length))


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return "".join(c for c in digest if c in "0123456789bcdf")[:10]


@dataclass
class Controllers:
    """Every workload of the release, reconciled on each :meth:`tick`."""

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

    # -- reconciling ------------------------------------------------------------------------------

    def tick(self) -> None:
        for deployment in self.store.all("Deployment"):
            self._deployment(deployment)
        for stateful in self.store.all("StatefulSet"):
            self._stateful_set(stateful)
        for job in self.store.all("Job"):
            self._job(job)
        self._budgets()
        self._endpoints()

    def _deployment(self, deployment: dict[str, Any]) -> None:
        name = deployment["metadata"]["name"]
        spec = deployment["spec"]
        want = int(spec.get("replicas", 1))
        pod_hash = template_hash(spec["template"])
        self.started.setdefault(name, time.monotonic())
        pods = self.pods_of("Deployment", name)
        live = [
            p for p in pods if not p.deleting.is_set() and p.phase not in {"Failed", "Succeeded"}
        ]
        for worker in pods:
            if worker.phase in {"Failed", "Succeeded"} and not worker.deleting.is_set():
                worker.delete(0)
        for _ in range(want - len(live)):
            pod_name = f"{name}-{pod_hash}-{_suffix()}"
            self.create_pod(deployment, pod_name, spec["template"], {"pod-template-hash": pod_hash})
            self.store.event(
                deployment, "ScalingReplicaSet", f"Scaled up replica set {name}-{pod_hash}"
            )
        for worker in live[want:]:
            worker.delete()
        ready = [p for p in live if p.ready]
        min_ready = float(spec.get("minReadySeconds", 0))
        available = [p for p in ready if p.ready_for() >= min_ready]
        max_unavailable = _max_unavailable(spec, want)
        conditions = [
            _condition(
                "Available",
                len(available) >= want - max_unavailable,
                "MinimumReplicasAvailable"
                if len(available) >= want - max_unavailable
                else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if len(available) >= want - max_unavailable
                else "Deployment does not have minimum availability.",
            )
        ]
        deadline = float(spec.get("progressDeadlineSeconds", 600))
        if len(available) >= want:
            progressing = _condition(
                "Progressing",
                True,
                "NewReplicaSetAvailable",
                f'ReplicaSet "{name}-{pod_hash}" has successfully progressed.',
            )
        elif time.monotonic() - self.started[name] > deadline:
            progressing = _condition(
                "Progressing",
                False,
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{name}-{pod_hash}" has timed out progressing.',
            )
        else:
            progressing = _condition(
                "Progressing",
                True,
                "ReplicaSetUpdated",
                f'ReplicaSet "{name}-{pod_hash}" is progressing.',
            )
        conditions.append(progressing)
        self._status(
            deployment,
            {
                "observedGeneration": deployment["metadata"].get("generation", 1),
                "replicas": len(live),
                "updatedReplicas": len(live),
                "readyReplicas": len(ready),
                "availableReplicas": len(available),
                "unavailableReplicas": max(0, want - len(available)),
                "conditions": conditions,
            },
        )

    def _stateful_set(self, stateful: dict[str, Any]) -> None:
        name = stateful["metadata"]["name"]
        spec = stateful["spec"]
        want = int(spec.get("replicas", 1))
        pods = {p.name: p for p in self.pods_of("StatefulSet", name)}
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        for ordinal in range(want):
            pod_name = f"{name}-{ordinal}"
            worker = pods.get(pod_name)
            if worker is None:
                if pod_name in self.workers:
                    break  # the old pod is still terminating: same name comes back after
                self._claims(stateful, ordinal)
                template = copy.deepcopy(spec["template"])
                volumes = template["spec"].setdefault("volumes", [])
                for claim in spec.get("volumeClaimTemplates") or []:
                    claim_name = claim["metadata"]["name"]
                    volumes.append(
                        {
                            "name": claim_name,
                            "persistentVolumeClaim": {"claimName": f"{claim_name}-{pod_name}"},
                        }
                    )
                self.create_pod(
                    stateful,
                    pod_name,
                    template,
                    {
                        "statefulset.kubernetes.io/pod-name": pod_name,
                        "apps.kubernetes.io/pod-index": str(ordinal),
                    },
                )
                self.store.event(
                    stateful,
                    "SuccessfulCreate",
                    f"create Pod {pod_name} in StatefulSet {name} successful",
                )
                if ordered:
                    break
            elif worker.phase in {"Failed", "Succeeded"} and not worker.deleting.is_set():
                worker.delete(0)
                break
            elif ordered and not worker.ready:
                break
        live = [p for p in self.pods_of("StatefulSet", name) if not p.deleting.is_set()]
        ready = [p for p in live if p.ready]
        self._status(
            stateful,
            {
                "observedGeneration": stateful["metadata"].get("generation", 1),
                "replicas": len(live),
                "readyReplicas": len(ready),
                "availableReplicas": len(ready),
                "currentReplicas": len(live),
                "updatedReplicas": len(live),
            },
        )

    def _claims(self, stateful: dict[str, Any], ordinal: int) -> None:
        """The claims of one StatefulSet pod: a folder each, kept while the release lives."""
        name = stateful["metadata"]["name"]
        fs_group = (stateful["spec"]["template"]["spec"].get("securityContext") or {}).get(
            "fsGroup"
        )
        for claim in stateful["spec"].get("volumeClaimTemplates") or []:
            claim_name = f"{claim['metadata']['name']}-{name}-{ordinal}"
            folder = self.node.run_dir / "claims" / claim_name
            if not folder.is_dir():
                folder.mkdir(parents=True)
                os.chown(folder, 0, int(fs_group) if fs_group is not None else 0)
                folder.chmod(0o2777 if fs_group is not None else 0o777)
            if self.store.get("PersistentVolumeClaim", claim_name) is None:
                self.store.put(
                    {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "metadata": {
                            "name": claim_name,
                            "labels": dict(claim["metadata"].get("labels") or {}),
                        },
                        "spec": copy.deepcopy(claim["spec"]),
                        "status": {
                            "phase": "Bound",
                            "accessModes": claim["spec"].get("accessModes"),
                        },
                    }
                )

    def _job(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        spec = job["spec"]
        status = dict(job.get("status") or {})
        if any(c["status"] == "True" for c in status.get("conditions", [])):
            return  # Complete or Failed: nothing more happens
        pods = self.pods_of("Job", name)
        status.setdefault("startTime", now_iso())
        self.started.setdefault(f"job/{name}", time.monotonic())
        succeeded = [p for p in pods if p.phase == "Succeeded" and p.finished.is_set()]
        failed = [p for p in pods if p.phase == "Failed" and p.finished.is_set()]
        active = [p for p in pods if not p.finished.is_set()]
        restarts = sum(c.restart_count for p in active for c in [*p.inits, *p.containers])
        backoff_limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        actions = [pod_failure_action(spec.get("podFailurePolicy"), p) for p in failed]
        counted = sum(1 for action in actions if action == "Count")
        status.update({"active": len(active), "succeeded": len(succeeded), "failed": len(failed)})
        if "FailJob" in actions:
            status["conditions"] = [
                _condition(
                    "Failed",
                    True,
                    "PodFailurePolicy",
                    "a pod failed as the Job's podFailurePolicy says is fatal (action FailJob)",
                )
            ]
            self.store.event(
                job, "PodFailurePolicy", "Job failed by its podFailurePolicy", warning=True
            )
            for worker in active:
                worker.delete(0)
        elif succeeded:
            status["completionTime"] = now_iso()
            status["conditions"] = [_condition("Complete", True, "Completed", "Job completed")]
            self.store.event(job, "Completed", "Job completed")
        elif counted + restarts > backoff_limit:
            status["conditions"] = [
                _condition(
                    "Failed",
                    True,
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                )
            ]
            self.store.event(
                job,
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                warning=True,
            )
            for worker in active:
                worker.delete(0)
        elif deadline is not None and time.monotonic() - self.started[f"job/{name}"] > float(
            deadline
        ):
            status["conditions"] = [
                _condition(
                    "Failed",
                    True,
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                )
            ]
            self.store.event(
                job,
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
                warning=True,
            )
            for worker in active:
                worker.delete(0)
        elif not active:
            counted, not_before = self.job_backoff.get(name, (0, 0.0))
            if len(failed) > counted:
                delay = min(JOB_BACKOFF_MAX, JOB_BACKOFF_START * 2 ** (len(failed) - 1))
                self.job_backoff[name] = (len(failed), time.monotonic() + delay)
            elif time.monotonic() >= not_before:
                pod_name = f"{name}-{_suffix()}"
                self.create_pod(
                    job,
                    pod_name,
                    spec["template"],
                    {"job-name": name, "batch.kubernetes.io/job-name": name},
                )
                self.store.event(job, "SuccessfulCreate", f"Created pod: {pod_name}")
                status["active"] = 1
        self._status(job, status)

    def _budgets(self) -> None:
        """A PodDisruptionBudget's status, as the disruption controller computes it."""
        for budget in self.store.all("PodDisruptionBudget"):
            spec = budget["spec"]
            selected = [
                w
                for w in list(self.workers.values())
                if selects(spec.get("selector"), w.pod["metadata"].get("labels") or {})
                and not w.deleting.is_set()
            ]
            expected = len(selected)
            healthy = sum(1 for w in selected if w.ready)
            if "minAvailable" in spec:
                desired = _scaled(spec["minAvailable"], expected, round_up=True)
            else:
                desired = expected - _scaled(spec.get("maxUnavailable", 1), expected, round_up=True)
            self._status(
                budget,
                {
                    "observedGeneration": budget["metadata"].get("generation", 1),
                    "expectedPods": expected,
                    "currentHealthy": healthy,
                    "desiredHealthy": max(0, desired),
                    "disruptionsAllowed": max(0, healthy - max(0, desired)),
                    "conditions": [
                        _condition(
                            "DisruptionAllowed",
                            healthy - max(0, desired) > 0,
                            "SufficientPods"
                            if healthy - max(0, desired) > 0
                            else "InsufficientPods",
                            "",
                        )
                    ],
                },
            )

    def endpoints(self) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        """Service name -> its ready, not terminating pods: (pod IP, pod spec)."""
        found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for service in self.store.all("Service"):
            selector = service["spec"].get("selector")
            found[service["metadata"]["name"]] = [
                (w.ip, w.pod["spec"])
                for w in sorted(self.workers.values(), key=lambda w: w.name)
                if w.ip
                and w.ready
                and not w.deleting.is_set()
                and selects(selector, w.pod["metadata"].get("labels") or {})
            ]
        return found

    def _endpoints(self) -> None:
        current = self.endpoints()
        fingerprint = json.dumps(
            {k: [ip for ip, _ in v] for k, v in current.items()}, sort_keys=True
        )
        if fingerprint != self._last_endpoints:
            self._last_endpoints = fingerprint
            if self.on_endpoints is not None:
                self.on_endpoints(current)

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


def pod_failure_action(policy: dict[str, Any] | None, worker: PodWorker) -> str:
    """What a Job's podFailurePolicy does with a failed pod: the first matching rule's action
    (FailJob, Ignore, Count), Count when none matches (the Job controller's rules)."""
    conditions = {c["type"]: c["status"] for c in worker.conditions.values()}
    for rule in (policy or {}).get("rules") or []:
        on_codes = rule.get("onExitCodes")
        if on_codes is not None:
            codes = [
                int(c.state.get("terminated", {}).get("exitCode", 0))
                for c in worker.containers
                if on_codes.get("containerName") in (None, c.name) and "terminated" in c.state
            ]
            values = {int(v) for v in on_codes.get("values") or []}
            inside = [code in values for code in codes if code != 0]
            if (on_codes["operator"] == "In" and any(inside)) or (
                on_codes["operator"] == "NotIn" and any(not hit for hit in inside)
            ):
                return str(rule["action"])
        for wanted in rule.get("onPodConditions") or []:
            if conditions.get(wanted["type"]) == wanted.get("status", "True"):
                return str(rule["action"])
    return "Count"


def _condition(kind: str, value: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if value else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now_iso(),
        "lastUpdateTime": now_iso(),
    }


def _max_unavailable(spec: dict[str, Any], replicas: int) -> int:
    """A Deployment's maxUnavailable as its controller resolves it: 0 unless RollingUpdate;
    25% (rounded down) by default; 1 when surge and unavailable both come to 0."""
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0
    rolling = strategy.get("rollingUpdate") or {}
    unavailable = _scaled(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    surge = _scaled(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    return 1 if unavailable == 0 and surge == 0 else unavailable


def _scaled(value: Any, total: int, *, round_up: bool) -> int:
    """An int-or-percent (``25%``) of ``total``, as the controllers round it."""
    text = str(value)
    if text.endswith("%"):
        share = int(text[:-1]) * total  # hundredths, in integers: 7% of 100 is 7
        return -(-share // 100) if round_up else share // 100
    return int(text)
