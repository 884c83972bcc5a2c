"""The cluster plugin (polyframe_e2e_cluster) through the real ``kubernetes`` client.

No cluster exists here. The release runner's Kubernetes API (``polyframe_release.kubeapi``, a
real HTTP server on 127.0.0.1, started by these tests) stands in for a cluster's API server:
it serves objects in the shapes a real API server returns (kube_api_shapes/, see its README),
filters lists by label selector and refuses (403, as RBAC does) every request the e2e runner's
Role does not grant. The plugin runs unchanged, configured with the server's host or with a
kubeconfig naming it: rollout waiting (ready, progressing then ready, stuck), the live checks,
diagnostics collection, and the skip reasons outside a cluster. Nothing here starts the local
platform.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from polyframe_e2e_cluster.cluster import Cluster, connect
from polyframe_e2e_cluster.describe import ClusterNotReadyError
from polyframe_e2e_cluster.diagnostics import collect_diagnostics
from polyframe_e2e_cluster.settings import RBAC_RULES, cluster_settings, outside_cluster_reason
from polyframe_release.kubeapi.rbac import Rule, User
from polyframe_release.kubeapi.server import KubeAPIServer, Response
from polyframe_testing.documents import merged
from polyframe_testing.kubeshapes import load_shape

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
SHAPES = HERE / "kube_api_shapes"
NAMESPACE = "polyframe"
RELEASE = "polyframe"
SERVICES = ("users-fastapi", "legacy-flask", "admin-django")
#: The e2e runner's token (the kubeconfig's and the client's) and the user it authenticates.
TOKEN = "fake-token"
E2E_USER = f"system:serviceaccount:{NAMESPACE}:polyframe-e2e"
#: The resources the fake cluster holds objects of.
RESOURCES = ("pods", "events", "deployments", "jobs", "poddisruptionbudgets")
#: What the Pods' containers printed (the fake's "kubelet").
WEB_LOG = '{"level": "INFO", "message": "request", "route": "/readyz", "status": 200}\n'
CRASH_LOG = (
    '{"level": "CRITICAL", "message": "settings: ORDERS_SERVICE_SECRET_FILE: cannot read '
    '/etc/polyframe/secrets/service-secret"}\n'
)

RBACRules = tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]


# -- the fake API: the release runner's, over objects held here ------------------------------------


class FakeKubernetesAPI(KubeAPIServer):
    """A stand-in for a cluster's API server, for the tests of the cluster plugin.

    The release runner's API server, its own object source: it serves ``objects`` (by resource)
    in namespace ``polyframe``; ``logs[(pod, container, previous)]`` as the kubelet would; runs
    ``steps[resource]`` (one per read of that resource) to change state between polls; grants
    the e2e runner's token what ``rules`` (RBAC_RULES' shape: group, resources, verbs) grant.
    """

    namespace = NAMESPACE

    def __init__(self, rules: RBACRules) -> None:
        super().__init__(self, tokens={})
        self.objects: dict[str, list[dict[str, Any]]] = {r: [] for r in RESOURCES}
        self.logs: dict[tuple[str, str, bool], str] = {}
        self.steps: dict[str, list[Callable[[FakeKubernetesAPI], None]]] = {}
        #: Called with each deleted object (a ReplicaSet would make a replacement).
        self.on_delete: list[Callable[[FakeKubernetesAPI, dict[str, Any]], None]] = []
        #: (method, path, query, Authorization header) of every request.
        self.requests: list[tuple[str, str, dict[str, list[str]], str | None]] = []
        self.lock = threading.RLock()
        self.rules = rules

    @property
    def rules(self) -> RBACRules:
        return self._rules

    @rules.setter
    def rules(self, rules: RBACRules) -> None:
        self._rules = rules
        granted = tuple(Rule((group,), resources, verbs) for group, resources, verbs in rules)
        self.tokens[TOKEN] = User(E2E_USER, granted)

    def answer(
        self, method: str, target: str, authorization: str | None, accept: str, body: bytes
    ) -> Response:
        url = urlsplit(target)
        self.requests.append((method, url.path, parse_qs(url.query), authorization))
        return super().answer(method, target, authorization, accept, body)

    def add(self, resource: str, *objects: dict[str, Any]) -> None:
        with self.lock:
            self.objects[resource].extend(copy.deepcopy(list(objects)))

    def replace(self, resource: str, name: str, obj: dict[str, Any]) -> None:
        with self.lock:
            items = self.objects[resource]
            index = next(i for i, o in enumerate(items) if o["metadata"]["name"] == name)
            items[index] = copy.deepcopy(obj)

    def count(self, method: str, resource: str) -> int:
        return sum(
            1 for m, path, _q, _a in self.requests if m == method and path.endswith(f"/{resource}")
        )

    # -- the object source (polyframe_release.kubeapi.server.ObjectSource) --------------------

    def list(self, resource: str) -> list[dict[str, Any]]:
        with self.lock:
            steps = self.steps.get(resource) or []
            if steps:
                steps.pop(0)(self)
            return copy.deepcopy(self.objects.get(resource, []))

    def delete(
        self, resource: str, name: str, grace_period_seconds: int | None
    ) -> dict[str, Any] | None:
        with self.lock:
            items = self.objects.get(resource, [])
            found = next((o for o in items if o["metadata"]["name"] == name), None)
            if found is not None:
                items.remove(found)
                for callback in self.on_delete:
                    callback(self, found)
            return copy.deepcopy(found)

    def log(
        self, pod: str, container: str | None, *, previous: bool, tail_lines: int | None
    ) -> str:
        text = self.logs.get((pod, container or "", previous))
        if text is None:
            what = "previous terminated container" if previous else "container"
            raise LookupError(f'{what} "{container or ""}" in pod "{pod}" not found')
        lines = text.splitlines(keepends=True)
        return "".join(lines[-tail_lines:] if tail_lines else lines)


# -- recorded shapes, per service --------------------------------------------------------------


def shape(name: str) -> dict[str, Any]:
    return load_shape(SHAPES, name)


def as_service(obj: dict[str, Any], service: str, pod_suffix: str | None = None) -> dict[str, Any]:
    """A recorded users-fastapi object as the same object of ``service`` (and another pod)."""
    text = json.dumps(obj)
    text = text.replace("users-fastapi", service).replace(
        "users_fastapi", service.replace("-", "_")
    )
    if pod_suffix is not None:
        text = text.replace("-x7k2p", f"-{pod_suffix}")
    result: dict[str, Any] = json.loads(text)
    return result


def web_pod_name(service: str, suffix: str = "x7k2p") -> str:
    return f"polyframe-{service}-5d8c7b9f4-{suffix}"


def healthy_release(fake: FakeKubernetesAPI) -> None:
    """The release as `make kind-up` leaves it: three services, two ready web Pods each, their
    PodDisruptionBudgets, completed migrations, `helm test` Pods that succeeded."""
    for service in SERVICES:
        fake.add("deployments", as_service(shape("deployment-rolled-out"), service))
        for suffix in ("x7k2p", "m3n4b"):
            fake.add("pods", as_service(shape("pod-ready"), service, suffix))
            fake.logs[(web_pod_name(service, suffix), "web", False)] = WEB_LOG
        fake.add("poddisruptionbudgets", as_service(shape("poddisruptionbudget"), service))
        fake.add("jobs", as_service(shape("job-migrate-complete"), service))
        migrate = as_service(shape("pod-migrate-completed"), service)
        fake.add("pods", migrate, as_service(shape("pod-helm-test-succeeded"), service))
        for container in ("wait-for-database", "migrate"):
            fake.logs[(migrate["metadata"]["name"], container, False)] = "migrated\n"
        fake.logs[(f"polyframe-{service}-test-readiness", "readiness", False)] = "ready\n"


def _one_pod_stuck(fake: FakeKubernetesAPI, service: str, state: str) -> str:
    """One web Pod of ``service`` in ``state`` (a recorded status and its events), its
    Deployment 1 of 2 available."""
    name = web_pod_name(service)
    fake.replace(
        "pods",
        name,
        merged(
            as_service(shape("pod-ready"), service),
            as_service(shape(f"pod-{state}.status"), service),
        ),
    )
    deployment = as_service(shape("deployment-rolled-out"), service)
    deployment["status"].update(availableReplicas=1, readyReplicas=1, unavailableReplicas=1)
    fake.replace("deployments", f"polyframe-{service}", deployment)
    fake.add("events", *as_service(shape(f"events-{state}"), service)["items"])
    return name


def crash_looping(fake: FakeKubernetesAPI, service: str = "legacy-flask") -> str:
    """One web Pod of ``service`` in CrashLoopBackOff (its Deployment 1 of 2 available)."""
    name = _one_pod_stuck(fake, service, "crashloopbackoff")
    fake.logs[(name, "web", False)] = CRASH_LOG
    fake.logs[(name, "web", True)] = CRASH_LOG
    return name


def image_pull_failing(fake: FakeKubernetesAPI, service: str = "admin-django") -> str:
    return _one_pod_stuck(fake, service, "imagepullbackoff")


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def fake_api() -> Iterator[FakeKubernetesAPI]:
    fake = FakeKubernetesAPI(RBAC_RULES)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def kube(fake_api: FakeKubernetesAPI) -> Iterator[Any]:
    """The plugin's Cluster, through ``kubernetes.client`` configured with the fake's host and
    the e2e runner's token."""
    from kubernetes import client

    configuration = client.Configuration(
        host=fake_api.url,
        api_key={"authorization": TOKEN},
        api_key_prefix={"authorization": "Bearer"},
    )
    cluster = Cluster(client.ApiClient(configuration), NAMESPACE, RELEASE)
    try:
        yield cluster
    finally:
        cluster.close()


