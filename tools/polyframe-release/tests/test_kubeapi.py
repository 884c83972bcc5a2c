"""The release runner's Kubernetes API (polyframe_release.kubeapi), over real HTTP(S).

Read through the official ``kubernetes`` client configured by the kubeconfig the module writes
(and through its in-cluster loader), through plain httpx for the exact shapes of errors,
through kubectl when it is installed, and through the e2e suite's cluster plugin
(polyframe_e2e_cluster), unchanged. The server serves recorded objects (the plugin's tests'
kube_api_shapes) from an in-memory source, with the e2e Role's rules as the polyframe chart
renders them.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.incluster_config import InClusterConfigLoader

from polyframe_e2e_cluster.cluster import connect
from polyframe_e2e_cluster.diagnostics import collect_diagnostics
from polyframe_e2e_cluster.settings import RBAC_RULES, ClusterSettings
from polyframe_release.kubeapi.rbac import Rule, User, rules_from_role
from polyframe_release.kubeapi.server import KubeAPIServer
from polyframe_release.kubeapi.tls import TLSFiles, make_tls, write_kubeconfig
from polyframe_testing.documents import merged
from polyframe_testing.kubeshapes import load_shape

REPO_ROOT = Path(__file__).resolve().parents[3]
SHAPES = REPO_ROOT / "tools" / "polyframe-e2e-cluster" / "tests" / "kube_api_shapes"
CHART = REPO_ROOT / "deploy" / "helm" / "polyframe"
NAMESPACE = "polyframe"
ADMIN_TOKEN = "admin-token-1f2e3d"
E2E_TOKEN = "e2e-token-4c5b6a"
E2E_USER = "system:serviceaccount:polyframe:polyframe-e2e"
#: The recorded events are about this Pod, so it is the one crash-looping here.
CRASHING = "polyframe-users-fastapi-5d8c7b9f4-x7k2p"
WEB = "polyframe-users-fastapi-5d8c7b9f4-m3n4b"
MIGRATE = "polyframe-users-fastapi-migrate-1-h4j5k"
HELM_TEST = "polyframe-users-fastapi-test-readiness"
#: Another release's Pod in the same namespace: the release's selector must leave it out.
OTHER = "other-web-7f9c8d6b5-q1w2e"
RELEASE_PODS = sorted([CRASHING, WEB, MIGRATE, HELM_TEST])
CRASH_LOG = "starting\nsettings: cannot read /etc/polyframe/secrets/service-secret\nexit 1\n"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


# -- the source: recorded objects in memory ---------------------------------------------------


def shape(name: str) -> dict[str, Any]:
    return load_shape(SHAPES, name)


def renamed(obj: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(obj).replace(old, new))
    return loaded


class MemorySource:
    """An ObjectSource over fixed objects, recording deletions; ``failing`` resources raise."""

    namespace = NAMESPACE

    def __init__(self) -> None:
        other = renamed(shape("pod-ready"), CRASHING, OTHER)
        other["metadata"]["labels"]["app.kubernetes.io/instance"] = "other"
        self.objects: dict[str, list[dict[str, Any]]] = {
            "pods": [
                merged(shape("pod-ready"), shape("pod-crashloopbackoff.status")),
                renamed(shape("pod-ready"), CRASHING, WEB),
                shape("pod-migrate-completed"),
                shape("pod-helm-test-succeeded"),
                other,
            ],
            "deployments": [shape("deployment-rolled-out")],
            "jobs": [shape("job-migrate-complete")],
            "poddisruptionbudgets": [shape("poddisruptionbudget")],
            "events": shape("events-crashloopbackoff")["items"],
        }
        self.logs = {
            (CRASHING, "web", False): "starting\n",
            (CRASHING, "web", True): CRASH_LOG,
            (WEB, "web", False): "ready\n",
            (MIGRATE, "wait-for-database", False): "database up\n",
            (MIGRATE, "migrate", False): "migrated\n",
            (HELM_TEST, "readiness", False): "ready\n",
        }
        self.deleted: list[tuple[str, str, int | None]] = []
        self.failing: set[str] = set()
        self.lock = threading.Lock()

    def list(self, resource: str) -> list[dict[str, Any]]:
        if resource in self.failing:
            raise RuntimeError(f"podman ps failed while listing {resource}")
        with self.lock:
            return copy.deepcopy(self.objects.get(resource, []))

    def delete(
        self, resource: str, name: str, grace_period_seconds: int | None
    ) -> dict[str, Any] | None:
        with self.lock:
            self.deleted.append((resource, name, grace_period_seconds))
            for obj in self.objects.get(resource, []):
                if obj["metadata"]["name"] == name:
                    obj["metadata"]["deletionTimestamp"] = "2026-11-27T10:00:00Z"
                    return copy.deepcopy(obj)
        return None

    def log(
        self, pod: str, container: str | None, *, previous: bool, tail_lines: int | None
    ) -> str:
        text = self.logs.get((pod, container or "", previous))
        if text is None:
            what = "previous terminated container" if previous else "container"
            raise LookupError(f'{what} "{container}" in pod "{pod}" not found')
        lines = text.splitlines(keepends=True)
        return "".join(lines if tail_lines is None else lines[len(lines) - tail_lines :])


# -- fixtures ----------------------------------------------------------------------------------


def render_e2e_role() -> dict[str, Any]:
    """The polyframe chart's e2e Role, rendered by Helm as tests/deploy renders the charts."""
    import helm_python as helm

    helm.disable_logging()
    with helm.Chart.load(CHART) as chart:
        raw = chart.render(
            {"e2eRunner": {"enabled": True}}, name="polyframe", namespace=NAMESPACE, is_install=True
        )
    (role,) = [
        document
        for template, text in raw.items()
        if template.endswith(".yaml")
        for document in yaml.safe_load_all(text)
        if document and document["kind"] == "Role" and document["metadata"]["name"].endswith("e2e")
    ]
    return dict(role)


