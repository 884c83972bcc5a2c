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
        # One Dockerfile for the services; the service is its build argument.
        (artifact,) = [a for a in artifacts if a["image"] == f"polyframe/{service}"]
        assert artifact["docker"]["dockerfile"] == "deploy/images/service.Dockerfile"
        assert artifact["docker"]["buildArgs"]["SERVICE"] == service
        assert artifact["docker"]["buildArgs"]["DESCRIPTION"].startswith("Polyframe ")


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


def test_the_verify_job_manifest_is_a_valid_job(
    skaffold: dict[str, Any], kubernetes_validator: Any
) -> None:
    job = yaml.safe_load((KIND_DIR / "verify-job.yaml").read_text())
    for version in ("1.31", "1.35"):
        kubernetes_validator(job, version)
        kubernetes_validator(_verify_job(skaffold), version)  # as skaffold creates it


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
    # E2E_STAFF_<GROUP>), from the release's Secrets (test_kind_e2e_recipe runs the recipe).
    for service in SERVICES:
        assert f"E2E_{service.upper().replace('-', '_')}_SECRET=" in e2e, service
        assert f"$$(secret polyframe-credentials {service})" in e2e, service
    for group in ("support-acting", "support-readonly"):
        assert f"E2E_STAFF_{group.upper().replace('-', '_')}=" in e2e, group
        assert f"$$(secret polyframe-admin-django-demo-staff {group})" in e2e, group
    assert "skaffold verify --profile kind" in e2e
    assert "helm test $(KIND_RELEASE)" in e2e
    assert _make_variable("KIND_RELEASE") == _release()["name"]
    assert "kind delete cluster --name $(KIND_CLUSTER)" in _recipe("kind-down")
    assert _recipe("test-deploy").strip() == "@$(PYTEST) tests/deploy"
    cluster = yaml.safe_load((KIND_DIR / "cluster.yaml").read_text())
    assert _make_variable("KIND_CLUSTER") == cluster["name"]


#: skaffold's Helm 4 support: deploying with Helm 4 from 2.17.0 (PR
#: GoogleContainerTools/skaffold#9892: its post-renderer becomes a Helm plugin it installs);
#: Helm 4.1.4 and later refuse that plugin's version "0.1" (not semver), fixed in 2.19.0 (#10047).
SKAFFOLD_FOR_HELM = (((4, 0, 0), (2, 17, 0)), ((4, 1, 4), (2, 19, 0)))
DOCS = REPO_ROOT / "docs" / "kubernetes.md"


def _version(text: str) -> tuple[int, ...]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    assert match, text
    return tuple(int(part or 0) for part in match.groups())


def test_the_workflow_deploys_with_the_helm_engine_tests_deploy_renders_with() -> None:
    """tests/deploy renders and lints with helm-python-sdk's Helm engine; the kind workflow
    deploys with the Helm CLI skaffold drives. Same major, and a skaffold that supports it."""
    env = yaml.safe_load(WORKFLOW.read_text())["env"]
    tested = _version(helm.helm_sdk_version())
    deployed = _version(env["HELM_VERSION"])
    assert deployed[0] == tested[0], (
        f"the workflow deploys with Helm {env['HELM_VERSION']}, tests/deploy renders with "
        f"{helm.helm_sdk_version()} (helm-python-sdk): pin HELM_VERSION to the tested engine"
    )
    skaffold = _version(env["SKAFFOLD_VERSION"])
    for helm_from, skaffold_from in SKAFFOLD_FOR_HELM:
        if deployed >= helm_from:
            assert skaffold >= skaffold_from, (env["HELM_VERSION"], env["SKAFFOLD_VERSION"])
    # What docs/kubernetes.md says a machine needs is what CI runs.
    needs = re.search(r"^Needs (.+?)\n\n", DOCS.read_text(), flags=re.M | re.S)
    assert needs, "docs/kubernetes.md: no Needs … paragraph"
    text = " ".join(needs.group(1).split())
    helms = {int(major) for major in re.findall(r"Helm (\d+)", text)}
    assert helms == {tested[0]}, text
    minimum = re.search(r"skaffold ≥ (\d+\.\d+)", text)
    assert minimum, text
    needed = max(s for h, s in SKAFFOLD_FOR_HELM if deployed >= h)
    assert needed <= _version(minimum.group(1)) <= skaffold, text


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