def write_kubeconfig(path: Path, server: str, *, namespace: str = NAMESPACE) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "e2e", "user": {"token": TOKEN}}],
                "contexts": [
                    {
                        "name": "kind-fake",
                        "context": {"cluster": "fake", "user": "e2e", "namespace": namespace},
                    },
                    {"name": "elsewhere", "context": {"cluster": "fake", "user": "e2e"}},
                ],
                "current-context": "elsewhere",
            }
        )
    )
    return path


def no_sleep(_seconds: float) -> None:
    time.sleep(0.01)


# -- settings and skip reasons ----------------------------------------------------------------


def test_no_cluster_mode_without_a_kube_context() -> None:
    assert cluster_settings({}) is None
    assert cluster_settings({"E2E_BASE_URL": "http://localhost:8080"}) is None
    local = outside_cluster_reason({})
    assert "local platform" in local
    assert "E2E_BASE_URL" in local
    assert "E2E_KUBE_CONTEXT" in local
    remote = outside_cluster_reason({"E2E_BASE_URL": "http://localhost:8080"})
    assert "E2E_BASE_URL is set but E2E_KUBE_CONTEXT is not" in remote


def test_cluster_settings_from_the_environment() -> None:
    settings = cluster_settings({
        "E2E_BASE_URL": "http://localhost:8080/", "E2E_KUBE_CONTEXT": "kind-polyframe",
        "E2E_KUBE_NAMESPACE": "shop", "E2E_HELM_RELEASE": "pf", "E2E_ROLLOUT_TIMEOUT": "90",
        "E2E_DIAGNOSTICS_DIR": "out/diag", "KUBECONFIG": "/k/a:/k/b",
    })  # fmt: skip
    assert settings.base_url == "http://localhost:8080"
    assert (settings.context, settings.namespace, settings.release) == (
        "kind-polyframe",
        "shop",
        "pf",
    )
    assert settings.rollout_timeout == 90
    assert settings.diagnostics_dir == Path("out/diag")
    assert settings.kubeconfig == "/k/a:/k/b"
    defaults = cluster_settings({"E2E_BASE_URL": "http://x", "E2E_KUBE_CONTEXT": "in-cluster"})
    assert (defaults.namespace, defaults.release, defaults.rollout_timeout) == (
        None,
        "polyframe",
        300,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"E2E_KUBE_CONTEXT": "kind-polyframe"}, "E2E_BASE_URL is not set"),
        (
            {"E2E_BASE_URL": "http://x", "E2E_KUBE_CONTEXT": "k", "E2E_ROLLOUT_TIMEOUT": "soon"},
            "E2E_ROLLOUT_TIMEOUT='soon'",
        ),
        (
            {"E2E_BASE_URL": "http://x", "E2E_KUBE_CONTEXT": "k", "E2E_ROLLOUT_TIMEOUT": "0"},
            "E2E_ROLLOUT_TIMEOUT='0'",
        ),
    ],
)
def test_a_contradictory_environment_is_refused_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        cluster_settings(env)


