"""The controllers' part, as the kube-controller-manager does it: Deployments, StatefulSets and
Jobs keep their pods (workloads, jobs), Services their endpoints (a Service's ready, not
terminating pods: what kube-proxy and Traefik route to), PodDisruptionBudgets their status.
"""

from __future__ import annotations

import json
from typing import Any

from polyframe_release.jobs import JobControl
from polyframe_release.podcontrol import make_condition, scaled, selects
from polyframe_release.workloads import WorkloadControl


class Controllers(WorkloadControl, JobControl):
    """Every workload of the release, reconciled on each :meth:`tick`."""

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
                desired = scaled(spec["minAvailable"], expected, round_up=True)
            else:
                desired = expected - scaled(spec.get("maxUnavailable", 1), expected, round_up=True)
            self._status(
                budget,
                {
                    "observedGeneration": budget["metadata"].get("generation", 1),
                    "expectedPods": expected,
                    "currentHealthy": healthy,
                    "desiredHealthy": max(0, desired),
                    "disruptionsAllowed": max(0, healthy - max(0, desired)),
                    "conditions": [
                        make_condition(
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
