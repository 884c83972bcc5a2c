"""The controllers' part (polyframe_release.controllers, podcontrol, workloads, jobs):
Deployments, StatefulSets and Jobs keep their pods, PodDisruptionBudgets their status, Services
their endpoints. Pods are fake workers; creating one is recorded, never started."""

from __future__ import annotations

import copy
import os
import stat
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from polyframe_release import jobs, podcontrol
from polyframe_release.controllers import Controllers
from polyframe_release.podcontrol import scaled, selects, template_hash
from polyframe_release.render import Render
from polyframe_release.store import Store

WEB = "polyframe-users-fastapi"


class Recorder:
    """Controllers whose create_pod records the pod and adds a fake worker for it."""

    def __init__(self, store: Store, fake_worker: Any, state_dir: Path) -> None:
        self.fake_worker = fake_worker
        self.created: list[tuple[str, dict[str, str]]] = []
        self.controllers = Controllers(SimpleNamespace(run_dir=state_dir), store)  # type: ignore[arg-type]
        self.controllers.create_pod = self.create_pod  # type: ignore[method-assign]

    def create_pod(
        self,
        owner: dict[str, Any] | None,
        name: str,
        template: dict[str, Any],
        extra_labels: dict[str, str],
    ) -> Any:
        self.created.append((name, extra_labels))
        worker = self.fake_worker(
            name, _pod(owner, name, template, extra_labels), ready=False, ip=None, phase="Pending"
        )
        self.controllers.workers[name] = worker
        return worker

    def add(self, owner: dict[str, Any], name: str, extra: dict[str, str], **state: Any) -> Any:
        worker = self.fake_worker(
            name, _pod(owner, name, owner["spec"]["template"], extra), **state
        )
        self.controllers.workers[name] = worker
        return worker


def _pod(
    owner: dict[str, Any] | None, name: str, template: dict[str, Any], extra: dict[str, str]
) -> dict[str, Any]:
    labels = {**(template.get("metadata") or {}).get("labels", {}), **extra}
    refs = []
    if owner is not None:
        kind, owner_name = owner["kind"], owner["metadata"]["name"]
        if kind == "Deployment":
            kind, owner_name = "ReplicaSet", f"{owner_name}-{extra['pod-template-hash']}"
        refs = [{"kind": kind, "name": owner_name}]
    return {
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "ownerReferences": refs},
        "spec": copy.deepcopy(template["spec"]),
    }


@pytest.fixture
def recorder(fake_worker: Any, tmp_path: Path) -> Recorder:
    return Recorder(Store("polyframe"), fake_worker, tmp_path)


def _put(recorder: Recorder, kind_render: Render, kind: str, name: str) -> dict[str, Any]:
    obj = kind_render.get(kind, name)
    assert obj is not None
    return recorder.controllers.store.put(copy.deepcopy(obj))


def _conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in obj["status"]["conditions"]}


# -- helpers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "total", "up", "down"),
    [
        ("25%", 4, 1, 1),
        ("25%", 2, 1, 0),
        ("25%", 5, 2, 1),
        ("50%", 3, 2, 1),
        ("100%", 2, 2, 2),
        ("0%", 7, 0, 0),
        (1, 10, 1, 1),
        ("2", 10, 2, 2),
        (0, 3, 0, 0),
    ],
)
def test_scaled_rounds_as_the_controllers_do(value: Any, total: int, up: int, down: int) -> None:
    assert scaled(value, total, round_up=True) == up
    assert scaled(value, total, round_up=False) == down


@pytest.mark.parametrize(
    ("value", "total", "exact"), [("7%", 100, 7), ("14%", 50, 7), ("29%", 100, 29)]
)
def test_scaled_is_exact_for_whole_percentages(value: str, total: int, exact: int) -> None:
    assert (scaled(value, total, round_up=True), scaled(value, total, round_up=False)) == (
        exact,
        exact,
    )