# -- waiting for the rollout --------------------------------------------------------------------


def test_a_rolled_out_release_is_ready_at_the_first_look(
    fake_api: FakeKubernetesAPI, kube: Any
) -> None:
    healthy_release(fake_api)
    waited = kube.wait_until_ready(30, interval=0.05)
    assert waited < 5
    assert fake_api.count("GET", "deployments") == 1
    # Only the release's objects were asked for, by its instance label.
    lists = [q for m, p, q, _a in fake_api.requests if p.endswith(("/deployments", "/pods"))]
    assert all(q["labelSelector"] == ["app.kubernetes.io/instance=polyframe"] for q in lists)


def test_a_progressing_rollout_is_waited_for_until_ready(
    fake_api: FakeKubernetesAPI, kube: Any
) -> None:
    """A new revision of legacy-flask rolls out over three polls: one new Pod, not ready yet,
    beside the two old ones; then the new ReplicaSet complete."""
    healthy_release(fake_api)
    rolled_out = as_service(shape("deployment-rolled-out"), "legacy-flask")
    rolling = merged(rolled_out, as_service(shape("deployment-rolling.status"), "legacy-flask"))
    starting = as_service(shape("pod-ready"), "legacy-flask", "n3w01")
    starting["status"]["conditions"][2].update(status="False", reason="ContainersNotReady")
    starting["status"]["containerStatuses"][0].update(ready=False)
    fake_api.replace("deployments", "polyframe-legacy-flask", rolling)
    fake_api.add("pods", starting)

    def finished(fake: FakeKubernetesAPI) -> None:
        done = merged(
            rolled_out, {"metadata": {"generation": 2}, "status": {"observedGeneration": 2}}
        )
        fake.objects["deployments"] = [
            done if d["metadata"]["name"] == "polyframe-legacy-flask" else d
            for d in fake.objects["deployments"]
        ]
        for pod in fake.objects["pods"]:
            if pod["metadata"]["name"].endswith("-n3w01"):
                pod["status"]["conditions"][2].update(status="True", reason=None)

    fake_api.steps["deployments"] = [lambda fake: None, lambda fake: None, finished]
    looks = []
    original = kube.rollout

    def watched() -> Any:
        looks.append(original())
        return looks[-1]

    kube.rollout = watched
    kube.wait_until_ready(30, interval=0.01)
    assert [look.ready for look in looks] == [False, False, True]
    first = "\n".join(p.text for p in looks[0].problems)
    assert "Deployment polyframe-legacy-flask: 1 of 2 replicas updated" in first
    assert "ReplicaSetUpdated" in first
    assert "Pod polyframe-legacy-flask-5d8c7b9f4-n3w01: Running, not ready" in first