@pytest.fixture(scope="session")
def e2e_rules() -> tuple[Rule, ...]:
    return rules_from_role(render_e2e_role())


@pytest.fixture
def source() -> MemorySource:
    return MemorySource()


def serve(
    source: MemorySource, rules: tuple[Rule, ...], tls: TLSFiles | None = None
) -> KubeAPIServer:
    tokens = {ADMIN_TOKEN: User("kubernetes-admin", None), E2E_TOKEN: User(E2E_USER, rules)}
    server = KubeAPIServer(source, tokens=tokens, tls=tls)
    server.start()
    return server


@pytest.fixture
def api(source: MemorySource, e2e_rules: tuple[Rule, ...]) -> Iterator[KubeAPIServer]:
    server = serve(source, e2e_rules)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(api: KubeAPIServer, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    users = {"admin": ADMIN_TOKEN, "e2e": E2E_TOKEN}
    write_kubeconfig(path, server=api.url, namespace=NAMESPACE, users=users, current="e2e")
    return path


@pytest.fixture
def core(kubeconfig: Path) -> Iterator[client.CoreV1Api]:
    """The e2e ServiceAccount's view, through the kubeconfig's current context."""
    api_client = config.new_client_from_config(config_file=str(kubeconfig), persist_config=False)
    try:
        yield client.CoreV1Api(api_client)
    finally:
        api_client.close()


def http(
    api: KubeAPIServer,
    token: str | None = E2E_TOKEN,
    accept: str = "application/json",
    **kwargs: Any,
) -> httpx.Client:
    headers = {"Accept": accept, **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.Client(base_url=api.url, headers=headers, timeout=10, **kwargs)


def status_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert (body["kind"], body["apiVersion"], body["status"]) == ("Status", "v1", "Failure")
    assert body["code"] == response.status_code
    return body["code"], body["reason"], body["message"]


# -- RBAC --------------------------------------------------------------------------------------


def test_the_rules_are_the_rendered_e2e_roles(e2e_rules: tuple[Rule, ...]) -> None:
    read = ("get", "list", "watch")
    assert e2e_rules == (
        Rule(("",), ("pods", "pods/log", "events"), read),
        Rule(("apps",), ("deployments",), read),
        Rule(("batch",), ("jobs",), read),
        Rule(("policy",), ("poddisruptionbudgets",), read),
        Rule(("",), ("pods",), ("delete",)),
    )
    with pytest.raises(ValueError, match="not a Role"):
        rules_from_role({"kind": "RoleBinding"})


def test_rules_match_as_kubernetes_rbac_does() -> None:
    anything = Rule(("*",), ("*",), ("*",))
    assert anything.allows("delete", "apps", "deployments", "", "web")
    assert anything.allows("get", "", "pods", "log", "web")
    logs = Rule(("",), ("*/log",), ("get",))
    assert logs.allows("get", "", "pods", "log", "web")
    assert not logs.allows("get", "", "pods", "", "web")
    pods = Rule(("",), ("pods",), ("get", "list"))
    assert not pods.allows("get", "", "pods", "log", "web")  # pods/log is its own resource
    assert not pods.allows("get", "apps", "pods", "", "web")
    assert not pods.allows("delete", "", "pods", "", "web")
    named = Rule(("",), ("pods",), ("get", "list"), resource_names=("web",))
    assert named.allows("get", "", "pods", "", "web")
    assert not named.allows("get", "", "pods", "", "db")
    assert not named.allows("list", "", "pods", "", "")  # a list names no object


def test_the_e2e_role_grants_exactly_what_the_cluster_plugin_asks(
    api: KubeAPIServer,
) -> None:
    """Every verb on every resource nearby: refused (403, the API server's message) exactly
    where the cluster plugin's RBAC_RULES do not grant it."""
    resources = [
        *[("", r) for r in ("pods", "pods/log", "events", "services", "secrets", "configmaps")],
        *[("apps", r) for r in ("deployments", "statefulsets")],
        ("batch", "jobs"),
        ("policy", "poddisruptionbudgets"),
        ("networking.k8s.io", "ingresses"),
    ]
    wrong = []
    with http(api) as session:
        for group, combined in resources:
            resource, _, sub = combined.partition("/")
            base = f"/apis/{group}/v1" if group else "/api/v1"
            collection = f"{base}/namespaces/{NAMESPACE}/{resource}"
            one = f"{collection}/{WEB}" + (f"/{sub}?container=web" if sub else "")
            for verb, method, url in (
                ("get", "GET", one),
                ("list", "GET", collection),
                ("watch", "GET", f"{collection}?watch=true"),
                ("delete", "DELETE", one),
            ):
                if sub and verb != "get":
                    continue
                granted = any(
                    group == g and combined in rs and verb in vs for g, rs, vs in RBAC_RULES
                )
                response = session.request(method, url)
                if granted and response.status_code == 403:
                    wrong.append(f"{verb} {combined}: refused")
                if not granted:
                    qualified = f"{resource}.{group}" if group else resource
                    what = qualified if verb in ("list", "watch") else f'{qualified} "{WEB}"'
                    expected = (
                        f'{what} is forbidden: User "{E2E_USER}" cannot {verb} resource '
                        f'"{combined}" in API group "{group}" in the namespace "{NAMESPACE}"'
                    )
                    if status_of(response) != (403, "Forbidden", expected):
                        wrong.append(f"{verb} {combined}: {response.status_code} {response.text}")
    assert wrong == []


def test_a_role_without_logs_or_pod_deletion_refuses_them_by_name(
    source: MemorySource, e2e_rules: tuple[Rule, ...]
) -> None:
    """The Role rendered with ``e2eRunner.podDeletion: false`` lacks the last rule; without
    ``pods/log``, reading Pods still works but not their logs (a resource of its own)."""
    rules = tuple(
        Rule(r.api_groups, tuple(x for x in r.resources if x != "pods/log"), r.verbs)
        for r in e2e_rules
        if "delete" not in r.verbs
    )
    server = serve(source, rules)
    try:
        with http(server) as session:
            refused = session.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{WEB}")
            no_log = session.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{WEB}/log")
            pod = session.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{WEB}")
    finally:
        server.stop()
    assert status_of(refused) == (
        403,
        "Forbidden",
        f'pods "{WEB}" is forbidden: User "{E2E_USER}" cannot delete resource "pods" in API '
        f'group "" in the namespace "{NAMESPACE}"',
    )
    assert refused.json()["details"] == {"name": WEB, "kind": "pods"}
    assert status_of(no_log)[2] == (
        f'pods "{WEB}" is forbidden: User "{E2E_USER}" cannot get resource "pods/log" in API '
        f'group "" in the namespace "{NAMESPACE}"'
    )
    assert pod.status_code == 200
    assert source.deleted == []


def test_a_role_counts_only_in_its_own_namespace(api: KubeAPIServer) -> None:
    with http(api) as e2e, http(api, ADMIN_TOKEN) as admin:
        elsewhere = e2e.get("/api/v1/namespaces/kube-system/pods")
        everywhere = e2e.get("/api/v1/pods")
        admin_elsewhere = admin.get("/api/v1/namespaces/kube-system/pods")
        admin_get_elsewhere = admin.get(f"/api/v1/namespaces/kube-system/pods/{WEB}")
        admin_everywhere = admin.get("/api/v1/pods")
    assert status_of(elsewhere)[2].endswith('in the namespace "kube-system"')
    assert status_of(everywhere) == (
        403,
        "Forbidden",
        f'pods is forbidden: User "{E2E_USER}" cannot list resource "pods" in API group "" at '
        "the cluster scope",
    )
    # Only the source's namespace exists: elsewhere is empty, and nothing is found there.
    assert admin_elsewhere.json()["items"] == []
    assert status_of(admin_get_elsewhere) == (404, "NotFound", f'pods "{WEB}" not found')
    assert len(admin_everywhere.json()["items"]) == len(RELEASE_PODS) + 1


def test_a_missing_or_unknown_token_is_401_and_version_is_public(api: KubeAPIServer) -> None:
    for token in (None, "guessed"):
        with http(api, token) as session:
            refused = session.get(f"/api/v1/namespaces/{NAMESPACE}/pods")
        assert status_of(refused) == (401, "Unauthorized", "Unauthorized")
    with http(api, None) as session:
        basic = session.get("/api", headers={"Authorization": f"Basic {E2E_TOKEN}"})
        version = session.get("/version")
    assert status_of(basic) == (401, "Unauthorized", "Unauthorized")
    assert (version.json()["major"], version.json()["minor"]) == ("1", "31")


# -- reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", sorted([*RELEASE_PODS, OTHER])),
        ("app.kubernetes.io/instance=polyframe", RELEASE_PODS),
        ("app.kubernetes.io/instance==polyframe,app.kubernetes.io/component=web", [CRASHING, WEB]),
        ("app.kubernetes.io/instance!=polyframe", [OTHER]),
        ("app.kubernetes.io/component in (migrate, test)", [MIGRATE, HELM_TEST]),
        (
            "app.kubernetes.io/component notin (web),app.kubernetes.io/instance",
            [MIGRATE, HELM_TEST],
        ),
        # A Pod without the label is selected by != and notin, as by the API server.
        ("app.kubernetes.io/managed-by!=Helm", [MIGRATE]),
        ("app.kubernetes.io/managed-by notin (Helm)", [MIGRATE]),
        ("job-name", [MIGRATE]),
        ("!pod-template-hash", [MIGRATE, HELM_TEST]),
        ("app.kubernetes.io/instance=nobody", []),
    ],
)
def test_lists_select_by_label_as_the_api_server(
    core: client.CoreV1Api, selector: str, expected: list[str]
) -> None:
    found = core.list_namespaced_pod(NAMESPACE, label_selector=selector)
    assert sorted(p.metadata.name for p in found.items) == sorted(expected)