def test_selects_match_labels_and_plain_maps() -> None:
    labels = {"app.kubernetes.io/name": "users-fastapi", "app.kubernetes.io/component": "web"}

    assert selects({"matchLabels": {"app.kubernetes.io/name": "users-fastapi"}}, labels)
    assert selects({"app.kubernetes.io/component": "web"}, labels)
    assert not selects({"app.kubernetes.io/component": "outbox"}, labels)
    assert not selects({"matchLabels": {"other": "x"}}, labels)
    # nothing selected by an absent or empty selector (a Service without a selector)
    assert not selects(None, labels)
    assert not selects({}, labels)


def test_template_hash_is_stable_and_follows_the_template(kind_render: Render) -> None:
    deployment = kind_render.get("Deployment", WEB)
    assert deployment is not None
    template = copy.deepcopy(deployment["spec"]["template"])
    reordered = dict(reversed(list(template.items())))

    first = template_hash(template)

    assert first == template_hash(copy.deepcopy(template)) == template_hash(reordered)
    assert len(first) == 10
    assert set(first) <= set("0123456789bcdf")
    template["spec"]["containers"][0]["image"] = "polyframe/users-fastapi:other"
    assert template_hash(template) != first


# -- PodDisruptionBudgets and endpoints ----------------------------------------------------------


def _web_workers(recorder: Recorder, kind_render: Render) -> dict[str, Any]:
    deployment = _put(recorder, kind_render, "Deployment", WEB)
    pod_hash = template_hash(deployment["spec"]["template"])
    extra = {"pod-template-hash": pod_hash}
    outbox = _put(recorder, kind_render, "Deployment", f"{WEB}-outbox")
    outbox_extra = {"pod-template-hash": template_hash(outbox["spec"]["template"])}
    return {
        "b-ready": recorder.add(deployment, f"{WEB}-{pod_hash}-bbbbb", extra, ip="10.89.3.12"),
        "a-ready": recorder.add(deployment, f"{WEB}-{pod_hash}-aaaaa", extra, ip="10.89.3.11"),
        "unready": recorder.add(deployment, f"{WEB}-{pod_hash}-ccccc", extra, ready=False),
        "deleting": recorder.add(deployment, f"{WEB}-{pod_hash}-ddddd", extra, ip="10.89.3.14"),
        "outbox": recorder.add(outbox, f"{WEB}-outbox-x-eeeee", outbox_extra, ip="10.89.3.15"),
    }


def test_budget_status_counts_ready_selected_pods_not_terminating(
    recorder: Recorder, kind_render: Render
) -> None:
    workers = _web_workers(recorder, kind_render)
    workers["deleting"].deleting.set()
    budget = _put(recorder, kind_render, "PodDisruptionBudget", WEB)  # maxUnavailable: 1

    recorder.controllers._budgets()

    status = budget["status"]
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 1,
        "expectedPods": 3,
        "currentHealthy": 2,
        "desiredHealthy": 2,
        "disruptionsAllowed": 0,
    }
    assert _conditions(budget) == {"DisruptionAllowed": ("False", "InsufficientPods")}

    workers["unready"].ready = True
    recorder.controllers._budgets()
    assert budget["status"]["disruptionsAllowed"] == 1
    assert _conditions(budget) == {"DisruptionAllowed": ("True", "SufficientPods")}


def test_budget_with_min_available_as_a_percentage(recorder: Recorder, kind_render: Render) -> None:
    _web_workers(recorder, kind_render)
    budget = recorder.controllers.store.put(
        {
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "half"},
            "spec": {
                "minAvailable": "50%",
                "selector": {"matchLabels": {"app.kubernetes.io/component": "web"}},
            },
        }
    )

    recorder.controllers._budgets()

    # four web pods: 50% rounds up to 2 desired; three are ready
    assert budget["status"]["expectedPods"] == 4
    assert budget["status"]["desiredHealthy"] == 2
    assert budget["status"]["currentHealthy"] == 3
    assert budget["status"]["disruptionsAllowed"] == 1