# -- tests/e2e in cluster mode (tools/polyframe-e2e-cluster) ---------------------------------------

E2E_PLUGIN = (
    REPO_ROOT / "tools" / "polyframe-e2e-cluster" / "src" / "polyframe_e2e_cluster" / "settings.py"
)


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


#: What skaffold's `verify` container may hold (schema skaffold/v4beta13: VerifyContainer and
#: VerifyEnvVar, both `additionalProperties: false`): no valueFrom, securityContext, resources.
VERIFY_CONTAINER_FIELDS = {"name", "image", "command", "args", "env"}
E2E_CONFTEST = REPO_ROOT / "tests" / "e2e" / "conftest.py"
#: The credentials tests/e2e reads in cluster mode, and the kind release's Secret and key of each.
E2E_CREDENTIALS = {
    **{
        f"E2E_{service.upper().replace('-', '_')}_SECRET": ("polyframe-credentials", service)
        for service in SERVICES
    },
    **{
        f"E2E_STAFF_{group.upper().replace('-', '_')}": ("polyframe-admin-django-demo-staff", group)
        for group in ("support-acting", "support-readonly")
    },
}


def _verify_job(skaffold: dict[str, Any]) -> dict[str, Any]:
    """The Job skaffold's verify stage creates from `jobManifestPath`, built as skaffold does.

    skaffold (since 2.8, GoogleContainerTools/skaffold#9087; pkg/skaffold/verify/k8sjob/verify.go,
    createJobFromManifestPath and patchToK8sContainer) takes the manifest's container named like
    the verify container as the base (an empty container when none is), sets the image (the
    built tag), command and args, appends the verify container's env, and makes it the Job's
    only container; the pod spec stays the manifest's. Since 2.3 (#8557) it appends no
    environment of its own but an --env-file's, which `make kind-e2e` does not pass.
    """
    (verify,) = skaffold["verify"]
    container = verify["container"]
    job: dict[str, Any] = yaml.safe_load((REPO_ROOT / _job_manifest_path(skaffold)).read_text())
    spec = job["spec"]["template"]["spec"]
    base = next((c for c in spec["containers"] if c["name"] == container["name"]), {})
    patched = {**copy.deepcopy(base), "name": container["name"], "image": container["image"]}
    for field in ("command", "args"):
        if field in container:
            patched[field] = container[field]
    patched["env"] = [*(base.get("env") or []), *(container.get("env") or [])]
    spec["containers"] = [patched]
    spec["restartPolicy"] = "Never"
    return job