@pytest.mark.parametrize(
    "selector",
    ["app in (", "app in ()", "a b", "=web", "app=(web)", "app=web,", "Bad_/name=x"],
)
def test_a_malformed_label_selector_is_400(api: KubeAPIServer, selector: str) -> None:
    with http(api) as session:
        refused = session.get(
            f"/api/v1/namespaces/{NAMESPACE}/pods", params={"labelSelector": selector}
        )
    code, reason, message = status_of(refused)
    assert (code, reason) == (400, "BadRequest")
    assert message.startswith("unable to parse requirement")


def test_lists_select_by_field(core: client.CoreV1Api) -> None:
    recorded = shape("events-crashloopbackoff")["items"]
    about_pod = core.list_namespaced_event(
        NAMESPACE, field_selector=f"involvedObject.kind=Pod,involvedObject.name={CRASHING}"
    )
    assert [e.metadata.name for e in about_pod.items] == [
        e["metadata"]["name"] for e in recorded if e["involvedObject"]["kind"] == "Pod"
    ]
    warnings = core.list_namespaced_event(NAMESPACE, field_selector="type!=Normal")
    assert {e.reason for e in warnings.items} == {
        e["reason"] for e in recorded if e["type"] == "Warning"
    }
    one = core.list_namespaced_pod(NAMESPACE, field_selector=f"metadata.name={WEB}")
    assert [p.metadata.name for p in one.items] == [WEB]
    done = core.list_namespaced_pod(NAMESPACE, field_selector="status.phase==Succeeded")
    assert sorted(p.metadata.name for p in done.items) == [MIGRATE, HELM_TEST]
    with pytest.raises(ApiException) as refused:
        core.list_namespaced_pod(NAMESPACE, field_selector="spec.image=x")
    assert refused.value.status == 400
    assert json.loads(refused.value.body)["message"] == "field label not supported: spec.image"