def test_a_crash_loop_fails_naming_the_pod_the_reason_and_the_events(
    fake_api: FakeKubernetesAPI, kube: Any
) -> None:
    healthy_release(fake_api)
    pod = crash_looping(fake_api)
    started = time.monotonic()
    with pytest.raises(ClusterNotReadyError) as stuck:
        kube.wait_until_ready(0.5, interval=0.05)
    assert time.monotonic() - started < 10
    message = str(stuck.value)
    assert message.startswith("release polyframe in namespace polyframe is not ready after")
    assert "Deployment polyframe-legacy-flask: 1 of 2 updated replicas available" in message
    assert f"Pod {pod}: Running, not ready (ContainersNotReady)" in message
    assert "container web: waiting CrashLoopBackOff (back-off 1m20s restarting failed" in message
    assert "4 restarts, last: Error, exit code 1" in message
    assert "event: Warning BackOff x12" in message
    assert "Back-off restarting failed container web" in message
    assert "Startup probe failed" in message
    # Only the broken objects are named: the healthy services are not.
    assert "users-fastapi" not in message
    assert "admin-django" not in message


def test_an_image_that_cannot_be_pulled_fails_naming_the_pod_image_and_registry_answer(
    fake_api: FakeKubernetesAPI, kube: Any
) -> None:
    healthy_release(fake_api)
    pod = image_pull_failing(fake_api)
    with pytest.raises(ClusterNotReadyError) as stuck:
        kube.wait_until_ready(0.3, interval=0.05)
    message = str(stuck.value)
    assert f"Pod {pod}: Pending, not ready" in message
    assert "container web: waiting ImagePullBackOff" in message
    assert "image polyframe/admin-django:1a2b3c4" in message
    assert "pull access denied" in message
    assert "event: Warning Failed x4" in message


def test_a_deployment_past_its_progress_deadline_fails_at_once(
    fake_api: FakeKubernetesAPI, kube: Any
) -> None:
    """Kubernetes gave up (a quota refuses the Pods): no point waiting out the timeout; the
    ReplicaSet's events say why."""
    healthy_release(fake_api)
    stuck_deployment = merged(
        as_service(shape("deployment-rolled-out"), "users-fastapi"),
        shape("deployment-deadline-exceeded.status"),
    )
    del stuck_deployment["status"]["availableReplicas"]
    del stuck_deployment["status"]["readyReplicas"]
    fake_api.replace("deployments", "polyframe-users-fastapi", stuck_deployment)
    fake_api.add("events", *shape("events-failedcreate")["items"])
    started = time.monotonic()
    with pytest.raises(ClusterNotReadyError) as stuck:
        kube.wait_until_ready(120, interval=0.05)
    assert time.monotonic() - started < 10
    message = str(stuck.value)
    assert "Deployment polyframe-users-fastapi: stuck, Kubernetes gave up" in message
    assert "ProgressDeadlineExceeded" in message
    assert "has timed out progressing" in message
    assert "event: Warning FailedCreate x9" in message
    assert "exceeded quota: polyframe-quota" in message


def test_no_deployment_of_the_release_says_so(fake_api: FakeKubernetesAPI, kube: Any) -> None:
    with pytest.raises(ClusterNotReadyError) as stuck:
        kube.wait_until_ready(0.2, interval=0.05)
    assert "no Deployment labelled app.kubernetes.io/instance=polyframe" in str(stuck.value)
    assert "helm status polyframe -n polyframe" in str(stuck.value)


def test_a_refusal_of_the_api_is_said_at_once_with_the_access_needed(
    fake_api: FakeKubernetesAPI, kube: Any
) -> None:
    healthy_release(fake_api)
    fake_api.rules = tuple(r for r in fake_api.rules if r[0] != "apps")  # no Deployments
    started = time.monotonic()
    with pytest.raises(ClusterNotReadyError) as refused:
        kube.wait_until_ready(120, interval=0.05)
    assert time.monotonic() - started < 10
    message = str(refused.value)
    assert "403 Forbidden" in message
    assert 'cannot list resource "deployments" in API group "apps"' in message
    assert "get/list/watch on deployments (apps)" in message


# -- the live checks ------------------------------------------------------------------------------


def test_the_live_checks_pass_on_a_healthy_release(fake_api: FakeKubernetesAPI, kube: Any) -> None:
    healthy_release(fake_api)
    assert kube.unfinished_jobs() == []
    assert sorted(kube.migration_jobs()) == sorted(SERVICES)
    assert kube.services() == sorted(SERVICES)
    assert kube.pods_not_restricted() == []
    tests = kube.helm_test_pods()
    assert sorted(p.metadata.labels["app.kubernetes.io/name"] for p in tests) == sorted(SERVICES)
    assert {p.status.phase for p in tests} == {"Succeeded"}
    for service in SERVICES:
        assert kube.pod_loss_skip_reason(service) is None