def _conftest_returns(name: str) -> str:
    """What a function of tests/e2e/conftest.py (not importable here) returns, as source."""
    import ast

    tree = ast.parse(E2E_CONFTEST.read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    (returned,) = [n for n in ast.walk(node) if isinstance(n, ast.Return) and n.value]
    assert returned.value is not None
    return ast.unparse(returned.value)


def _job_manifest_path(skaffold: dict[str, Any]) -> str:
    (verify,) = skaffold["verify"]
    return str(verify["executionMode"]["kubernetesCluster"]["jobManifestPath"])


def test_the_verify_container_patches_the_manifests_container_of_its_name(
    skaffold: dict[str, Any],
) -> None:
    """Everything skaffold.yaml cannot say about the container is in the Job manifest, on the
    container skaffold patches: with another name it would start from an empty container."""
    (verify,) = skaffold["verify"]
    container = verify["container"]
    assert set(container) <= VERIFY_CONTAINER_FIELDS, set(container) - VERIFY_CONTAINER_FIELDS
    for variable in container.get("env") or []:
        assert set(variable) <= {"name", "value"}, variable
    manifest = yaml.safe_load((REPO_ROOT / _job_manifest_path(skaffold)).read_text())
    names = [c["name"] for c in manifest["spec"]["template"]["spec"]["containers"]]
    assert names == [container["name"]]
    # skaffold appends the verify env: a name both define would be set twice (the last wins).
    (effective,) = _verify_job(skaffold)["spec"]["template"]["spec"]["containers"]
    defined = [variable["name"] for variable in effective["env"]]
    assert len(defined) == len(set(defined)), defined


def test_the_verify_job_reads_the_suites_credentials_from_the_release_secrets(
    skaffold: dict[str, Any], render_case: Any
) -> None:
    # The names tests/e2e reads: its conftest's _secret_env and _staff_env build them so.
    assert _conftest_returns("_secret_env") == "f\"E2E_{service.upper().replace('-', '_')}_SECRET\""
    assert _conftest_returns("_staff_env") == "f\"E2E_STAFF_{group.upper().replace('-', '_')}\""
    (container,) = _verify_job(skaffold)["spec"]["template"]["spec"]["containers"]
    env = {variable["name"]: variable for variable in container["env"]}
    secrets = {
        m.name: {**(m.obj.get("data") or {}), **(m.obj.get("stringData") or {})}
        for m in render_case("polyframe", "kind").of_kind("Secret")
    }
    for variable, (secret, key) in E2E_CREDENTIALS.items():
        assert variable in env, variable
        assert "value" not in env[variable], variable  # never a credential in plain text
        reference = env[variable]["valueFrom"]["secretKeyRef"]
        assert (reference["name"], reference["key"]) == (secret, key), variable
        assert reference.get("optional") is not True, variable  # missing: the Pod does not start
        # The kind release has that Secret (release `polyframe`, as the Job's namespace) and key.
        assert key in secrets.get(secret, {}), (variable, secret, key)
    # Nothing else in the Job reads a Secret, and skaffold.yaml holds no credential.
    readers = {name for name, variable in env.items() if "valueFrom" in variable}
    assert readers == set(E2E_CREDENTIALS)
    (verify,) = skaffold["verify"]
    assert not {v["name"] for v in verify["container"].get("env") or []} & set(E2E_CREDENTIALS)


def test_the_verify_job_is_restricted_and_bounded(skaffold: dict[str, Any]) -> None:
    job = _verify_job(skaffold)
    spec = job["spec"]["template"]["spec"]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] > 0
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not context.get("privileged")
    units = {"Mi": 2**20, "Gi": 2**30, "m": 1e-3, "": 1}

    def quantity(value: Any) -> float:
        match = re.fullmatch(r"([0-9.]+)(Mi|Gi|m|)", str(value))
        assert match, value
        return float(match.group(1)) * units[match.group(2)]

    resources = container["resources"]
    for resource in ("cpu", "memory"):
        request, limit = resources["requests"][resource], resources["limits"][resource]
        assert 0 < quantity(request) <= quantity(limit), (resource, request, limit)
    # The only writable place is /tmp, an emptyDir of bounded size: HOME, TMPDIR and the
    # diagnostics directory the command sets are under it.
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert set(volume) == {"name", "emptyDir"}
    assert quantity(volume["emptyDir"]["sizeLimit"]) > 0
    script = " ".join(container["args"])
    for setting in ("HOME=/tmp", "TMPDIR=/tmp", "E2E_DIAGNOSTICS_DIR=/tmp/"):
        assert setting in script, setting
    # A Pod that never starts (a Secret missing) fails the stage: skaffold gives up after the
    # Job's own deadline instead of waiting forever.
    (verify,) = skaffold["verify"]
    assert verify["timeout"] > job["spec"]["activeDeadlineSeconds"]


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
    # skaffold runs with a scrubbed environment (test_kind_e2e_recipe checks which): nothing of
    # the host's, neither its cluster mode nor its credentials, reaches the verify Job.
    assert 'env -i "$${keep[@]}" skaffold verify' in e2e


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