def test_each_resource_is_listed_in_its_own_group_only(api: KubeAPIServer) -> None:
    with http(api) as session, http(api, ADMIN_TOKEN) as admin:
        deployments = session.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments").json()
        jobs = session.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs").json()
        # Authorized first (the e2e Role grants no deployments in the core group), then sought.
        refused = session.get(f"/api/v1/namespaces/{NAMESPACE}/deployments")
        in_core = admin.get(f"/api/v1/namespaces/{NAMESPACE}/deployments")
        in_batch = admin.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/deployments")
        unknown = admin.get(f"/apis/apps/v2/namespaces/{NAMESPACE}/deployments")
    assert (deployments["kind"], deployments["apiVersion"]) == ("DeploymentList", "apps/v1")
    # As the API server lists: the list's resourceVersion, the items without their own type.
    assert deployments["metadata"] == {"resourceVersion": "1843"}
    assert deployments["items"][0]["metadata"]["name"] == "polyframe-users-fastapi"
    assert "kind" not in deployments["items"][0]
    assert (jobs["kind"], jobs["apiVersion"]) == ("JobList", "batch/v1")
    assert status_of(refused)[:2] == (403, "Forbidden")
    for response in (in_core, in_batch, unknown):
        assert status_of(response) == (
            404,
            "NotFound",
            "the server could not find the requested resource",
        )