def test_endpoints_are_the_ready_not_terminating_selected_pods(
    recorder: Recorder, kind_render: Render
) -> None:
    workers = _web_workers(recorder, kind_render)
    workers["deleting"].deleting.set()
    _put(recorder, kind_render, "Service", WEB)
    _put(recorder, kind_render, "Service", f"{WEB}-outbox")
    recorder.controllers.store.put(
        {"kind": "Service", "metadata": {"name": "no-selector"}, "spec": {"ports": []}}
    )

    found = recorder.controllers.endpoints()

    assert [ip for ip, _spec in found[WEB]] == ["10.89.3.11", "10.89.3.12"]  # by pod name
    assert found[WEB][0][1] is workers["a-ready"].pod["spec"]
    assert [ip for ip, _ in found[f"{WEB}-outbox"]] == ["10.89.3.15"]
    assert found["no-selector"] == []


def test_endpoint_changes_are_reported_once(recorder: Recorder, kind_render: Render) -> None:
    workers = _web_workers(recorder, kind_render)
    _put(recorder, kind_render, "Service", WEB)
    reported: list[list[str]] = []
    recorder.controllers.on_endpoints = lambda found: reported.append([ip for ip, _ in found[WEB]])

    recorder.controllers._endpoints()
    recorder.controllers._endpoints()
    workers["b-ready"].deleting.set()
    recorder.controllers._endpoints()

    assert reported == [["10.89.3.11", "10.89.3.12", "10.89.3.14"], ["10.89.3.11", "10.89.3.14"]]


# -- Deployments ---------------------------------------------------------------------------------


def test_a_deployment_without_pods_creates_its_replicas(
    recorder: Recorder, kind_render: Render
) -> None:
    deployment = _put(recorder, kind_render, "Deployment", WEB)
    pod_hash = template_hash(deployment["spec"]["template"])

    recorder.controllers._deployment(deployment)

    assert len(recorder.created) == 2
    for name, extra in recorder.created:
        assert name.startswith(f"{WEB}-{pod_hash}-")
        assert len(name.rsplit("-", 1)[1]) == 5
        assert extra == {"pod-template-hash": pod_hash}
    assert recorder.controllers.pods_of("Deployment", WEB) == list(
        recorder.controllers.workers.values()
    )
    assert recorder.controllers.pods_of("Deployment", f"{WEB}-outbox") == []
    assert _conditions(deployment) == {
        "Available": ("False", "MinimumReplicasUnavailable"),
        "Progressing": ("True", "ReplicaSetUpdated"),
    }
    events = recorder.controllers.store.list("events")
    assert [e["reason"] for e in events] == ["ScalingReplicaSet"]
    assert events[0]["count"] == 2


def test_a_deployment_with_its_pods_ready_is_available(
    recorder: Recorder, kind_render: Render
) -> None:
    deployment = _put(recorder, kind_render, "Deployment", WEB)
    extra = {"pod-template-hash": template_hash(deployment["spec"]["template"])}
    recorder.add(deployment, f"{WEB}-h-aaaaa", extra)
    recorder.add(deployment, f"{WEB}-h-bbbbb", extra)

    recorder.controllers._deployment(deployment)

    assert recorder.created == []
    status = deployment["status"]
    assert (status["replicas"], status["readyReplicas"], status["availableReplicas"]) == (2, 2, 2)
    assert status["unavailableReplicas"] == 0
    assert _conditions(deployment) == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }


def test_availability_follows_max_unavailable_and_min_ready_seconds(
    recorder: Recorder, kind_render: Render
) -> None:
    deployment = _put(recorder, kind_render, "Deployment", WEB)
    extra = {"pod-template-hash": template_hash(deployment["spec"]["template"])}
    recorder.add(deployment, f"{WEB}-h-aaaaa", extra)
    slow = recorder.add(deployment, f"{WEB}-h-bbbbb", extra, ready=False)

    recorder.controllers._deployment(deployment)
    # the chart's maxUnavailable: 0 (two replicas): one ready pod is not enough
    assert _conditions(deployment)["Available"] == ("False", "MinimumReplicasUnavailable")

    deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = "50%"
    recorder.controllers._deployment(deployment)
    assert _conditions(deployment)["Available"] == ("True", "MinimumReplicasAvailable")
    assert deployment["status"]["unavailableReplicas"] == 1

    slow.ready = True
    slow.seconds_ready = 2.0
    deployment["spec"]["minReadySeconds"] = 5
    recorder.controllers._deployment(deployment)
    assert deployment["status"]["readyReplicas"] == 2
    assert deployment["status"]["availableReplicas"] == 1


