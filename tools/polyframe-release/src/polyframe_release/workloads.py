"""The Deployment and StatefulSet controllers: a Deployment keeps ``replicas`` pods of its
template (one ReplicaSet), replaced at once, with its Available and Progressing conditions; a
StatefulSet starts ``<name>-0…`` in order, each with its claims, kept across restarts.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

from polyframe_release.podcontrol import (
    PodControl,
    allowed_unavailable,
    make_condition,
    name_suffix,
    template_hash,
)


class WorkloadControl(PodControl):
    """Deployments and StatefulSets, each reconciled to its spec."""

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
            pod_name = f"{name}-{pod_hash}-{name_suffix()}"
            self.create_pod(deployment, pod_name, spec["template"], {"pod-template-hash": pod_hash})
            self.store.event(
                deployment, "ScalingReplicaSet", f"Scaled up replica set {name}-{pod_hash}"
            )
        for worker in live[want:]:
            worker.delete()
        ready = [p for p in live if p.ready]
        min_ready = float(spec.get("minReadySeconds", 0))
        available = [p for p in ready if p.ready_for() >= min_ready]
        max_unavailable = allowed_unavailable(spec, want)
        conditions = [
            make_condition(
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
            progressing = make_condition(
                "Progressing",
                True,
                "NewReplicaSetAvailable",
                f'ReplicaSet "{name}-{pod_hash}" has successfully progressed.',
            )
        elif time.monotonic() - self.started[name] > deadline:
            progressing = make_condition(
                "Progressing",
                False,
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{name}-{pod_hash}" has timed out progressing.',
            )
        else:
            progressing = make_condition(
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
