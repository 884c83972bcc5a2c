"""skaffold.yaml, the kind cluster config, the Make targets and the GitHub Actions workflow.

None of these tools runs here; what they require of their files is checked instead: the
artifacts' contexts and Dockerfiles exist, the chart path exists, the values skaffold sets are
the values the chart reads (and their defaults name the same images), the kind profile's
patches apply, the kind port mapping reaches Traefik's node port, the verify stage runs
tests/e2e in the cluster, and the Make targets and the workflow call each other consistently.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SKAFFOLD = REPO_ROOT / "skaffold.yaml"
KIND_DIR = REPO_ROOT / "deploy" / "kind"
MAKEFILE = REPO_ROOT / "Makefile"
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "kind-e2e.yaml"
SERVICES = ("users-fastapi", "legacy-flask", "admin-django")


@pytest.fixture(scope="module")
def skaffold() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(SKAFFOLD.read_text())
    return config


@pytest.fixture(scope="module")
def umbrella_values() -> dict[str, Any]:
    with helm.Chart.load(REPO_ROOT / "deploy" / "helm" / "polyframe") as chart:
        return chart.merge_values({})


def _template_variable(image: str) -> str:
    """skaffold's template name of an image: every character not [a-zA-Z0-9] becomes `_`."""
    return re.sub(r"[^a-zA-Z0-9]", "_", image)


def test_skaffold_uses_the_current_schema(skaffold: dict[str, Any]) -> None:
    assert re.fullmatch(r"skaffold/v4beta(\d+)", skaffold["apiVersion"])
    assert int(skaffold["apiVersion"].removeprefix("skaffold/v4beta")) >= 13
    assert skaffold["kind"] == "Config"


def test_artifacts_build_from_existing_contexts_and_dockerfiles(skaffold: dict[str, Any]) -> None:
    artifacts = skaffold["build"]["artifacts"]
    assert {a["image"] for a in artifacts} == {f"polyframe/{s}" for s in SERVICES} | {
        "polyframe/e2e"
    }
    for artifact in artifacts:
        context = REPO_ROOT / artifact.get("context", ".")
        assert context.is_dir(), artifact
        dockerfile = context / artifact["docker"]["dockerfile"]
        assert dockerfile.is_file(), artifact
        assert context == REPO_ROOT, "images build from the repository root (the workspace)"
    for service in SERVICES:
        (artifact,) = [a for a in artifacts if a["image"] == f"polyframe/{service}"]
        assert artifact["docker"]["dockerfile"] == f"services/{service}/Dockerfile"


def test_the_release_deploys_the_umbrella_chart_with_the_built_images(
    skaffold: dict[str, Any], umbrella_values: dict[str, Any]
) -> None:
    (release,) = skaffold["deploy"]["helm"]["releases"]
    assert (REPO_ROOT / release["chartPath"] / "Chart.yaml").is_file()
    assert release["chartPath"] == "deploy/helm/polyframe"
    assert release["skipBuildDependencies"] is True  # charts/ holds symlinks: nothing to build
    templates = release["setValueTemplates"]
    artifacts = {a["image"] for a in skaffold["build"]["artifacts"]}
    for service in SERVICES:
        image = f"polyframe/{service}"
        assert image in artifacts
        variable = _template_variable(image)
        assert templates[f"{service}.image.repository"] == f"{{{{.IMAGE_REPO_{variable}}}}}"
        assert templates[f"{service}.image.tag"] == f"{{{{.IMAGE_TAG_{variable}}}}}"
        # The chart reads these values, and its defaults name the same image.
        assert umbrella_values[service]["image"]["repository"] == image
        assert "tag" in umbrella_values[service]["image"]
    # Nothing else is set: every key set is one the chart has.
    for key in templates:
        node = umbrella_values
        for part in key.split("."):
            assert part in node, key
            node = node[part]


def test_the_set_values_render(render: Any) -> None:
    """What skaffold sets (a repository and a git-commit tag) renders and reaches the pods."""
    values = {
        service: {"image": {"repository": f"polyframe/{service}", "tag": "1a2b3c4-dirty"}}
        for service in SERVICES
    }
    rendered = render("polyframe", values)
    images = {c["image"] for _m, spec, _l in rendered.pods() for c in spec["containers"]}
    assert {f"polyframe/{service}:1a2b3c4-dirty" for service in SERVICES} <= images