def test_a_condition_keeps_its_transition_time_while_it_holds(
    recorder: Recorder, kind_render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = _put(recorder, kind_render, "Deployment", WEB)
    monkeypatch.setattr(podcontrol, "now_iso", lambda: "2025-01-01T00:00:00Z")
    recorder.controllers._deployment(deployment)
    version = deployment["metadata"]["resourceVersion"]

    monkeypatch.setattr(podcontrol, "now_iso", lambda: "2025-01-01T00:05:00Z")
    for worker in recorder.controllers.workers.values():
        worker.ip = None  # still not ready: nothing changes
    recorder.controllers._deployment(deployment)

    times = {c["type"]: c["lastTransitionTime"] for c in deployment["status"]["conditions"]}
    assert times == {"Available": "2025-01-01T00:00:00Z", "Progressing": "2025-01-01T00:00:00Z"}
    # replicas went 0 -> 2, so the status was written once more, with the old times
    assert deployment["metadata"]["resourceVersion"] != version


def test_a_failed_pod_is_deleted_and_replaced_and_extra_pods_go(
    recorder: Recorder, kind_render: Render
) -> None:
    deployment = _put(recorder, kind_render, "Deployment", WEB)
    extra = {"pod-template-hash": template_hash(deployment["spec"]["template"])}
    failed = recorder.add(deployment, f"{WEB}-h-aaaaa", extra, phase="Failed")
    kept = recorder.add(deployment, f"{WEB}-h-bbbbb", extra)

    recorder.controllers._deployment(deployment)

    assert failed.deleted_with == [0]
    assert len(recorder.created) == 1
    assert kept.deleted_with == []

    deployment["spec"]["replicas"] = 0
    recorder.controllers._deployment(deployment)
    assert kept.deleted_with == [None]  # gracefully


def test_a_deployment_that_does_not_progress_in_time_says_so(
    recorder: Recorder, kind_render: Render
) -> None:
    deployment = _put(recorder, kind_render, "Deployment", WEB)
    deployment["spec"]["progressDeadlineSeconds"] = 60
    recorder.controllers.started[WEB] = time.monotonic() - 61

    recorder.controllers._deployment(deployment)

    assert _conditions(deployment)["Progressing"] == ("False", "ProgressDeadlineExceeded")


def test_a_recreate_deployment_is_available_only_with_every_replica(
    recorder: Recorder, kind_render: Render
) -> None:
    deployment = _put(recorder, kind_render, "Deployment", WEB)
    deployment["spec"]["replicas"] = 4
    deployment["spec"]["strategy"] = {"type": "Recreate"}
    extra = {"pod-template-hash": template_hash(deployment["spec"]["template"])}
    for suffix in ("aaaaa", "bbbbb", "ccccc"):
        recorder.add(deployment, f"{WEB}-h-{suffix}", extra)
    recorder.add(deployment, f"{WEB}-h-ddddd", extra, ready=False)

    recorder.controllers._deployment(deployment)

    assert _conditions(deployment)["Available"] == ("False", "MinimumReplicasUnavailable")


# -- StatefulSets --------------------------------------------------------------------------------


def _stateful_set(replicas: int, claims: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "serviceName": "db",
        "selector": {"matchLabels": {"app": "db"}},
        "template": {
            "metadata": {"labels": {"app": "db"}},
            "spec": {
                "securityContext": {"fsGroup": 999},
                "containers": [{"name": "db", "image": "postgres:17.6-bookworm"}],
            },
        },
    }
    if claims:
        spec["volumeClaimTemplates"] = [
            {
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": spec,
    }


def test_a_stateful_set_creates_its_pods_one_after_the_other(recorder: Recorder) -> None:
    stateful = recorder.controllers.store.put(_stateful_set(2))

    recorder.controllers._stateful_set(stateful)
    recorder.controllers._stateful_set(stateful)  # db-0 not ready yet: nothing more

    assert recorder.created == [
        (
            "db-0",
            {"statefulset.kubernetes.io/pod-name": "db-0", "apps.kubernetes.io/pod-index": "0"},
        )
    ]
    recorder.controllers.workers["db-0"].ready = True
    recorder.controllers._stateful_set(stateful)
    assert [name for name, _ in recorder.created] == ["db-0", "db-1"]
    assert stateful["status"]["replicas"] == 2
    assert stateful["status"]["readyReplicas"] == 1


def test_a_deleted_stateful_pod_comes_back_under_its_name_once_gone(recorder: Recorder) -> None:
    stateful = recorder.controllers.store.put(_stateful_set(1))
    recorder.controllers._stateful_set(stateful)
    old = recorder.controllers.workers["db-0"]
    old.pod["metadata"]["ownerReferences"] = []  # terminating: no longer the set's

    recorder.controllers._stateful_set(stateful)
    assert [name for name, _ in recorder.created] == ["db-0"]

    del recorder.controllers.workers["db-0"]
    recorder.controllers._stateful_set(stateful)
    assert [name for name, _ in recorder.created] == ["db-0", "db-0"]


@pytest.mark.skipif(
    os.geteuid() != 0, reason="a claim's folder is owned by root with the fsGroup (os.chown)"
)
def test_a_stateful_pod_gets_its_claims(recorder: Recorder, tmp_path: Path) -> None:
    stateful = recorder.controllers.store.put(_stateful_set(1, claims=True))

    recorder.controllers._stateful_set(stateful)

    folder = tmp_path / "claims" / "data-db-0"
    assert folder.is_dir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o2777
    assert folder.stat().st_gid == 999
    claim = recorder.controllers.store.get("PersistentVolumeClaim", "data-db-0")
    assert claim is not None
    assert claim["status"]["phase"] == "Bound"
    pod = recorder.controllers.workers["db-0"].pod
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}} in pod["spec"][
        "volumes"
    ]