def test_a_failed_migration_is_named_with_its_reason(
    fake_api: FakeKubernetesAPI, kube: Any
) -> None:
    healthy_release(fake_api)
    failed = merged(
        as_service(shape("job-migrate-complete"), "admin-django"),
        shape("job-migrate-failed.status"),
    )
    del failed["status"]["succeeded"]
    del failed["status"]["completionTime"]
    failed["status"]["conditions"] = shape("job-migrate-failed.status")["status"]["conditions"]
    fake_api.replace("jobs", "polyframe-admin-django-migrate-1", failed)
    assert kube.unfinished_jobs() == [
        "Job polyframe-admin-django-migrate-1: failed: BackoffLimitExceeded Job has reached the "
        "specified backoff limit"
    ]


def test_after_an_upgrade_the_newest_migration_job_is_judged(
    fake_api: FakeKubernetesAPI, kube: Any
) -> None:
    """An upgrade (revision 2) creates a new migration Job per service and Helm deletes the
    previous revision's: while the old one lingers it is neither the service's Job nor judged."""
    healthy_release(fake_api)  # revision 1's Jobs, completed
    old = as_service(shape("job-migrate-complete"), "users-fastapi")
    lingering = merged(old, {"metadata": {"deletionTimestamp": "2026-11-27T10:02:05Z"}})
    lingering["status"]["conditions"] = shape("job-migrate-failed.status")["status"]["conditions"]
    fake_api.replace("jobs", "polyframe-users-fastapi-migrate-1", lingering)
    new = merged(
        old,
        {
            "metadata": {
                "name": "polyframe-users-fastapi-migrate-2",
                "uid": "7d8e9f00-1122-4334-8556-778899aabbcc",
                "creationTimestamp": "2026-11-27T10:02:04Z",
            },
            "status": {"active": 1},
        },
    )
    del new["status"]["conditions"]
    del new["status"]["succeeded"]
    fake_api.add("jobs", new)

    assert kube.migration_jobs()["users-fastapi"].metadata.name == (
        "polyframe-users-fastapi-migrate-2"
    )
    assert kube.unfinished_jobs() == [
        "Job polyframe-users-fastapi-migrate-2: not complete (1 active, 0 failed pods)"
    ]


def test_a_pod_that_may_run_as_root_or_write_its_root_is_named(
    fake_api: FakeKubernetesAPI, kube: Any
) -> None:
    healthy_release(fake_api)
    pod = as_service(shape("pod-migrate-completed"), "users-fastapi")
    init = pod["spec"]["initContainers"][0]
    init["securityContext"].update(readOnlyRootFilesystem=False, runAsNonRoot=None, runAsUser=None)
    pod["spec"]["securityContext"].update(runAsNonRoot=None, runAsUser=None)
    pod["status"]["containerStatuses"][0]["user"]["linux"]["uid"] = 0
    fake_api.replace("pods", pod["metadata"]["name"], pod)
    where = f"Pod {pod['metadata']['name']}"
    assert kube.pods_not_restricted() == [
        f"{where} container wait-for-database: runAsNonRoot is None",
        f"{where} container wait-for-database: runAsUser is None (the image decides, or root)",
        f"{where} container wait-for-database: the root file system is writable",
        f"{where} container migrate: the kubelet reports it runs as uid 0",
    ]


def test_pod_loss_skips_without_two_replicas_or_a_disruption_budget(
    fake_api: FakeKubernetesAPI, kube: Any
) -> None:
    healthy_release(fake_api)
    single = as_service(shape("deployment-rolled-out"), "legacy-flask")
    single["spec"]["replicas"] = 1
    fake_api.replace("deployments", "polyframe-legacy-flask", single)
    fake_api.objects["poddisruptionbudgets"] = [
        b for b in fake_api.objects["poddisruptionbudgets"]
        if b["metadata"]["name"] != "polyframe-admin-django"
    ]  # fmt: skip
    assert kube.pod_loss_skip_reason("users-fastapi") is None
    one = kube.pod_loss_skip_reason("legacy-flask")
    assert one.startswith("legacy-flask runs 1 replica: losing it is an outage")
    assert "two replicas and a PodDisruptionBudget" in one
    assert "deploy/kind/values.yaml" in one
    assert kube.pod_loss_skip_reason("admin-django").startswith(
        "admin-django has no PodDisruptionBudget"
    )
    assert kube.pod_loss_skip_reason("billing").startswith("no web Deployment of billing")


def test_a_deleted_pod_is_gone_and_its_replacement_awaited(
    fake_api: FakeKubernetesAPI, kube: Any
) -> None:
    """What the pod-loss check does, against the fake: delete, see it gone, wait for the
    Deployment to be whole again (a replacement that becomes ready a poll later)."""
    healthy_release(fake_api)
    victim = web_pod_name("users-fastapi")
    deployment = kube.web_deployment("users-fastapi")
    assert [p.metadata.name for p in kube.pods_of(deployment)] == [
        web_pod_name("users-fastapi", "m3n4b"),
        victim,
    ]
    budget = kube.disruption_budget_of(deployment)
    assert budget.status.disruptions_allowed == 1
    kube.delete_pod(victim)
    assert not kube.pod_exists(victim)
    replacement = as_service(shape("pod-ready"), "users-fastapi", "r3p1c")
    fake_api.steps["deployments"] = [
        lambda fake: fake.add("pods", replacement),
    ]
    kube.wait_until_ready(10, interval=0.01)
    assert ("DELETE", f"/api/v1/namespaces/polyframe/pods/{victim}") in {
        (m, p) for m, p, _q, _a in fake_api.requests
    }