def test_one_object_and_what_is_not_found(api: KubeAPIServer, core: client.CoreV1Api) -> None:
    pod = core.read_namespaced_pod(WEB, NAMESPACE)
    assert (pod.kind, pod.api_version, pod.metadata.name) == ("Pod", "v1", WEB)
    assert pod.status.container_statuses[0].ready is True
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("nope", NAMESPACE)
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["message"] == 'pods "nope" not found'
    with http(api) as session:
        deployment = session.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/nope")
    assert status_of(deployment) == (404, "NotFound", 'deployments.apps "nope" not found')
    assert deployment.json()["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}


def test_pod_logs_current_previous_and_tail(api: KubeAPIServer, core: client.CoreV1Api) -> None:
    assert core.read_namespaced_pod_log(CRASHING, NAMESPACE, container="web") == "starting\n"
    previous = core.read_namespaced_pod_log(CRASHING, NAMESPACE, container="web", previous=True)
    assert previous == CRASH_LOG
    tail = core.read_namespaced_pod_log(
        CRASHING, NAMESPACE, container="web", previous=True, tail_lines=2
    )
    assert tail == "settings: cannot read /etc/polyframe/secrets/service-secret\nexit 1\n"
    with http(api) as session:
        never_restarted = session.get(
            f"/api/v1/namespaces/{NAMESPACE}/pods/{WEB}/log",
            params={"container": "web", "previous": "true"},
        )
        no_pod = session.get(f"/api/v1/namespaces/{NAMESPACE}/pods/nope/log")
        bad_tail = session.get(
            f"/api/v1/namespaces/{NAMESPACE}/pods/{WEB}/log", params={"tailLines": "-1"}
        )
        plain = session.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{WEB}/log?container=web")
    assert status_of(never_restarted) == (
        400,
        "BadRequest",
        f'previous terminated container "web" in pod "{WEB}" not found',
    )
    assert status_of(no_pod) == (404, "NotFound", 'pods "nope" not found')
    assert status_of(bad_tail)[:2] == (400, "BadRequest")
    assert plain.headers["content-type"] == "text/plain"


def test_deleting_a_pod_starts_its_graceful_delete(
    api: KubeAPIServer, core: client.CoreV1Api, source: MemorySource
) -> None:
    deleted = core.delete_namespaced_pod(WEB, NAMESPACE, grace_period_seconds=5)
    assert deleted.metadata.name == WEB
    assert deleted.metadata.deletion_timestamp is not None
    assert core.read_namespaced_pod(WEB, NAMESPACE).metadata.deletion_timestamp is not None
    with http(api) as session:
        options = session.request(
            "DELETE",
            f"/api/v1/namespaces/{NAMESPACE}/pods/{CRASHING}",
            json={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
        )
        missing = session.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/nope")
        dry = session.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{WEB}?dryRun=All")
    assert options.status_code == 200
    assert options.json()["kind"] == "Pod"
    assert status_of(missing) == (404, "NotFound", 'pods "nope" not found')
    assert status_of(dry)[:2] == (400, "BadRequest")
    assert source.deleted == [("pods", WEB, 5), ("pods", CRASHING, 0), ("pods", "nope", None)]


def test_what_is_not_served_is_405_once_authorized(
    api: KubeAPIServer, source: MemorySource
) -> None:
    """Watches (the plugin lists), writes, and deleting anything but one Pod."""
    pods = f"/api/v1/namespaces/{NAMESPACE}/pods"
    with http(api) as e2e, http(api, ADMIN_TOKEN) as admin:
        watch = e2e.get(pods, params={"watch": "true"})
        create_e2e = e2e.post(pods, json={"kind": "Pod"})
        create_admin = admin.post(pods, json={"kind": "Pod"})
        everything = admin.delete(pods)
        deployment = admin.delete(
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/polyframe-users-fastapi"
        )
        head = admin.head(pods)
    for response in (watch, create_admin, everything, deployment):
        assert status_of(response)[:2] == (405, "MethodNotAllowed")
    assert status_of(create_e2e)[:2] == (403, "Forbidden")  # authorization comes first
    assert head.status_code == 501
    assert source.deleted == []


def test_a_failing_source_is_a_500_status_and_the_server_goes_on(
    api: KubeAPIServer, source: MemorySource, caplog: pytest.LogCaptureFixture
) -> None:
    source.failing.add("pods")
    with http(api) as session:
        failed = session.get(f"/api/v1/namespaces/{NAMESPACE}/pods")
        events = session.get(f"/api/v1/namespaces/{NAMESPACE}/events")
    assert status_of(failed) == (
        500,
        "InternalError",
        "Internal error occurred: podman ps failed while listing pods",
    )
    assert "Traceback" not in failed.text
    assert events.status_code == 200
    assert "podman ps failed while listing pods" in caplog.text


# -- kubectl: discovery, tables, TLS --------------------------------------------------------------


def test_discovery_names_each_resource_in_its_group(api: KubeAPIServer) -> None:
    with http(api) as session:
        core_v1 = session.get("/api/v1").json()
        apps_v1 = session.get("/apis/apps/v1").json()
        groups = session.get("/apis").json()
    pods = next(r for r in core_v1["resources"] if r["name"] == "pods")
    assert (pods["kind"], pods["namespaced"], pods["shortNames"]) == ("Pod", True, ["po"])
    assert "delete" in pods["verbs"]
    assert {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod",
            "verbs": ["get"]} in core_v1["resources"]  # fmt: skip
    deployments = next(r for r in apps_v1["resources"] if r["name"] == "deployments")
    assert (deployments["kind"], deployments["shortNames"]) == ("Deployment", ["deploy"])
    assert "delete" not in deployments["verbs"]
    assert [g["name"] for g in groups["groups"]] == [
        "apps",
        "batch",
        "policy",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
    ]


def test_the_namespace_exists_alone(api: KubeAPIServer) -> None:
    with http(api, ADMIN_TOKEN) as admin, http(api) as e2e:
        namespace = admin.get(f"/api/v1/namespaces/{NAMESPACE}").json()
        other = admin.get("/api/v1/namespaces/kube-system")
        refused = e2e.get(f"/api/v1/namespaces/{NAMESPACE}")
    assert (namespace["kind"], namespace["metadata"]["name"]) == ("Namespace", NAMESPACE)
    assert namespace["status"] == {"phase": "Active"}
    assert status_of(other) == (404, "NotFound", 'namespaces "kube-system" not found')
    assert status_of(refused)[2] == (
        f'namespaces "{NAMESPACE}" is forbidden: User "{E2E_USER}" cannot get resource '
        f'"namespaces" in API group "" in the namespace "{NAMESPACE}"'
    )


def test_kubectl_gets_tables_with_the_pods_state(api: KubeAPIServer, source: MemorySource) -> None:
    source.objects["pods"][2]["metadata"]["deletionTimestamp"] = "2026-11-27T10:00:00Z"
    with http(api, accept=TABLE) as session:
        pods = session.get(f"/api/v1/namespaces/{NAMESPACE}/pods")
        deployment = session.get(
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/polyframe-users-fastapi",
            params={"includeObject": "Object"},
        )
    assert pods.headers["content-type"] == "application/json;as=Table;v=v1;g=meta.k8s.io"
    table = pods.json()
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0] == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
    ]
    rows = {row["cells"][0]: row for row in table["rows"]}
    assert rows[WEB]["cells"][1:4] == ["1/1", "Running", "0"]
    assert rows[CRASHING]["cells"][1:3] == ["0/1", "CrashLoopBackOff"]
    assert re.fullmatch(r"4 \(\w+ ago\)", rows[CRASHING]["cells"][3])
    assert rows[MIGRATE]["cells"][2] == "Terminating"
    assert rows[HELM_TEST]["cells"][1:3] == ["0/1", "Completed"]
    assert rows[WEB]["object"]["kind"] == "PartialObjectMetadata"
    (row,) = deployment.json()["rows"]
    assert row["cells"][:4] == ["polyframe-users-fastapi", "2/2", "2", "2"]
    assert row["object"]["spec"]["replicas"] == 2


