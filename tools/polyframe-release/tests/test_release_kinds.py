"""What the runner implements (polyframe_release.kinds), the check of a render against it, and
Helm's order of hooks and kinds (polyframe_release.hooks, .runner)."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from polyframe_release import hooks, kinds, runner
from polyframe_release.render import Render


def _with(kind_render: Render, *extra: dict[str, Any]) -> Render:
    return Render(
        kind_render.release,
        kind_render.namespace,
        [*copy.deepcopy(kind_render.objects), *extra],
        kind_render.values,
    )


def _workload(kind_render: Render, kind: str, service: str, component: str) -> dict[str, Any]:
    """A copy of the ``kind`` of ``service`` whose component is ``component`` (found by its
    labels: the chart may name it after the revision)."""
    found = [
        o
        for o in kind_render.of_kind(kind)
        if o["metadata"]["labels"].get("app.kubernetes.io/name") == service
        and o["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, [o["metadata"]["name"] for o in found]
    return copy.deepcopy(found[0])


def _deployment(kind_render: Render, name: str = "polyframe-users-fastapi") -> dict[str, Any]:
    found = kind_render.get("Deployment", name)
    assert found is not None
    return copy.deepcopy(found)


# -- the kind render ----------------------------------------------------------------------------


def test_the_kind_render_uses_only_what_the_runner_implements(kind_render: Render) -> None:
    errors, _skipped = hooks.check(kind_render)

    assert errors == []
    for obj in kind_render.objects:
        if obj["kind"] in kinds.EMULATED:
            assert kinds.unsupported_fields(obj) == [], kinds.describe(obj)


def test_the_kind_render_lists_what_only_a_cluster_enforces(kind_render: Render) -> None:
    _errors, skipped = hooks.check(kind_render)

    expected = {
        kinds.describe(o)
        for o in kind_render.objects
        if o["kind"] in {"NetworkPolicy", "PodDisruptionBudget", "Role", "RoleBinding"}
    }
    listed = {line.split(":")[0] for line in skipped}
    assert expected <= listed
    assert "NetworkPolicy/polyframe-users-fastapi-default-deny" in listed
    assert "PodDisruptionBudget/polyframe-users-fastapi" in listed
    assert "Role/polyframe-e2e" in listed
    assert "RoleBinding/polyframe-e2e" in listed
    assert (
        "NetworkPolicy/polyframe-users-fastapi-web: traffic is not filtered "
        "(a CNI enforces NetworkPolicy)"
    ) in skipped
    # nothing the runner does run is in the list, bar headless Services (served, with a note)
    assert all(line.split("/")[0] in kinds.NOT_EMULATED or "headless" in line for line in skipped)


# -- what the runner refuses --------------------------------------------------------------------


def test_an_unsupported_pod_field_is_an_error_naming_the_object_and_the_field(
    kind_render: Render,
) -> None:
    deployment = _deployment(kind_render)
    deployment["metadata"]["name"] = "with-affinity"
    deployment["spec"]["template"]["spec"]["affinity"] = {"podAntiAffinity": {}}
    deployment["spec"]["template"]["spec"]["hostNetwork"] = True

    errors, _ = hooks.check(_with(kind_render, deployment))

    assert errors == [
        "Deployment/with-affinity: field spec.template.spec.affinity is not implemented by the "
        "release runner",
        "Deployment/with-affinity: field spec.template.spec.hostNetwork is not implemented by the "
        "release runner",
    ]


def test_an_unsupported_container_field_names_its_index(kind_render: Render) -> None:
    deployment = _deployment(kind_render)
    deployment["spec"]["template"]["spec"]["containers"][0]["stdin"] = True
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    env[4]["valueFrom"]["resourceFieldRef"] = {"resource": "limits.memory"}

    assert kinds.unsupported_fields(deployment) == [
        "spec.template.spec.containers[0].env[4].valueFrom.resourceFieldRef",
        "spec.template.spec.containers[0].stdin",
    ]


def test_a_field_of_the_wrong_shape_is_an_error() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"ports": {"http": 80}, "selector": {"a": "b"}},
    }

    assert kinds.unsupported_fields(service) == ["spec.ports (expected a list)"]


def test_an_unknown_kind_is_an_error(kind_render: Render) -> None:
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "polyframe"},
        "spec": {"schedule": "0 3 * * *"},
    }

    errors, _ = hooks.check(_with(kind_render, cron))

    assert errors == ["CronJob/nightly: the kind CronJob is not implemented by the release runner"]


def test_a_behaviour_annotation_is_an_error(kind_render: Render) -> None:
    ingress = kind_render.get("Ingress", "polyframe")
    assert ingress is not None
    changed = copy.deepcopy(ingress)
    changed["metadata"]["name"] = "with-middleware"
    changed["metadata"].setdefault("annotations", {})[
        "traefik.ingress.kubernetes.io/router.middlewares"
    ] = "polyframe-strip@kubernetescrd"

    errors, _ = hooks.check(_with(kind_render, changed))

    assert errors == [
        "Ingress/with-middleware: field metadata.annotations["
        "traefik.ingress.kubernetes.io/router.middlewares] is not implemented by the release "
        "runner"
    ]


def test_helm_annotations_other_than_the_hooks_are_errors() -> None:
    secret = {
        "kind": "Secret",
        "metadata": {
            "name": "kept",
            "annotations": {
                "helm.sh/hook": "pre-install",
                "helm.sh/hook-weight": "-5",
                "helm.sh/hook-delete-policy": "before-hook-creation",
                "helm.sh/resource-policy": "keep",
                "checksum/config": "abc",  # informational: allowed
            },
        },
    }

    assert kinds.unsupported_fields(secret) == ["metadata.annotations[helm.sh/resource-policy]"]


def test_a_hook_event_the_runner_does_not_run_is_an_error(kind_render: Render) -> None:
    job = _workload(kind_render, "Job", "users-fastapi", "migrate")
    job["metadata"]["name"] = "cleanup"
    job["metadata"]["annotations"] = {"helm.sh/hook": "pre-install, pre-delete"}

    errors, _ = hooks.check(_with(kind_render, job))

    assert errors == ["Job/cleanup: hook pre-delete is not implemented by the release runner"]


# -- Helm's order -------------------------------------------------------------------------------


def _hook(kind: str, name: str, events: str, weight: str | None = None) -> dict[str, Any]:
    annotations = {"helm.sh/hook": events}
    if weight is not None:
        annotations["helm.sh/hook-weight"] = weight
    return {"kind": kind, "metadata": {"name": name, "annotations": annotations}}


def test_hooks_of_order_by_weight_then_name_over_kind_order() -> None:
    objects = [
        _hook("Job", "migrate", "pre-install,pre-upgrade"),
        _hook("Secret", "b-secret", "pre-install", "-20"),
        _hook("ServiceAccount", "a-account", "pre-install", "-20"),
        _hook("StatefulSet", "db", "pre-install", "-15"),
        _hook("Job", "late", "pre-install", "5"),
        _hook("Job", "seed", "post-install"),
        _hook("Pod", "test", "test"),
        {"kind": "Deployment", "metadata": {"name": "web"}},
        # same weight and name: Helm's kind order decides (ConfigMap before Job)
        _hook("Job", "same", "pre-install", "1"),
        _hook("ConfigMap", "same", "pre-install", "1"),
    ]

    order = [(o["kind"], o["metadata"]["name"]) for o in hooks.hooks_of(objects, "pre-install")]

    assert order == [
        ("ServiceAccount", "a-account"),
        ("Secret", "b-secret"),
        ("StatefulSet", "db"),
        ("Job", "migrate"),
        ("ConfigMap", "same"),
        ("Job", "same"),
        ("Job", "late"),
    ]
    assert [o["metadata"]["name"] for o in hooks.hooks_of(objects, "post-install")] == ["seed"]
    assert [o["metadata"]["name"] for o in hooks.hooks_of(objects, "test")] == ["test"]
    assert hooks.hooks_of(objects, "pre-delete") == []


def test_the_kind_renders_hooks_are_events_the_runner_runs(kind_render: Render) -> None:
    implemented = {"pre-install", "post-install", "pre-upgrade", "post-upgrade", "test"}
    found = [o for o in kind_render.objects if hooks.is_hook(o)]

    events = {
        event.strip()
        for o in found
        for event in o["metadata"]["annotations"]["helm.sh/hook"].split(",")
    }
    assert events <= implemented
    # helm test: one readiness Pod per service
    assert sorted(o["metadata"]["name"] for o in hooks.hooks_of(kind_render.objects, "test")) == [
        "polyframe-admin-django-test-readiness",
        "polyframe-legacy-flask-test-readiness",
        "polyframe-users-fastapi-test-readiness",
    ]


def test_the_kind_render_installs_in_helms_kind_order(kind_render: Render) -> None:
    installed = sorted(
        (o for o in kind_render.objects if not hooks.is_hook(o)),
        key=lambda o: hooks.kind_rank(o["kind"]),
    )

    kinds_in_order = list(dict.fromkeys(o["kind"] for o in installed))
    for before, after in [
        ("Secret", "StatefulSet"),
        ("ConfigMap", "StatefulSet"),
        ("ServiceAccount", "Deployment"),
        ("Service", "Deployment"),
        ("StatefulSet", "Job"),
        ("Deployment", "Ingress"),
    ]:
        assert kinds_in_order.index(before) < kinds_in_order.index(after), (before, after)


def test_kind_rank_follows_helms_install_order() -> None:
    kinds_in_order = [
        "Namespace",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Role",
        "RoleBinding",
        "Service",
        "Pod",
        "Deployment",
        "HorizontalPodAutoscaler",
        "StatefulSet",
        "Job",
        "CronJob",
        "Ingress",
    ]

    ranks = [hooks.kind_rank(kind) for kind in kinds_in_order]

    assert ranks == sorted(ranks)
    assert len(set(ranks)) == len(ranks)
    # kinds Helm does not know come last
    assert hooks.kind_rank("ServiceMonitor") == hooks.kind_rank("HTTPRoute")
    assert hooks.kind_rank("ServiceMonitor") > hooks.kind_rank("ValidatingWebhookConfiguration")


def test_pod_containers_of_each_workload_kind(kind_render: Render) -> None:
    job = _workload(kind_render, "Job", "users-fastapi", "migrate")
    pod = kind_render.get("Pod", "polyframe-users-fastapi-test-readiness")
    assert pod is not None

    spec = job["spec"]["template"]["spec"]
    assert hooks.pod_containers(job) == [*spec.get("initContainers", []), *spec["containers"]]
    assert hooks.pod_containers(job)[-1]["name"] == "migrate"
    assert [c["name"] for c in hooks.pod_containers(pod)] == ["readiness"]
    assert hooks.pod_containers({"kind": "Service", "spec": {}}) == []


def test_a_kind_only_a_cluster_enforces_is_listed_and_not_run(tmp_path: Path) -> None:
    release = runner.Release(
        Render("polyframe", "polyframe", [], {}),
        engine=SimpleNamespace(name="podman"),  # type: ignore[arg-type]
        state_dir=tmp_path,
    )
    release.controllers = SimpleNamespace()  # type: ignore[assignment]
    release.proxies = SimpleNamespace()  # type: ignore[assignment]
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "polyframe-users-fastapi", "namespace": "polyframe"},
        "spec": {"endpoints": [{"port": "metrics"}]},
    }

    release.apply(monitor)  # a cluster without the operator would refuse it; the runner lists it


def test_what_is_not_emulated_is_summarized_by_kind_and_reason() -> None:
    skipped = [
        "NetworkPolicy/a-web: traffic is not filtered",
        "Role/polyframe-e2e: enforced only for the e2e token",
        "NetworkPolicy/b-web: traffic is not filtered",
    ]

    assert hooks.summarize(skipped) == [
        "NetworkPolicy (2): traffic is not filtered — a-web, b-web",
        "Role (1): enforced only for the e2e token — polyframe-e2e",
    ]


def test_a_known_field_set_to_a_value_the_runner_does_not_implement_is_an_error(
    kind_render: Render,
) -> None:
    deployment = copy.deepcopy(next(o for o in kind_render.objects if o["kind"] == "Deployment"))
    spec = deployment["spec"]["template"]["spec"]
    del spec["enableServiceLinks"]  # unset is true: Service variables the runner never sets
    spec["containers"][0]["imagePullPolicy"] = "Always"

    found = kinds.unsupported_fields(deployment)

    assert found == [
        "spec.template.spec.enableServiceLinks (only false is implemented)",
        "spec.template.spec.containers[0].imagePullPolicy Always (the runner never pulls)",
    ]


def _web_deployment(kind_render: Render) -> dict[str, Any]:
    found = next(
        o
        for o in kind_render.objects
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "polyframe-users-fastapi"
    )
    return copy.deepcopy(found)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda d: _container(d)["securityContext"].update(privileged=True),
            "securityContext.privileged (privileged containers are not run)",
        ),
        (
            lambda d: (
                _container(d)["securityContext"].pop("runAsUser"),
                d["spec"]["template"]["spec"]["securityContext"].pop("runAsUser"),
            ),
            "runAsGroup without runAsUser (not implemented)",
        ),
        (
            lambda d: _container(d)["securityContext"].update(
                seccompProfile={"type": "Localhost", "localhostProfile": "x.json"}
            ),
            "seccompProfile Localhost (RuntimeDefault, Unconfined only)",
        ),
        (
            lambda d: _container(d)["env"].append(
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.schedulerName"}}}
            ),
            "env[NODE]: fieldRef spec.schedulerName",
        ),
        (
            lambda d: _container(d)["volumeMounts"].append({"name": "ghost", "mountPath": "/x"}),
            "volumeMounts[ghost]: no such volume in the pod",
        ),
        (
            lambda d: _container(d)["volumeMounts"][0].update(subPath="../../etc"),
            "subPath leaves the volume",
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"][0][
                "secret"
            ]["items"][0].update(path="/etc/passwd"),
            "item path '/etc/passwd' leaves the volume",
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["volumes"][1]["emptyDir"].update(
                medium="Memory"
            ),
            "emptyDir.medium (only the node's disk is implemented)",
        ),
        (
            lambda d: _container(d)["readinessProbe"]["httpGet"].update(port="web"),
            "readinessProbe: no container port named 'web'",
        ),
        (lambda d: d["metadata"].update(name="Web_1"), "metadata.name 'Web_1' (not a DNS-1123"),
    ],
)
def test_a_value_the_runner_would_only_meet_at_run_time_fails_before_anything_runs(
    kind_render: Render, change: Any, problem: str
) -> None:
    """What would make pods fail over and over (and a Deployment replace them for ever) is
    found by the check, naming the field."""
    deployment = _web_deployment(kind_render)
    assert kinds.unsupported_fields(deployment) == []
    change(deployment)

    found = kinds.unsupported_fields(deployment)

    assert any(problem in line for line in found), found


def test_a_service_of_another_type_than_cluster_ip_is_an_error(kind_render: Render) -> None:
    service = copy.deepcopy(next(o for o in kind_render.objects if o["kind"] == "Service"))
    service["spec"]["type"] = "NodePort"

    assert kinds.unsupported_fields(service) == [
        "spec.type NodePort (only ClusterIP is implemented)"
    ]


def test_test_success_is_a_test_hook_and_delete_policies_default_as_helm() -> None:
    legacy = {
        "kind": "Pod",
        "metadata": {"name": "old-style", "annotations": {"helm.sh/hook": "test-success"}},
    }
    modern = {
        "kind": "Pod",
        "metadata": {
            "name": "new-style",
            "annotations": {"helm.sh/hook": "test", "helm.sh/hook-delete-policy": "hook-succeeded"},
        },
    }

    assert [h["metadata"]["name"] for h in hooks.hooks_of([legacy, modern], "test")] == [
        "new-style",
        "old-style",
    ]
    assert hooks.delete_policies(legacy) == {"before-hook-creation"}
    assert hooks.delete_policies(modern) == {"hook-succeeded"}