def test_deleting_a_pod_is_refused_without_the_pod_loss_grant(
    fake_api: FakeKubernetesAPI, kube: Any
) -> None:
    from kubernetes.client.exceptions import ApiException

    healthy_release(fake_api)
    fake_api.rules = tuple(r for r in fake_api.rules if "delete" not in r[2])
    with pytest.raises(ApiException) as refused:
        kube.delete_pod(web_pod_name("users-fastapi"))
    assert refused.value.status == 403


# -- diagnostics --------------------------------------------------------------------------------


def test_diagnostics_hold_logs_events_and_status(
    fake_api: FakeKubernetesAPI, kube: Any, tmp_path: Path
) -> None:
    healthy_release(fake_api)
    pod = crash_looping(fake_api)
    folder = collect_diagnostics(kube, tmp_path / "snapshot")
    assert not (folder / "errors.txt").exists(), (folder / "errors.txt").read_text()
    assert (folder / "logs" / pod / "web.log").read_text() == CRASH_LOG
    assert (folder / "logs" / pod / "web.previous.log").read_text() == CRASH_LOG
    other = web_pod_name("users-fastapi")
    assert (folder / "logs" / other / "web.log").read_text() == WEB_LOG
    assert not (folder / "logs" / other / "web.previous.log").exists()  # never restarted
    migrate = "polyframe-users-fastapi-migrate-1-h4j5k"
    assert (folder / "logs" / migrate / "wait-for-database.log").read_text() == "migrated\n"
    assert "CrashLoopBackOff" in (folder / "summary.txt").read_text()
    deployments = (folder / "deployments.txt").read_text()
    assert "polyframe-legacy-flask: 2 wanted, 2 updated, 1 ready, 1 available" in deployments
    assert "1 of 2 updated replicas available" in deployments
    events = (folder / "events.txt").read_text()
    assert "Back-off restarting failed container web" in events
    pods = json.loads((folder / "pods.json").read_text())
    assert {p["metadata"]["name"] for p in pods} >= {pod, other, migrate}
    assert all("containerStatuses" in p["status"] for p in pods)  # as the API wrote them
    assert json.loads((folder / "jobs.json").read_text())
    assert json.loads((folder / "poddisruptionbudgets.json").read_text())
    # The previous container's log was asked for only where a container restarted.
    previous = [
        p
        for _m, p, q, _a in fake_api.requests
        if p.endswith("/log") and q.get("previous") == ["true"]
    ]
    assert previous == [f"/api/v1/namespaces/polyframe/pods/{pod}/log"]


def test_diagnostics_record_what_the_api_refused_and_keep_the_rest(
    fake_api: FakeKubernetesAPI, kube: Any, tmp_path: Path
) -> None:
    healthy_release(fake_api)
    fake_api.rules = tuple(r for r in fake_api.rules if r[1] != ("pods", "pods/log", "events"))
    fake_api.rules += (("", ("pods",), ("get", "list")),)  # no logs, no events
    folder = collect_diagnostics(kube, tmp_path / "snapshot")
    errors = (folder / "errors.txt").read_text()
    assert "403 Forbidden" in errors
    assert 'cannot get resource "pods/log"' in errors
    assert 'cannot list resource "events"' in errors
    assert (folder / "deployments.txt").exists()
    assert (folder / "pods.txt").exists()


# -- the kubeconfig path and the plugin in a pytest run ----------------------------------------


def test_a_kubeconfig_context_reaches_the_api_with_its_namespace_and_token(
    fake_api: FakeKubernetesAPI, tmp_path: Path
) -> None:
    healthy_release(fake_api)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake_api.url)
    settings = cluster_settings({
        "E2E_BASE_URL": "http://localhost:8080", "E2E_KUBE_CONTEXT": "kind-fake",
        "KUBECONFIG": str(kubeconfig),
    })  # fmt: skip
    cluster = connect(settings)
    try:
        assert cluster.namespace == NAMESPACE  # the context's, not the current context's
        assert cluster.wait_until_ready(5, interval=0.05) < 5
    finally:
        cluster.close()
    assert {a for _m, _p, _q, a in fake_api.requests} == {f"Bearer {TOKEN}"}