# -- Jobs ----------------------------------------------------------------------------------------


def _job(backoff_limit: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate"},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"labels": {"app": "migrate"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "migrate", "image": "polyframe/app:1"}],
                },
            },
        },
    }


def _finish(worker: Any, phase: str) -> None:
    worker.phase = phase
    worker.finished.set()


def test_a_job_runs_one_pod_and_completes_with_it(recorder: Recorder) -> None:
    job = recorder.controllers.store.put(_job())

    recorder.controllers._job(job)
    recorder.controllers._job(job)  # its pod is active: no second one

    assert len(recorder.created) == 1
    name, extra = recorder.created[0]
    assert name.startswith("migrate-")
    assert extra == {"job-name": "migrate", "batch.kubernetes.io/job-name": "migrate"}
    assert job["status"]["active"] == 1
    _finish(recorder.controllers.workers[name], "Succeeded")
    recorder.controllers._job(job)
    assert _conditions(job) == {"Complete": ("True", "Completed")}
    assert job["status"]["succeeded"] == 1


def test_a_failed_job_pod_is_replaced_after_the_back_off(recorder: Recorder) -> None:
    job = recorder.controllers.store.put(_job())
    recorder.controllers._job(job)
    _finish(recorder.controllers.workers[recorder.created[0][0]], "Failed")

    recorder.controllers._job(job)  # counts the failure: back-off starts
    recorder.controllers._job(job)

    assert len(recorder.created) == 1
    counted, not_before = recorder.controllers.job_backoff["migrate"]
    assert counted == 1
    assert not_before - time.monotonic() == pytest.approx(jobs.JOB_BACKOFF_START, abs=1)
    recorder.controllers.job_backoff["migrate"] = (1, time.monotonic() - 1)
    recorder.controllers._job(job)
    assert len(recorder.created) == 2


def test_a_job_fails_past_its_backoff_limit(recorder: Recorder) -> None:
    job = recorder.controllers.store.put(_job(backoff_limit=0))
    recorder.controllers._job(job)
    _finish(recorder.controllers.workers[recorder.created[0][0]], "Failed")

    recorder.controllers._job(job)

    assert _conditions(job) == {"Failed": ("True", "BackoffLimitExceeded")}
    recorder.controllers._job(job)  # a finished Job does nothing more
    assert len(recorder.created) == 1