def _apply_patches(config: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON Patch `add`, as skaffold applies a profile's patches (the parent must exist)."""
    patched = copy.deepcopy(config)
    for patch in patches:
        assert patch["op"] == "add", patch
        *parents, last = patch["path"].strip("/").split("/")
        node: Any = patched
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node.insert(int(last), patch["value"])
        else:
            node[last] = patch["value"]
    return patched


def test_the_kind_profile_builds_locally_and_deploys_to_kind(skaffold: dict[str, Any]) -> None:
    (profile,) = [p for p in skaffold["profiles"] if p["name"] == "kind"]
    cluster = yaml.safe_load((KIND_DIR / "cluster.yaml").read_text())
    assert profile["activation"] == [{"kubeContext": f"kind-{cluster['name']}"}]
    patched = _apply_patches(skaffold, profile["patches"])
    assert patched["build"]["local"]["push"] is False  # loaded into kind, never pushed
    assert patched["deploy"]["kubeContext"] == f"kind-{cluster['name']}"
    (release,) = patched["deploy"]["helm"]["releases"]
    assert release["valuesFiles"] == ["deploy/kind/values.yaml"]
    for path in release["valuesFiles"]:
        assert (REPO_ROOT / path).is_file()


def test_the_kind_values_are_valid_for_the_chart(render_case: Any) -> None:
    rendered = render_case("polyframe", "kind")  # renders, and passes the schema
    assert rendered.of_kind("NetworkPolicy")


def test_port_forward_and_verify_reach_the_in_cluster_ingress(skaffold: dict[str, Any]) -> None:
    traefik = yaml.safe_load((KIND_DIR / "traefik-values.yaml").read_text())
    (forward,) = skaffold["portForward"]
    assert (forward["resourceType"], forward["resourceName"], forward["namespace"]) == (
        "service",
        "traefik",
        "traefik",
    )
    (verify,) = skaffold["verify"]
    container = verify["container"]
    assert container["image"] in {a["image"] for a in skaffold["build"]["artifacts"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["E2E_CLUSTER_URL"] == "http://traefik.traefik.svc.cluster.local"
    script = " ".join(container["args"])
    assert 'E2E_BASE_URL="$E2E_CLUSTER_URL"' in script
    assert "pytest" in script
    assert "tests/e2e" in script
    assert traefik["service"]["type"] in ("NodePort", "ClusterIP", "LoadBalancer")
    manifest = verify["executionMode"]["kubernetesCluster"]["jobManifestPath"]
    job = yaml.safe_load((REPO_ROOT / manifest).read_text())
    assert job["kind"] == "Job"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["metadata"]["namespace"] == skaffold["deploy"]["helm"]["releases"][0]["namespace"]


def test_the_verify_job_manifest_is_a_valid_job(kubernetes_validator: Any) -> None:
    job = yaml.safe_load((KIND_DIR / "verify-job.yaml").read_text())
    for version in ("1.31", "1.35"):
        kubernetes_validator(job, version)


def test_the_e2e_image_runs_the_suite() -> None:
    text = (KIND_DIR / "e2e.Dockerfile").read_text()
    assert "COPY tests/e2e tests/e2e" in text
    assert "uv sync --frozen" in text
    assert 'ENTRYPOINT ["python", "-m", "pytest", "-p", "no:cacheprovider", "tests/e2e"]' in text


def test_kind_maps_the_ingress_to_the_host() -> None:
    cluster = yaml.safe_load((KIND_DIR / "cluster.yaml").read_text())
    traefik = yaml.safe_load((KIND_DIR / "traefik-values.yaml").read_text())
    assert cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert cluster["kind"] == "Cluster"
    (node,) = cluster["nodes"]
    assert node["role"] == "control-plane"
    assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", node["image"]), node[
        "image"
    ]
    (mapping,) = node["extraPortMappings"]
    assert traefik["service"]["type"] == "NodePort"
    assert mapping["containerPort"] == traefik["ports"]["web"]["nodePort"]
    assert mapping["listenAddress"] == "127.0.0.1"
    url = _make_variable("KIND_INGRESS_URL")
    assert url == f"http://localhost:{mapping['hostPort']}"
    # The Ingress class Traefik serves is the chart's default.
    values = yaml.safe_load(
        (REPO_ROOT / "deploy" / "helm" / "polyframe" / "values.yaml").read_text()
    )
    assert traefik["ingressClass"]["name"] == values["ingress"]["className"]
    # NetworkPolicy peers of the charts match where and how Traefik runs.
    service_values = yaml.safe_load(
        (REPO_ROOT / "deploy" / "helm" / "users-fastapi" / "values.yaml").read_text()
    )
    peer = service_values["networkPolicy"]["ingressController"]
    assert peer["namespaceSelector"] == {"kubernetes.io/metadata.name": "traefik"}
    assert "--namespace traefik --create-namespace" in _recipe("kind-up")


def _make_variable(name: str) -> str:
    match = re.search(rf"^{name} := (.+)$", MAKEFILE.read_text(), flags=re.M)
    assert match, name
    return match.group(1).strip()


def _make_targets() -> dict[str, tuple[str, str]]:
    """target -> (prerequisites, help) of every `target: … ## help` line."""
    targets = {}
    for match in re.finditer(
        r"^([a-zA-Z0-9_-]+):([^#\n]*)## (.+)$", MAKEFILE.read_text(), flags=re.M
    ):
        targets[match.group(1)] = (match.group(2).strip(), match.group(3).strip())
    return targets


def _release() -> dict[str, Any]:
    (release,) = yaml.safe_load(SKAFFOLD.read_text())["deploy"]["helm"]["releases"]
    return release  # type: ignore[no-any-return]


def test_make_targets_exist_with_help() -> None:
    targets = _make_targets()
    for target in ("kind-up", "kind-e2e", "kind-down", "test-deploy"):
        assert target in targets, target
        assert targets[target][1], target
    assert "test-deploy" in targets["test"][0].split()
    assert "kind-up" in targets["kind-e2e"][0].split()


def _recipe(target: str) -> str:
    text = MAKEFILE.read_text()
    match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, flags=re.M)
    assert match, target
    return match.group(1)


def test_make_targets_do_what_the_docs_say() -> None:
    up = _recipe("kind-up")
    assert "kind create cluster --config deploy/kind/cluster.yaml" in up
    assert "helm upgrade --install traefik traefik/traefik --version $(TRAEFIK_CHART_VERSION)" in up
    assert "--values deploy/kind/traefik-values.yaml" in up
    # The tags of the images (for the verify stage), then build (cached), load into kind, deploy.
    assert "skaffold build --profile kind" in up
    assert "--file-output $(KIND_BUILD_FILE)" in up
    assert "skaffold run --profile kind" in up
    assert re.fullmatch(r"\d+\.\d+\.\d+", _make_variable("TRAEFIK_CHART_VERSION"))
    e2e = _recipe("kind-e2e")
    assert "E2E_BASE_URL=$(KIND_INGRESS_URL)" in e2e
    assert "tests/e2e" in e2e
    # The credentials tests/e2e reads in cluster mode (its conftest: E2E_<SERVICE>_SECRET,
    # E2E_STAFF_<GROUP>), from the release's Secrets.
    for service in SERVICES:
        variable = f"E2E_{service.upper().replace('-', '_')}_SECRET"
        assert f'{variable}="$$(secret polyframe-credentials {service})"' in e2e, variable
    for group in ("support-acting", "support-readonly"):
        variable = f"E2E_STAFF_{group.upper().replace('-', '_')}"
        assert f'{variable}="$$(secret polyframe-admin-django-demo-staff {group})"' in e2e
    assert "skaffold verify --profile kind" in e2e
    assert "helm test $(KIND_RELEASE)" in e2e
    assert _make_variable("KIND_RELEASE") == _release()["name"]
    assert "kind delete cluster --name $(KIND_CLUSTER)" in _recipe("kind-down")
    assert _recipe("test-deploy").strip() == "@$(PYTEST) tests/deploy"
    cluster = yaml.safe_load((KIND_DIR / "cluster.yaml").read_text())
    assert _make_variable("KIND_CLUSTER") == cluster["name"]


def test_the_workflow_runs_the_make_targets_on_pull_requests() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the `on` key as True.
    triggers = workflow.get("on", workflow.get(True))
    assert "pull_request" in triggers
    (job,) = workflow["jobs"].values()
    runs = [step.get("run", "") for step in job["steps"]]
    assert any(run.strip() == "make test-deploy" for run in runs)
    assert any(run.strip() == "make kind-e2e" for run in runs)
    assert any("make kind-down" in run for run in runs)
    uploads = [
        s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@")
    ]
    assert uploads
    assert uploads[0]["if"] == "failure()"
    for tool in ("KIND_VERSION", "HELM_VERSION", "SKAFFOLD_VERSION"):
        assert re.fullmatch(r"v\d+\.\d+\.\d+", workflow["env"][tool]), tool
    setup_python = [
        s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/setup-python@")
    ]
    assert setup_python[0]["with"]["python-version-file"] == ".python-version"


# -- tests/e2e in cluster mode (tests/e2e/polyframe_e2e_cluster.py) ------------------------------

E2E_PLUGIN = REPO_ROOT / "tests" / "e2e" / "polyframe_e2e_cluster.py"


def _plugin_constant(name: str) -> Any:
    """A constant of the e2e cluster plugin, read from its source (it is not importable here)."""
    import ast

    for node in ast.parse(E2E_PLUGIN.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{E2E_PLUGIN.name} has no {name}")


def _rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_e2e_runner_may_do_exactly_what_the_cluster_plugin_needs(render_case: Any) -> None:
    """The Role the kind values create grants what the plugin declares it asks (RBAC_RULES;
    its tests' fake API refuses anything else), nothing more: read-only, and delete on pods."""
    rendered = render_case("polyframe", "kind")
    (role,) = rendered.of_kind("Role")
    needed = {
        (group, resource, verb)
        for group, resources, verbs in _plugin_constant("RBAC_RULES")
        for resource in resources
        for verb in verbs
    }
    assert _rules(role.obj) == needed
    writes = {rule for rule in needed if rule[2] not in ("get", "list", "watch")}
    assert writes == {("", "pods", "delete")}
    (account,) = [m for m in rendered.of_kind("ServiceAccount") if m.name == "polyframe-e2e"]
    (binding,) = rendered.of_kind("RoleBinding")
    assert binding.obj["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role.name,
    }  # fmt: skip
    assert binding.obj["subjects"] == [
        {"kind": "ServiceAccount", "name": account.name, "namespace": "polyframe-under-test"}
    ]
    assert account.obj["automountServiceAccountToken"] is False  # only the Job mounts it


def test_the_e2e_runner_is_off_by_default_and_pod_deletion_can_be_withheld(render: Any) -> None:
    default = render("polyframe", {})
    assert not default.of_kind("Role")
    assert not default.of_kind("RoleBinding")
    assert "polyframe-e2e" not in {m.name for m in default.of_kind("ServiceAccount")}
    read_only = render("polyframe", {"e2eRunner": {"enabled": True, "podDeletion": False}})
    (role,) = read_only.of_kind("Role")
    assert {verb for _g, _r, verb in _rules(role.obj)} == {"get", "list", "watch"}


def test_the_verify_job_runs_as_the_e2e_runner_in_cluster_mode(
    skaffold: dict[str, Any], render_case: Any
) -> None:
    job = yaml.safe_load((KIND_DIR / "verify-job.yaml").read_text())
    spec = job["spec"]["template"]["spec"]
    accounts = {m.name for m in render_case("polyframe", "kind").of_kind("ServiceAccount")}
    assert spec["serviceAccountName"] in accounts
    assert spec["serviceAccountName"] == f"{_release()['name']}-e2e"
    assert spec["automountServiceAccountToken"] is True  # the in-cluster credentials
    (verify,) = skaffold["verify"]
    env = {e["name"]: e["value"] for e in verify["container"]["env"]}
    script = " ".join(verify["container"]["args"])
    assert "E2E_KUBE_CONTEXT=in-cluster" in script
    assert 'E2E_KUBE_NAMESPACE="$E2E_CLUSTER_NAMESPACE"' in script
    assert 'E2E_HELM_RELEASE="$E2E_CLUSTER_RELEASE"' in script
    assert "E2E_DIAGNOSTICS_DIR=/tmp/" in script  # the image's root file system is not /tmp
    assert env["E2E_CLUSTER_NAMESPACE"] == _release()["namespace"] == job["metadata"]["namespace"]
    assert env["E2E_CLUSTER_RELEASE"] == _release()["name"]


def test_make_kind_e2e_runs_the_suite_in_cluster_mode_after_helm_test() -> None:
    e2e = _recipe("kind-e2e")
    for variable, value in (
        ("E2E_BASE_URL", "$(KIND_INGRESS_URL)"),
        ("E2E_KUBE_CONTEXT", "$(KIND_CONTEXT)"),
        ("E2E_KUBE_NAMESPACE", "$(KIND_NAMESPACE)"),
        ("E2E_HELM_RELEASE", "$(KIND_RELEASE)"),
        ("E2E_DIAGNOSTICS_DIR", "$(KIND_DIAGNOSTICS_DIR)"),
    ):
        assert f"{variable}={value}" in e2e, variable
    # The plugin reads exactly these (and nothing else names the cluster).
    for variable in ("E2E_KUBE_CONTEXT", "E2E_KUBE_NAMESPACE", "E2E_HELM_RELEASE"):
        assert f'"{variable}"' in E2E_PLUGIN.read_text(), variable
    # helm test runs first: the suite checks its Pods succeeded.
    assert e2e.index("helm test") < e2e.index("$(PYTEST) tests/e2e")
    assert _make_variable("KIND_CONTEXT") == "kind-$(KIND_CLUSTER)"
    assert _make_variable("KIND_NAMESPACE") == _release()["namespace"]
    # skaffold's verify Job sets its own cluster mode: the host's context is not passed on.
    assert "env -u E2E_BASE_URL -u E2E_KUBE_CONTEXT skaffold verify" in e2e


def test_the_workflow_uploads_what_the_suite_collects_on_failure() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()
    (upload,) = [
        s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@")
    ]
    assert upload["if"] == "failure()"
    uploaded = Path(upload["with"]["path"])
    diagnostics = Path(_make_variable("KIND_DIAGNOSTICS_DIR"))
    assert diagnostics == uploaded or uploaded in diagnostics.parents
    for step in job["steps"]:
        if step.get("name") == "Diagnostics":
            assert "test-artifacts/kind" in step["run"]
            assert uploaded in (Path("test-artifacts/kind"), *Path("test-artifacts/kind").parents)


def test_the_kind_values_give_every_service_two_replicas_and_a_disruption_budget(
    render_case: Any,
) -> None:
    """What the pod-loss check needs (it skips, saying so, without them)."""
    rendered = render_case("polyframe", "kind")
    budgets = rendered.of_kind("PodDisruptionBudget")
    for service in SERVICES:
        (web,) = [
            m
            for m in rendered.of_kind("Deployment")
            if m.labels["app.kubernetes.io/name"] == service
            and m.labels["app.kubernetes.io/component"] == "web"
        ]
        assert web.obj["spec"]["replicas"] == 2, service
        # maxUnavailable 0: the rolling update never takes the second replica away either.
        assert web.obj["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        labels = web.obj["spec"]["template"]["metadata"]["labels"]
        (budget,) = [
            b
            for b in budgets
            if all(labels.get(k) == v for k, v in b.obj["spec"]["selector"]["matchLabels"].items())
        ]
        assert budget.obj["spec"]["maxUnavailable"] == 1, service


# -- the Gateway API on kind --------------------------------------------------------------------

#: What the Traefik chart of TRAEFIK_CHART_VERSION (traefik/traefik 37.3.0: its values.yaml and
#: templates/gateway.yaml) renders, with providers.kubernetesGateway.enabled and gateway.enabled
#: (default true): one Gateway named gateway.name or `traefik-gateway`, in gateway.namespace or
#: Traefik's own namespace, with a listener per gateway.listeners entry (default: `web`, port
#: 8000, HTTP, Traefik's entry point web), whose allowedRoutes.namespaces is that listener's
#: namespacePolicy; without one the Gateway API's default holds: routes of the Gateway's own
#: namespace only (`from: Same`).
TRAEFIK_CHART_VERSION = "37.3.0"
TRAEFIK_GATEWAY_NAME = "traefik-gateway"
TRAEFIK_DEFAULT_LISTENERS = {"web": {"port": 8000, "protocol": "HTTP", "namespacePolicy": None}}


def _traefik_gateway(values: dict[str, Any], namespace: str) -> dict[str, Any] | None:
    """The Gateway the Traefik chart creates with ``values`` in ``namespace`` (None: none)."""
    if not (values.get("providers", {}).get("kubernetesGateway", {}).get("enabled")):
        return None
    gateway = values.get("gateway", {})
    if gateway.get("enabled", True) is False:
        return None
    listeners = copy.deepcopy(TRAEFIK_DEFAULT_LISTENERS)
    for name, listener in (gateway.get("listeners") or {}).items():
        listeners[name] = {**listeners.get(name, {}), **listener}
    return {
        "name": gateway.get("name") or TRAEFIK_GATEWAY_NAME,
        "namespace": gateway.get("namespace") or namespace,
        "listeners": listeners,
    }


def _admits(policy: dict[str, Any] | None, gateway_namespace: str, namespace: str) -> bool:
    """Does a listener's allowedRoutes.namespaces admit routes of ``namespace``?"""
    policy = policy or {"from": "Same"}
    if policy["from"] == "All":
        return True
    if policy["from"] == "Same":
        return namespace == gateway_namespace
    labels = {"kubernetes.io/metadata.name": namespace}  # what Kubernetes labels a namespace with
    selector = policy.get("selector") or {}
    assert not selector.get("matchExpressions"), "only matchLabels are evaluated here"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def test_the_httproute_attaches_to_the_gateway_traefik_creates_on_kind(
    render_case: Any, render: Any
) -> None:
    """With httpRoute.enabled on kind, its parent is the Gateway of deploy/kind/traefik-values.yaml:
    the same name, namespace and listener, and that listener admits the release's namespace."""
    assert _make_variable("TRAEFIK_CHART_VERSION") == TRAEFIK_CHART_VERSION, (
        "another Traefik chart: check its Gateway's defaults (gateway.yaml) and update these"
    )
    assert "--namespace traefik --create-namespace" in _recipe("kind-up")
    traefik = yaml.safe_load((KIND_DIR / "traefik-values.yaml").read_text())
    gateway = _traefik_gateway(traefik, "traefik")
    assert gateway is not None, "Traefik's Gateway provider is off: no Gateway for the HTTPRoute"
    assert traefik["ports"]["web"].get("port", 8000) == gateway["listeners"]["web"]["port"]
    release_namespace = _release()["namespace"]
    values = {**render_case("polyframe", "kind").values, "httpRoute": {"enabled": True}}
    (route,) = render("polyframe", values, namespace=release_namespace).of_kind("HTTPRoute")
    for parent in route.obj["spec"]["parentRefs"]:
        assert (parent["group"], parent["kind"]) == ("gateway.networking.k8s.io", "Gateway")
        assert parent["name"] == gateway["name"]
        assert parent["namespace"] == gateway["namespace"]
        listener = gateway["listeners"][parent["sectionName"]]
        assert listener["protocol"] == "HTTP"  # where an HTTPRoute may attach
        assert _admits(listener["namespacePolicy"], gateway["namespace"], release_namespace)


def test_the_gateway_check_sees_a_gateway_that_refuses_the_route() -> None:
    """The Traefik chart's default listener admits only its own namespace's routes."""
    gateway = _traefik_gateway({"providers": {"kubernetesGateway": {"enabled": True}}}, "traefik")
    assert gateway is not None
    assert not _admits(gateway["listeners"]["web"]["namespacePolicy"], "traefik", "polyframe")
    assert _admits(None, "traefik", "traefik")
    assert _traefik_gateway({}, "traefik") is None  # the provider is off by default