def _run_pytest(
    tmp_path: Path, test_source: str, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """A pytest run of ``test_source`` with the plugin, as its entry point registers it."""
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\naddopts = -p no:cacheprovider\nfilterwarnings = error\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    (tmp_path / "test_inner.py").write_text(test_source)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    clean.pop("KUBECONFIG", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-rs",
            *args,
            "test_inner.py",
        ],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


INNER_TESTS = """
def test_passes(cluster):
    assert cluster.namespace == "polyframe"

def test_fails(cluster):
    assert False, "an e2e check failed"
"""


def test_a_failure_in_cluster_mode_leaves_the_diagnostics_for_ci(
    fake_api: FakeKubernetesAPI, tmp_path: Path
) -> None:
    healthy_release(fake_api)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake_api.url)
    diagnostics = tmp_path / "artifacts"
    run = _run_pytest(
        tmp_path,
        INNER_TESTS,
        {
            "E2E_BASE_URL": "http://127.0.0.1:9",
            "E2E_KUBE_CONTEXT": "kind-fake",
            "KUBECONFIG": str(kubeconfig),
            "E2E_DIAGNOSTICS_DIR": str(diagnostics),
        },
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout, run.stdout
    assert "cluster mode: http://127.0.0.1:9, kube context kind-fake" in run.stdout
    (snapshot,) = [p for p in diagnostics.iterdir() if p.is_dir()]
    assert snapshot.name == "01-test_inner.py_test_fails"
    assert f"collected into {snapshot}" in run.stdout
    assert (snapshot / "logs" / web_pod_name("admin-django") / "web.log").read_text() == WEB_LOG
    assert (snapshot / "summary.txt").read_text().splitlines()[1] == "ready"
    (line,) = (diagnostics / "failures.txt").read_text().splitlines()
    assert "test_inner.py::test_fails (call): collected into" in line


def test_a_stuck_rollout_in_cluster_mode_fails_every_test_with_the_reason(
    fake_api: FakeKubernetesAPI, tmp_path: Path
) -> None:
    """Every test errors with the same explanation (no silent timeout); the diagnostics of
    the rollout are collected once."""
    healthy_release(fake_api)
    pod = crash_looping(fake_api)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake_api.url)
    diagnostics = tmp_path / "artifacts"
    many = INNER_TESTS + "".join(f"\ndef test_more_{i}(cluster):\n    pass\n" for i in range(5))
    run = _run_pytest(
        tmp_path,
        many,
        {
            "E2E_BASE_URL": "http://127.0.0.1:9",
            "E2E_KUBE_CONTEXT": "kind-fake",
            "KUBECONFIG": str(kubeconfig),
            "E2E_DIAGNOSTICS_DIR": str(diagnostics),
            "E2E_ROLLOUT_TIMEOUT": "1",
        },
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "7 errors" in run.stdout, run.stdout
    assert run.stdout.count(f"Pod {pod}: Running, not ready (ContainersNotReady)") >= 7
    assert "waiting CrashLoopBackOff" in run.stdout
    (snapshot,) = [p for p in diagnostics.iterdir() if p.is_dir()]
    assert "CrashLoopBackOff" in (snapshot / "summary.txt").read_text()
    assert (snapshot / "logs" / pod / "web.previous.log").read_text() == CRASH_LOG
    failures = (diagnostics / "failures.txt").read_text().splitlines()
    assert len(failures) == 7
    assert failures[0].endswith(f"test_passes (setup): collected into {snapshot}")
    assert all(
        f"(setup): the rollout failure, collected into {snapshot}" in f for f in failures[1:]
    )


def test_more_failures_than_snapshots_are_listed_not_collected(
    fake_api: FakeKubernetesAPI, tmp_path: Path
) -> None:
    healthy_release(fake_api)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake_api.url)
    diagnostics = tmp_path / "artifacts"
    failing = "".join(f"\ndef test_fails_{i}(cluster):\n    assert False\n" for i in range(7))
    run = _run_pytest(
        tmp_path,
        failing,
        {
            "E2E_BASE_URL": "http://127.0.0.1:9",
            "E2E_KUBE_CONTEXT": "kind-fake",
            "KUBECONFIG": str(kubeconfig),
            "E2E_DIAGNOSTICS_DIR": str(diagnostics),
        },
    )
    assert "7 failed" in run.stdout, run.stdout + run.stderr
    assert len([p for p in diagnostics.iterdir() if p.is_dir()]) == 5
    failures = (diagnostics / "failures.txt").read_text().splitlines()
    assert len(failures) == 7
    assert all("not collected: 5 snapshots taken already" in f for f in failures[5:])