def test_a_job_fails_past_its_active_deadline(recorder: Recorder) -> None:
    job = recorder.controllers.store.put(_job())
    job["spec"]["activeDeadlineSeconds"] = 30
    recorder.controllers._job(job)
    active = recorder.controllers.workers[recorder.created[0][0]]
    recorder.controllers.started["job/migrate"] = time.monotonic() - 31

    recorder.controllers._job(job)

    assert _conditions(job) == {"Failed": ("True", "DeadlineExceeded")}
    assert active.deleted_with == [0]


def _failed_with(worker: Any, code: int) -> None:
    worker.containers = [
        SimpleNamespace(name="migrate", state={"terminated": {"exitCode": code}}, restart_count=0)
    ]
    _finish(worker, "Failed")


def test_a_pod_failure_policy_rule_can_fail_the_job_at_once(recorder: Recorder) -> None:
    job = recorder.controllers.store.put(_job(backoff_limit=6))
    job["spec"]["podFailurePolicy"] = {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
        ]
    }
    recorder.controllers._job(job)
    _failed_with(recorder.controllers.workers[recorder.created[0][0]], 42)

    recorder.controllers._job(job)

    assert _conditions(job) == {"Failed": ("True", "PodFailurePolicy")}


def test_a_failure_the_policy_ignores_does_not_count_against_the_limit(
    recorder: Recorder,
) -> None:
    job = recorder.controllers.store.put(_job(backoff_limit=0))
    job["spec"]["podFailurePolicy"] = {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }
    recorder.controllers._job(job)
    evicted = recorder.controllers.workers[recorder.created[0][0]]
    _failed_with(evicted, 137)
    evicted.conditions = {"DisruptionTarget": {"type": "DisruptionTarget", "status": "True"}}

    recorder.controllers._job(job)

    assert "conditions" not in job["status"]
    assert job["status"]["failed"] == 1


@pytest.mark.parametrize(
    ("operator", "values", "code", "action"),
    [
        ("In", [1, 2], 2, "FailJob"),
        ("In", [1, 2], 3, "Count"),
        ("NotIn", [1, 2], 3, "FailJob"),
        ("NotIn", [1, 2], 1, "Count"),
        ("In", [1], 0, "Count"),  # a container that exited 0 matches no rule
    ],
)
def test_pod_failure_action_by_exit_code(
    fake_worker: Any, operator: str, values: list[int], code: int, action: str
) -> None:
    worker = fake_worker("p", {"metadata": {}, "spec": {}})
    _failed_with(worker, code)
    policy = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "migrate", "operator": operator, "values": values},
            }
        ]
    }

    assert jobs.pod_failure_action(policy, worker) == action
    assert jobs.pod_failure_action(None, worker) == "Count"


@pytest.mark.parametrize(
    ("expressions", "selected"),
    [
        ([{"key": "tier", "operator": "In", "values": ["web", "api"]}], True),
        ([{"key": "tier", "operator": "In", "values": ["db"]}], False),
        ([{"key": "tier", "operator": "NotIn", "values": ["db"]}], True),
        ([{"key": "tier", "operator": "NotIn", "values": ["web"]}], False),
        ([{"key": "tier", "operator": "Exists"}], True),
        ([{"key": "zone", "operator": "Exists"}], False),
        ([{"key": "zone", "operator": "DoesNotExist"}], True),
        ([{"key": "zone", "operator": "NotIn", "values": ["a"]}], True),  # absent: not in
    ],
)
def test_selects_match_expressions_as_the_api_server(
    expressions: list[dict[str, Any]], selected: bool
) -> None:
    labels = {"app": "polyframe", "tier": "web"}
    selector = {"matchLabels": {"app": "polyframe"}, "matchExpressions": expressions}

    assert selects(selector, labels) is selected
    assert (
        selects({"matchLabels": {"app": "other"}, "matchExpressions": expressions}, labels) is False
    )