def test_tls_with_the_generated_ca_as_in_cluster_clients_use_it(
    source: MemorySource, e2e_rules: tuple[Rule, ...], tmp_path: Path
) -> None:
    """The client verifies the server's certificate against the CA make_tls wrote; the
    in-cluster loader of the ``kubernetes`` package (a Pod's ServiceAccount) reaches it."""
    tls = make_tls(tmp_path / "tls", ["127.0.0.1", "localhost"])
    for path in (tls.ca_cert, tls.cert, tls.key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    server = serve(source, e2e_rules, tls)
    try:
        port = server.url.rsplit(":", 1)[1]
        token_file = tmp_path / "token"
        token_file.write_text(E2E_TOKEN)
        configuration = client.Configuration()
        InClusterConfigLoader(
            token_filename=str(token_file),
            cert_filename=str(tls.ca_cert),
            environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port},
        ).load_and_set(configuration)
        assert configuration.host == server.url
        with client.ApiClient(configuration) as api_client:
            pods = client.CoreV1Api(api_client).list_namespaced_pod(NAMESPACE)
        assert len(pods.items) == len(RELEASE_PODS) + 1
        strict = ssl.create_default_context(cafile=str(tls.ca_cert))
        strict.verify_flags |= ssl.VERIFY_X509_STRICT  # as Python 3.13's default context
        with http(server, verify=strict) as session:
            assert session.get(f"/api/v1/namespaces/{NAMESPACE}/pods").status_code == 200
        stranger = make_tls(tmp_path / "other", ["127.0.0.1"])
        with (
            http(server, verify=ssl.create_default_context(cafile=str(stranger.ca_cert))) as other,
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            other.get("/version")
    finally:
        server.stop()


def test_kubectl_reads_the_release(
    source: MemorySource, e2e_rules: tuple[Rule, ...], tmp_path: Path
) -> None:
    """kubectl sends no bearer token over plain HTTP, so it is given TLS, as the runner must."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kubectl check needs it on PATH")
    tls = make_tls(tmp_path / "tls", ["127.0.0.1"])
    server = serve(source, e2e_rules, tls)
    kubeconfig = tmp_path / "kubeconfig"
    users = {"admin": ADMIN_TOKEN, "e2e": E2E_TOKEN}
    write_kubeconfig(
        kubeconfig,
        server=server.url,
        namespace=NAMESPACE,
        users=users,
        current="e2e",
        ca_file=tls.ca_cert,
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [kubectl, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "c")]
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=120, check=False
        )

    try:
        names = run("get", "pods", "-n", NAMESPACE, "-o", "name")
        table = run(
            "--context",
            "admin",
            "get",
            "pods,deployments",
            "-l",
            "app.kubernetes.io/instance=polyframe",
        )
        refused = run("get", "services")
    finally:
        server.stop()
    assert names.returncode == 0, names.stderr
    assert sorted(names.stdout.split()) == sorted(f"pod/{p}" for p in [*RELEASE_PODS, OTHER])
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    crashing = next(line for line in lines if CRASHING in line).split()
    assert crashing[1:4] == ["0/1", "CrashLoopBackOff", "4"]
    assert any(line.split()[:2] == ["NAME", "READY"] and "UP-TO-DATE" in line for line in lines[1:])
    assert refused.returncode == 1
    assert (
        f'services is forbidden: User "{E2E_USER}" cannot list resource "services" in API group '
        f'"" in the namespace "{NAMESPACE}"' in refused.stderr
    )


# -- the cluster plugin, unchanged ----------------------------------------------------------------


def test_the_cluster_plugin_reads_and_deletes_through_the_server(
    kubeconfig: Path, source: MemorySource, tmp_path: Path
) -> None:
    """The cluster plugin, from a kubeconfig context, as the e2e ServiceAccount: its Role is
    all it needs."""
    settings = ClusterSettings(
        base_url="http://127.0.0.1:9",
        context="e2e",
        namespace=None,
        release="polyframe",
        rollout_timeout=5,
        diagnostics_dir=tmp_path / "diagnostics",
        kubeconfig=str(kubeconfig),
    )
    cluster = connect(settings)
    try:
        assert cluster.namespace == NAMESPACE  # the context's
        look = cluster.rollout()
        assert [(p.kind, p.name) for p in look.problems] == [("Pod", CRASHING)]
        assert "waiting CrashLoopBackOff" in look.problems[0].text
        assert [p.metadata.name for p in cluster.pods()] == RELEASE_PODS
        assert cluster.services() == ["users-fastapi"]
        assert cluster.unfinished_jobs() == []
        assert cluster.pod_loss_skip_reason("users-fastapi") is None
        assert cluster.pod_log(CRASHING, "web", previous=True) == CRASH_LOG
        folder = collect_diagnostics(cluster, tmp_path / "diagnostics")
        assert not (folder / "errors.txt").exists(), (folder / "errors.txt").read_text()
        assert (folder / "logs" / CRASHING / "web.previous.log").read_text() == CRASH_LOG
        assert "BackOff" in (folder / "events.txt").read_text()
        cluster.delete_pod(WEB)
        assert source.deleted == [("pods", WEB, None)]
        deployment = cluster.web_deployment("users-fastapi")
        assert [p.metadata.name for p in cluster.pods_of(deployment)] == [CRASHING]
        assert cluster.pod_exists(WEB)  # terminating, not gone yet
        assert not cluster.pod_exists("nope")
    finally:
        cluster.close()


# -- the server's life and the kubeconfig ------------------------------------------------------


def test_stop_is_quick_and_final(source: MemorySource, e2e_rules: tuple[Rule, ...]) -> None:
    server = serve(source, e2e_rules)
    url = server.url
    with http(server) as kept_alive:
        assert kept_alive.get(f"/api/v1/namespaces/{NAMESPACE}/pods").status_code == 200
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2
        # A connection the client kept alive is told, not served stale state.
        assert status_of(kept_alive.get("/version"))[:2] == (503, "ServiceUnavailable")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/version", timeout=2)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url


def test_the_kubeconfig_has_a_context_per_user(tmp_path: Path) -> None:
    path = tmp_path / "kube" / "config"
    write_kubeconfig(
        path,
        server="https://127.0.0.1:6443",
        namespace=NAMESPACE,
        users={"admin": ADMIN_TOKEN, "e2e": E2E_TOKEN},
        current="admin",
        ca_file=tmp_path / "ca.crt",
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    contexts, current = config.list_kube_config_contexts(config_file=str(path))
    assert current["name"] == "admin"
    assert {c["name"]: (c["context"]["user"], c["context"]["namespace"]) for c in contexts} == {
        "admin": ("admin", NAMESPACE),
        "e2e": ("e2e", NAMESPACE),
    }
    loaded = yaml.safe_load(path.read_text())
    assert loaded["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:6443",
        "certificate-authority": str(tmp_path / "ca.crt"),
    }
    assert {u["name"]: u["user"]["token"] for u in loaded["users"]} == {
        "admin": ADMIN_TOKEN,
        "e2e": E2E_TOKEN,
    }
    with pytest.raises(ValueError, match="current context 'ci'"):
        write_kubeconfig(path, server="x", namespace=NAMESPACE, users={}, current="ci")