def test_cluster_only_checks_skip_with_the_reason_outside_a_cluster(tmp_path: Path) -> None:
    """tests/e2e/test_e2e_cluster.py, run as the suite runs it, without a cluster: each
    check skips, naming what is missing, and nothing is started."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    for env, reason in (
        ({}, "the suite runs against the local platform"),
        ({"E2E_BASE_URL": "http://127.0.0.1:9"}, "E2E_BASE_URL is set but E2E_KUBE_CONTEXT is not"),
    ):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-rs",
                "tests/e2e/test_e2e_cluster.py",
            ],
            cwd=REPO_ROOT,
            env={**clean, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
        assert skipped, run.stdout
        assert all(reason in line for line in skipped), skipped
        assert " passed" not in run.stdout
        assert "failed" not in run.stdout


# -- the cluster-only checks themselves, in cluster mode against the fake -------------------------


class FakeIngress:
    """A stand-in for the platform's ingress, for the pod-loss check: answers the users
    service's JWKS (and registration and log-in) with 200; for ``outage`` seconds after a Pod
    is deleted, 502, as an ingress still sending to a Pod that is gone would."""

    def __init__(self) -> None:
        self.broken_until = 0.0
        self.served = 0
        ingress = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ingress.served += 1
                code = 502 if time.monotonic() < ingress.broken_until else 200
                self.answer(code, {"keys": []} if code == 200 else {"error": "Bad Gateway"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path.endswith("/register"):
                    self.answer(201, {"id": "u1", "email": "e2e@example.com"})
                else:
                    self.answer(200, {"access_token": "token", "expires_in": 900})

            def answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def fake_ingress() -> Iterator[FakeIngress]:
    ingress = FakeIngress()
    ingress.thread.start()
    try:
        yield ingress
    finally:
        ingress.server.shutdown()
        ingress.server.server_close()
        ingress.thread.join(timeout=5)


def _replace_deleted_pods(fake: FakeKubernetesAPI, pod: dict[str, Any]) -> None:
    """As a ReplicaSet does: a new Pod in place of a deleted one (ready at the next poll)."""
    replacement = copy.deepcopy(pod)
    replacement["metadata"]["name"] = pod["metadata"]["name"][:-5] + "r3p1c"
    fake.steps["deployments"] = [lambda fake: fake.add("pods", replacement)]


def _run_cluster_checks(
    fake_api: FakeKubernetesAPI, ingress: FakeIngress, tmp_path: Path, selection: str
) -> subprocess.CompletedProcess[str]:
    """tests/e2e/test_e2e_cluster.py in cluster mode, as `make kind-e2e` runs it, on the fakes."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake_api.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    env.update({
        "E2E_BASE_URL": ingress.url, "E2E_KUBE_CONTEXT": "kind-fake",
        "KUBECONFIG": str(kubeconfig), "E2E_DIAGNOSTICS_DIR": str(tmp_path / "artifacts"),
    })  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-k", selection,
         "tests/e2e/test_e2e_cluster.py"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip


def test_the_cluster_only_checks_pass_on_a_healthy_release(
    fake_api: FakeKubernetesAPI, fake_ingress: FakeIngress, tmp_path: Path
) -> None:
    """The checks of test_e2e_cluster.py run for real (not skipped) against the fakes: the
    migrations, the live security contexts, the `helm test` Pods, and the pod loss of
    users-fastapi while requests stream through the (fake) ingress."""
    healthy_release(fake_api)
    fake_api.on_delete.append(_replace_deleted_pods)
    run = _run_cluster_checks(fake_api, fake_ingress, tmp_path, "not losing or users-fastapi")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout, run.stdout
    assert "pod loss, users-fastapi: " in run.stdout  # the measurement, reported
    deleted = [p for m, p, _q, _a in fake_api.requests if m == "DELETE"]
    assert len(deleted) == 1
    assert deleted[0].startswith("/api/v1/namespaces/polyframe/pods/polyframe-users-fastapi-")
    assert fake_ingress.served > 50


def test_the_cluster_only_checks_fail_on_what_they_check(
    fake_api: FakeKubernetesAPI, fake_ingress: FakeIngress, tmp_path: Path
) -> None:
    """They can fail: a failed migration, a container allowed to write its root file system,
    a `helm test` Pod that failed, and requests failing right after a Pod is deleted."""
    healthy_release(fake_api)
    failed_job = merged(
        as_service(shape("job-migrate-complete"), "legacy-flask"),
        shape("job-migrate-failed.status"),
    )
    failed_job["status"]["conditions"] = shape("job-migrate-failed.status")["status"]["conditions"]
    fake_api.replace("jobs", "polyframe-legacy-flask-migrate-1", failed_job)
    writable = as_service(shape("pod-ready"), "admin-django", "m3n4b")
    writable["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    fake_api.replace("pods", writable["metadata"]["name"], writable)
    helm_test = as_service(shape("pod-helm-test-succeeded"), "users-fastapi")
    helm_test["status"]["phase"] = "Failed"
    helm_test["status"]["containerStatuses"][0]["state"]["terminated"].update(
        exitCode=1, reason="Error", message="http://polyframe-users-fastapi:8000/readyz: not ready"
    )
    fake_api.replace("pods", helm_test["metadata"]["name"], helm_test)

    def outage(fake: FakeKubernetesAPI, pod: dict[str, Any]) -> None:
        fake_ingress.broken_until = time.monotonic() + 0.5
        _replace_deleted_pods(fake, pod)

    fake_api.on_delete.append(outage)
    run = _run_cluster_checks(fake_api, fake_ingress, tmp_path, "not losing or users-fastapi")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "4 failed" in run.stdout, run.stdout
    assert "Job polyframe-legacy-flask-migrate-1: failed: BackoffLimitExceeded" in run.stdout
    assert "container web: the root file system is writable" in run.stdout
    assert "polyframe-users-fastapi-test-readiness: Failed" in run.stdout
    assert "readyz: not ready" in run.stdout
    assert "requests to /api/users/.well-known/jwks.json failed around the deletion" in run.stdout
    assert "502" in run.stdout
    # and each failure left its diagnostics
    assert len(list((tmp_path / "artifacts").glob("0*"))) == 4
