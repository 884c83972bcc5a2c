"""Policies over the rendered objects of every chart and values file.

Pod Security Standard "restricted", probes, resources, graceful termination, ServiceAccounts,
selectors, named ports, backends, image tags, namespaces, ServiceMonitors and hooks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml


def load_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


REPO_ROOT = Path(__file__).resolve().parents[2]
HELM_DIR = REPO_ROOT / "deploy" / "helm"
#: Volume types the restricted Pod Security Standard allows.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip
#: Where each long-running container is probed: port name -> (startup, liveness, readiness) paths,
#: the first port of these a container has (web servers that also serve their master's metrics on
#: port `metrics` are probed on `http`).
PROBED = {
    "http": ("/healthz", "/healthz", "/readyz"),  # the web servers
    # The outbox dispatchers: /metrics answers from its own thread (started, scrapable), /livez
    # only while the loop completes rounds.
    "metrics": ("/metrics", "/livez", "/metrics"),
}
#: Where gunicorn's master serves the merged metrics of its workers: PROMETHEUS_MULTIPROC_DIR and
#: <PREFIX>_METRICS_BIND (service_kit.gunicorn), for the services served by gunicorn.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
GUNICORN_PREFIX = {"legacy-flask": "ORDERS", "admin-django": "ADMIN"}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Does a LabelSelector (matchLabels and matchExpressions) select these labels?"""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


# -- Pod Security Standard "restricted" --------------------------------------------------------


def check_every_pod_is_restricted(rendered: Any) -> None:
    pods = rendered.pods()
    assert pods, f"{rendered}: no pod"
    for manifest, spec, _labels in pods:
        where = str(manifest)
        pod_context = spec.get("securityContext") or {}
        assert pod_context.get("runAsNonRoot") is True, where
        assert (pod_context.get("runAsUser") or 0) > 0, where
        assert (pod_context.get("seccompProfile") or {}).get("type") == "RuntimeDefault", where
        for host in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
            assert not spec.get(host), f"{where}: {host}"
        for volume in spec.get("volumes") or []:
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUMES, f"{where}: volume {volume['name']} is {kinds}"
        for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
            at = f"{where} container {container['name']}"
            context = container.get("securityContext") or {}
            assert context.get("allowPrivilegeEscalation") is False, at
            assert context.get("privileged") is not True, at
            assert context.get("readOnlyRootFilesystem") is True, at
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, at
            assert context.get("runAsUser", pod_context.get("runAsUser")) not in (None, 0), at
            capabilities = context.get("capabilities") or {}
            assert "ALL" in (capabilities.get("drop") or []), at
            assert set(capabilities.get("add") or []) <= {"NET_BIND_SERVICE"}, at
            seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile")) or {}
            assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), at
            for port in container.get("ports") or []:
                assert "hostPort" not in port, at


def check_every_container_has_requests_and_limits(rendered: Any) -> None:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3, "": 1}

    def quantity(value: Any) -> float:
        match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|m|)", str(value))
        assert match, value
        return float(match.group(1)) * units[match.group(2)]

    for manifest, spec, _labels in rendered.pods():
        for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
            at = f"{manifest} container {container['name']}"
            resources = container.get("resources") or {}
            for resource in ("cpu", "memory"):
                request = (resources.get("requests") or {}).get(resource)
                limit = (resources.get("limits") or {}).get(resource)
                assert request is not None, f"{at}: no {resource} request"
                assert limit is not None, f"{at}: no {resource} limit"
                assert quantity(request) <= quantity(limit), f"{at}: {resource} request > limit"


# -- probes and termination --------------------------------------------------------------------


def check_every_long_running_container_has_probes(rendered: Any) -> None:
    for manifest, spec, _labels in rendered.pods():
        if manifest.kind not in ("Deployment", "StatefulSet"):
            continue
        for container in spec["containers"]:
            at = f"{manifest} container {container['name']}"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in container, f"{at}: no {probe}"
            ports = {p["name"] for p in container.get("ports") or []}
            for port, paths in PROBED.items():
                if port not in ports:
                    continue
                for probe, path in zip(
                    ("startupProbe", "livenessProbe", "readinessProbe"), paths, strict=True
                ):
                    assert container[probe]["httpGet"] == {"path": path, "port": port}, (at, probe)
                break


def _drain_seconds(chart: str, values: dict[str, Any]) -> float:
    """How long the service's server takes after SIGTERM (its own configuration): the
    readiness drain (serving on, ``/readyz`` failing), then the wait for in-flight requests."""
    from service_kit.settings import ServiceSettings

    readiness_drain = float(ServiceSettings.model_fields["drain_seconds"].default)
    if chart == "users-fastapi":
        return readiness_drain + int(values.get("server", {}).get("gracefulShutdownSeconds", 15))
    module = {"legacy-flask": "legacy_flask", "admin-django": "admin_django"}[chart]
    import importlib

    graceful = int(importlib.import_module(f"{module}.gunicorn_conf").graceful_timeout)
    return readiness_drain + graceful


def check_web_pods_terminate_gracefully(rendered: Any) -> None:
    for manifest, spec, labels in rendered.pods():
        if manifest.kind != "Deployment" or labels.get("app.kubernetes.io/component") != "web":
            continue
        chart = labels["app.kubernetes.io/name"]
        (container,) = spec["containers"]
        sleep = container["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep", manifest
        drain = _drain_seconds(chart, {})
        assert spec["terminationGracePeriodSeconds"] > int(sleep[1]) + drain, manifest


# -- identity ----------------------------------------------------------------------------------


def check_every_pod_has_its_own_service_account_without_token(rendered: Any) -> None:
    accounts = {m.name: m for m in rendered.of_kind("ServiceAccount")}
    for account in accounts.values():
        assert account.obj.get("automountServiceAccountToken") is False, account
    for manifest, spec, _labels in rendered.pods():
        name = spec.get("serviceAccountName")
        assert name, f"{manifest}: no ServiceAccount"
        assert name != "default", f"{manifest}: no own ServiceAccount"
        assert name in accounts, f"{manifest}: ServiceAccount {name} is not rendered"
        assert spec.get("automountServiceAccountToken") is False, manifest


# -- selectors, ports, backends ------------------------------------------------------------------


def check_workload_selectors_match_their_pod_labels(rendered: Any) -> None:
    for manifest in rendered.of_kind("Deployment", "StatefulSet"):
        selector = manifest.obj["spec"]["selector"]
        labels = manifest.obj["spec"]["template"]["metadata"]["labels"]
        assert selector["matchLabels"], manifest
        assert _selects(selector, labels), manifest
        # Only stable labels select: never the chart version or the app version.
        assert not set(selector["matchLabels"]) & {"helm.sh/chart", "app.kubernetes.io/version"}


def check_workloads_do_not_select_each_others_pods(rendered: Any) -> None:
    workloads = rendered.of_kind("Deployment", "StatefulSet")
    for manifest in workloads:
        for other in workloads:
            if other is not manifest:
                labels = other.obj["spec"]["template"]["metadata"]["labels"]
                assert not _selects(manifest.obj["spec"]["selector"], labels), (manifest, other)


def check_every_service_targets_a_named_container_port_of_its_pods(rendered: Any) -> None:
    for service in rendered.of_kind("Service"):
        selected = [
            (m, spec)
            for m, spec, labels in rendered.pods()
            if m.kind in ("Deployment", "StatefulSet")
            and _selects({"matchLabels": service.obj["spec"]["selector"]}, labels)
        ]
        assert len(selected) == 1, f"{service}: selects {[str(m) for m, _ in selected]}"
        (_workload, spec) = selected[0]
        names = {p["name"] for c in spec["containers"] for p in c.get("ports") or []}
        for port in service.obj["spec"]["ports"]:
            assert isinstance(port["targetPort"], str), f"{service}: targetPort must be a name"
            assert port["targetPort"] in names, f"{service}: no container port {port['targetPort']}"
            assert port.get("name"), f"{service}: unnamed port"


def check_disruption_budgets_and_autoscalers_target_rendered_workloads(rendered: Any) -> None:
    pods = rendered.pods()
    for budget in rendered.of_kind("PodDisruptionBudget"):
        assert any(
            m.kind == "Deployment" and _selects(budget.obj["spec"]["selector"], labels)
            for m, _spec, labels in pods
        ), budget
    for scaler in rendered.of_kind("HorizontalPodAutoscaler"):
        target = scaler.obj["spec"]["scaleTargetRef"]
        deployment = rendered.named(target["kind"], target["name"])
        assert "replicas" not in deployment.obj["spec"], f"{deployment}: replicas fight the HPA"


def check_network_policies_select_rendered_pods(rendered: Any) -> None:
    pods = rendered.pods()
    for policy in rendered.of_kind("NetworkPolicy"):
        assert any(
            _selects(policy.obj["spec"]["podSelector"], labels) for _m, _s, labels in pods
        ), policy


def check_ingress_and_httproute_backends_exist(rendered: Any) -> None:
    services = {m.name: m for m in rendered.of_kind("Service")}
    for ingress in rendered.of_kind("Ingress"):
        for rule in ingress.obj["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services, f"{ingress}: no Service {backend['name']}"
                ports = {p["name"] for p in services[backend["name"]].obj["spec"]["ports"]}
                assert backend["port"]["name"] in ports, f"{ingress}: {backend}"
    for route in rendered.of_kind("HTTPRoute"):
        for rule in route.obj["spec"]["rules"]:
            for ref in rule["backendRefs"]:
                assert ref["name"] in services, f"{route}: no Service {ref['name']}"
                ports = {p["port"] for p in services[ref["name"]].obj["spec"]["ports"]}
                assert ref["port"] in ports, f"{route}: {ref}"


def check_service_monitors_select_their_services_and_ports(rendered: Any) -> None:
    services = rendered.of_kind("Service")
    for monitor in rendered.of_kind("ServiceMonitor"):
        if monitor.obj["spec"].get("namespaceSelector"):
            # Another namespace's Service (Traefik's): test_cluster_observability checks it
            # against the Service the Traefik chart renders.
            continue
        selected = [s for s in services if _selects(monitor.obj["spec"]["selector"], s.labels)]
        assert len(selected) == 1, f"{monitor}: selects {[str(s) for s in selected]}"
        ports = {p["name"] for p in selected[0].obj["spec"]["ports"]}
        for endpoint in monitor.obj["spec"]["endpoints"]:
            assert endpoint["port"] in ports, f"{monitor}: no port {endpoint['port']}"
            assert endpoint["path"] == "/metrics", monitor


def _is_gunicorn(chart: str) -> bool:
    """Served by gunicorn: the service has a gunicorn configuration module."""
    import importlib.util

    module = chart.replace("-", "_")
    return importlib.util.find_spec(f"{module}.gunicorn_conf") is not None


def check_metrics_are_scraped_where_they_are_served(rendered: Any) -> None:
    """gunicorn's master serves the merged metrics on port `metrics`; uvicorn on `http`.

    For a gunicorn service's web pods: <PREFIX>_METRICS_BIND is 0.0.0.0 on the container port
    named `metrics`; PROMETHEUS_MULTIPROC_DIR is a folder of the /tmp emptyDir that is mounted
    (a subPath, so it exists before gunicorn starts); one worker process. The Service has the
    port `metrics`, the ServiceMonitor scrapes it (not `http`). users-fastapi (one uvicorn
    process, exemplars) has none of that and is scraped on `http`. No other container of the
    release runs in multiprocess mode (the dispatchers serve their own /metrics).
    """
    services = rendered.of_kind("Service")
    monitors = rendered.of_kind("ServiceMonitor")
    checked = 0
    for manifest, spec, labels in rendered.pods():
        chart = labels.get("app.kubernetes.io/name", "")
        web = manifest.kind == "Deployment" and labels.get("app.kubernetes.io/component") == "web"
        for container in containers_of(spec):
            at = f"{manifest} container {container['name']}"
            env = {e["name"]: e for e in container.get("env") or []}
            ports = {p["name"]: p["containerPort"] for p in container.get("ports") or []}
            gunicorn = web and _is_gunicorn(chart)
            bind = f"{GUNICORN_PREFIX.get(chart, '?')}_METRICS_BIND"
            if not gunicorn:
                assert MULTIPROC_ENV not in env, f"{at}: multiprocess mode"
                assert not any(n.endswith("_METRICS_BIND") and "OUTBOX" not in n for n in env), at
                if web:
                    assert "metrics" not in ports, f"{at}: a metrics port nothing serves"
                continue
            checked += 1
            assert env[f"{GUNICORN_PREFIX[chart]}_WORKERS"]["value"] == "1", at
            assert "metrics" in ports, f"{at}: no container port `metrics`"
            assert ports["metrics"] != ports["http"], at
            assert env[bind]["value"] == f"0.0.0.0:{ports['metrics']}", f"{at}: {bind}"
            folder = env[MULTIPROC_ENV]["value"]
            volumes = {v["name"]: v for v in spec["volumes"]}
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert folder in mounts, f"{at}: {folder} is not mounted (it must exist at start)"
            mount = mounts[folder]
            assert "emptyDir" in volumes[mount["name"]], f"{at}: {folder} is not an emptyDir"
            assert mounts.get("/tmp", {}).get("name") == mount["name"], f"{at}: not on /tmp's"
            assert folder.startswith("/tmp/"), at
            assert mount.get("subPath"), f"{at}: {folder} must exist before gunicorn starts"
            assert not mount.get("readOnly"), at
            (service,) = [
                s for s in services if _selects({"matchLabels": s.obj["spec"]["selector"]}, labels)
            ]
            service_ports = {p["name"]: p for p in service.obj["spec"]["ports"]}
            assert "metrics" in service_ports, f"{service}: no port `metrics`"
            assert service_ports["metrics"]["targetPort"] == "metrics", service
            for monitor in monitors:
                if _selects(monitor.obj["spec"]["selector"], service.labels):
                    endpoints = [e["port"] for e in monitor.obj["spec"]["endpoints"]]
                    assert endpoints == ["metrics"], f"{monitor}: scrapes {endpoints}"
    for monitor in monitors:
        chart = monitor.labels["app.kubernetes.io/name"]
        if monitor.labels["app.kubernetes.io/component"] == "web" and not _is_gunicorn(chart):
            assert [e["port"] for e in monitor.obj["spec"]["endpoints"]] == ["http"], monitor
    if rendered.chart in (*GUNICORN_PREFIX, "polyframe"):
        assert checked, f"{rendered}: no gunicorn web container checked"


def containers_of(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(spec.get("initContainers") or []), *spec["containers"]]


# -- forwarded headers ---------------------------------------------------------------------------

#: The variable each web server reads its trusted proxies from (forwarded_allow_ips).
FORWARDED_ALLOW_IPS = ("UVICORN_FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS")


def check_forwarded_headers_are_believed_from_anyone_only_behind_network_policies(
    rendered: Any,
) -> None:
    """A server that believes X-Forwarded-For from anyone (`*`) takes any pod's forged header as
    the client address (users-fastapi's per-address rate limits key on it): only where a
    NetworkPolicy admits nothing but the ingress controller (and the release's own pods,
    Prometheus) to its web pods."""
    policies = rendered.of_kind("NetworkPolicy")
    checked = 0
    for manifest, spec, labels in rendered.pods():
        if labels.get("app.kubernetes.io/component") != "web":
            continue
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        (name,) = [n for n in FORWARDED_ALLOW_IPS if n in env]
        checked += 1
        if "*" not in env[name].split(","):
            continue
        guarding = [
            p
            for p in policies
            if "Ingress" in p.obj["spec"]["policyTypes"]
            and _selects(p.obj["spec"]["podSelector"], labels)
        ]
        assert guarding, f"{manifest}: {name}=* and no NetworkPolicy guards its pods"
        for policy in guarding:
            for rule in policy.obj["spec"].get("ingress") or []:
                assert rule.get("from"), f"{policy}: admits everyone"
    assert checked or not rendered.of_kind("Deployment"), rendered


def test_forwarded_headers_are_believed_from_anyone_only_behind_network_policies(
    rendered: Any,
) -> None:
    check_forwarded_headers_are_believed_from_anyone_only_behind_network_policies(rendered)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "127.0.0.1"),  # no NetworkPolicy: nobody is believed
        ({"networkPolicy": {"enabled": True}}, "*"),  # only the ingress controller reaches it
        ({"server": {"forwardedAllowIps": "10.244.0.0/16"}}, "10.244.0.0/16"),
        (
            {"networkPolicy": {"enabled": True}, "server": {"forwardedAllowIps": "10.0.0.7"}},
            "10.0.0.7",
        ),
    ],
)
@pytest.mark.parametrize("chart", ["users-fastapi", "legacy-flask", "admin-django"])
def test_the_trusted_proxies_follow_the_network_policy_unless_named(
    render: Any, chart: str, values: dict[str, Any], expected: str
) -> None:
    rendered = render(chart, {**values, "database": {"existingSecret": "db"}})
    (web,) = [
        m
        for m in rendered.of_kind("Deployment")
        if m.labels["app.kubernetes.io/component"] == "web"
    ]
    env = {
        e["name"]: e.get("value")
        for e in web.obj["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert [env[n] for n in FORWARDED_ALLOW_IPS if n in env] == [expected]


# -- images and namespaces -----------------------------------------------------------------------


def check_every_image_names_a_version(rendered: Any) -> None:
    for manifest, spec, _labels in rendered.pods():
        for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
            image = container["image"]
            if "@sha256:" in image:
                continue
            repository, _, tag = image.rpartition(":")
            assert repository, f"{manifest}: {image} has no tag"
            assert "/" not in tag, f"{manifest}: {image} has no tag"
            assert tag != "latest", f"{manifest}: {image}"


def check_no_object_has_a_namespace(rendered: Any) -> None:
    """Objects go to the release's namespace: none is hard-coded (and none is templated in)."""
    for manifest in rendered.manifests:
        assert "namespace" not in manifest.obj["metadata"], manifest


def test_no_template_hard_codes_a_namespace() -> None:
    offenders = []
    for template in sorted(HELM_DIR.glob("*/templates/**/*")):
        if template.is_dir():
            continue
        for number, line in enumerate(template.read_text().splitlines(), start=1):
            match = re.match(r"\s*namespace:\s*(\S+)", line)
            if match and not match.group(1).startswith("{{"):
                offenders.append(f"{template.relative_to(HELM_DIR)}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_namespace_follows_the_release(render: Any) -> None:
    """What depends on the namespace (admin-django's host names, the database URL) follows it."""
    other = render("polyframe", {}, namespace="elsewhere", case="elsewhere")
    text = yaml.safe_dump_all([m.obj for m in other.manifests])
    assert "polyframe-admin-django.elsewhere.svc" in text
    assert "polyframe-under-test" not in text


# -- no install or upgrade hooks: the release is its objects --------------------------------------

#: The release revision the cases are rendered at (helm_python renders an install as revision 1).
REVISION = 1


def check_only_test_pods_are_hooks(rendered: Any) -> None:
    """Helm manages only a release's ordinary objects: upgrades patch them in place (no
    delete-and-recreate gap) and `helm uninstall` deletes them. Hooks are none of that, so the
    only hooks are the `helm test` Pods; and no object asks to be kept after uninstall (the
    PostgreSQL volume is a StatefulSet's claim, which Kubernetes keeps by itself)."""
    for manifest in rendered.manifests:
        if manifest.is_hook:
            assert manifest.kind == "Pod", (
                f"{manifest}: a {manifest.annotations['helm.sh/hook']} hook"
            )
            assert manifest.annotations["helm.sh/hook"] == "test", manifest
        assert "helm.sh/resource-policy" not in manifest.annotations, manifest


def _init_names(spec: dict[str, Any]) -> list[str]:
    return [c["name"] for c in spec.get("initContainers") or []]


def check_jobs_belong_to_their_revision(rendered: Any) -> None:
    """Every Job is named for the revision that created it (a Job's pod template cannot change:
    a new revision is a new Job, and Helm deletes the previous one), is kept after it completes
    (no TTL: the e2e suite checks that every migration Job completed), retries failed pods with
    back-off within a deadline, and does not count an evicted pod as a failure."""
    jobs = rendered.of_kind("Job")
    migrate = [j for j in jobs if j.labels.get("app.kubernetes.io/component") == "migrate"]
    charts = (
        {rendered.chart}
        if rendered.chart != "polyframe"
        else {"users-fastapi", "legacy-flask", "admin-django"}
    )
    assert {j.labels["app.kubernetes.io/name"] for j in migrate} == charts
    assert len(migrate) == len(charts)
    for job in jobs:
        component = job.labels["app.kubernetes.io/component"]
        assert job.name.endswith(f"-{component}-{REVISION}"), job
        assert len(job.name) <= 63, job
        spec = job.obj["spec"]
        assert "ttlSecondsAfterFinished" not in spec, f"{job}: deleted after it finishes"
        assert spec["backoffLimit"] >= 1, job
        assert spec["activeDeadlineSeconds"] > 0, job
        (rule,) = spec.get("podFailurePolicy", {}).get("rules") or [None]
        assert rule == {
            "action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
        }, job


def check_nothing_runs_on_an_unmigrated_schema(rendered: Any) -> None:
    """Everything starts at once (PostgreSQL, the migration Jobs, the services): what needs the
    database waits for it, bounded. The migration Job waits for the database to accept
    connections; the web pods are ready only once the migrations are applied (/readyz); the
    outbox dispatchers and the demo-staff Job first wait, in an init container running their
    service's own wait-for-migrations command with their own settings, for the schema."""
    for manifest, spec, labels in rendered.pods():
        component = labels.get("app.kubernetes.io/component")
        inits = _init_names(spec)
        (main,) = spec["containers"]
        if component == "migrate":
            assert inits == ["wait-for-database"], manifest
            (wait,) = spec["initContainers"]
            database = {e["name"]: e for e in main["env"] if e["name"].endswith("_DATABASE_URL")}
            assert [e["name"] for e in wait["env"]] == list(database), manifest
            assert wait["env"] == list(database.values()), manifest
        elif component in ("outbox", "seed"):
            assert inits == ["wait-for-migrations"], f"{manifest}: starts on any schema"
            (wait,) = spec["initContainers"]
            assert wait["image"] == main["image"], manifest
            assert wait["command"][-2] == "--timeout", manifest
            assert float(wait["command"][-1]) > 0, manifest
            assert any("wait" in part and "migrations" in part for part in wait["command"]), wait
            # The same settings and secret files as the container it guards: the same database.
            assert all(e in main["env"] for e in wait["env"]), manifest
            extra = [e["name"] for e in main["env"] if e not in wait["env"]]
            assert all(name.endswith("_OUTBOX_METRICS_BIND") for name in extra), (manifest, extra)
            assert wait["volumeMounts"] == [
                m for m in main["volumeMounts"] if m in wait["volumeMounts"]
            ], manifest
        elif component == "web":
            assert not inits, f"{manifest}: the web pods start at once; /readyz holds them back"
            assert main["readinessProbe"]["httpGet"]["path"] == "/readyz", manifest


def check_every_secret_a_pod_reads_is_rendered_or_named(rendered: Any) -> None:
    """The Secrets the pods read are objects of the release (created with them: a pod whose
    Secret comes a moment later waits in ContainerCreating, it does not fail) or the user's."""
    rendered_secrets = {m.name for m in rendered.of_kind("Secret")}
    values = json.dumps(rendered.values)
    for manifest, names in rendered.secrets_read():
        for name in names:
            assert name in rendered_secrets or name in values, f"{manifest}: Secret {name}"


def test_an_upgrade_is_new_jobs_and_the_same_objects(render: Any) -> None:
    """The next revision's render differs from this one's only in the Jobs' names: nothing else
    changes (so an upgrade without a change restarts no pod), and the new Jobs are the old
    ones under a new name (Helm creates them, deletes the previous revision's)."""
    kind = load_values(REPO_ROOT / "deploy" / "kind" / "values.yaml")
    first = render("polyframe", kind, revision=1)
    second = render("polyframe", kind, revision=2)

    def by_name(rendered: Any) -> dict[tuple[str, str], dict[str, Any]]:
        return {(m.kind, m.name): m.obj for m in rendered.manifests if m.kind != "Secret"}

    old, new = by_name(first), by_name(second)
    jobs = {name for kind, name in old if kind == "Job"}
    assert jobs
    assert {name for kind, name in new if kind == "Job"} == {
        name.removesuffix("-1") + "-2" for name in jobs
    }
    for name in jobs:
        renamed = json.loads(json.dumps(old[("Job", name)]))
        renamed["metadata"]["name"] = name.removesuffix("-1") + "-2"
        assert new.pop(("Job", renamed["metadata"]["name"])) == renamed
        del old[("Job", name)]
    assert new == old
    # Secrets are generated afresh offline; against a cluster `lookup` keeps them (test_secrets).
    assert {m.name for m in first.of_kind("Secret")} == {m.name for m in second.of_kind("Secret")}


def check_test_pods_are_helm_test_hooks(rendered: Any) -> None:
    tests = list(rendered.of_kind("Pod"))
    services = {m.name: m for m in rendered.of_kind("Service")}
    expected = (
        {rendered.chart}
        if rendered.chart != "polyframe"
        else {"users-fastapi", "legacy-flask", "admin-django"}
    )
    assert {t.labels["app.kubernetes.io/name"] for t in tests} == expected
    for pod in tests:
        assert pod.annotations["helm.sh/hook"] == "test", pod
        (container,) = pod.obj["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        match = re.fullmatch(r"http://([a-z0-9-]+):([0-9]+)/readyz", env["READYZ_URL"])
        assert match, env["READYZ_URL"]
        service = services[match.group(1)]
        assert int(match.group(2)) in {p["port"] for p in service.obj["spec"]["ports"]}
        assert service.labels["app.kubernetes.io/name"] == pod.labels["app.kubernetes.io/name"]


@pytest.mark.parametrize("chart", ["users-fastapi", "legacy-flask", "admin-django", "polyframe"])
def test_every_chart_has_notes(chart: str, render_case: Any) -> None:
    rendered = render_case(chart, "default")
    assert rendered.notes.strip(), chart
    assert "helm test" in rendered.notes


# -- the policies, on every chart and values file ------------------------------------------------


def test_every_pod_is_restricted(rendered: Any) -> None:
    check_every_pod_is_restricted(rendered)


def test_every_container_has_requests_and_limits(rendered: Any) -> None:
    check_every_container_has_requests_and_limits(rendered)


def test_every_long_running_container_has_probes(rendered: Any) -> None:
    check_every_long_running_container_has_probes(rendered)


def test_web_pods_terminate_gracefully(rendered: Any) -> None:
    check_web_pods_terminate_gracefully(rendered)


def test_every_pod_has_its_own_service_account_without_token(rendered: Any) -> None:
    check_every_pod_has_its_own_service_account_without_token(rendered)


def test_workload_selectors_match_their_pod_labels(rendered: Any) -> None:
    check_workload_selectors_match_their_pod_labels(rendered)


def test_workloads_do_not_select_each_others_pods(rendered: Any) -> None:
    check_workloads_do_not_select_each_others_pods(rendered)


def test_every_service_targets_a_named_container_port_of_its_pods(rendered: Any) -> None:
    check_every_service_targets_a_named_container_port_of_its_pods(rendered)


def test_disruption_budgets_and_autoscalers_target_rendered_workloads(rendered: Any) -> None:
    check_disruption_budgets_and_autoscalers_target_rendered_workloads(rendered)


def test_network_policies_select_rendered_pods(rendered: Any) -> None:
    check_network_policies_select_rendered_pods(rendered)


def test_ingress_and_httproute_backends_exist(rendered: Any) -> None:
    check_ingress_and_httproute_backends_exist(rendered)


def test_service_monitors_select_their_services_and_ports(rendered: Any) -> None:
    check_service_monitors_select_their_services_and_ports(rendered)


def test_metrics_are_scraped_where_they_are_served(rendered: Any) -> None:
    check_metrics_are_scraped_where_they_are_served(rendered)


def test_every_image_names_a_version(rendered: Any) -> None:
    check_every_image_names_a_version(rendered)


def test_no_object_has_a_namespace(rendered: Any) -> None:
    check_no_object_has_a_namespace(rendered)


def test_only_test_pods_are_hooks(rendered: Any) -> None:
    check_only_test_pods_are_hooks(rendered)


def test_jobs_belong_to_their_revision(rendered: Any) -> None:
    check_jobs_belong_to_their_revision(rendered)


def test_nothing_runs_on_an_unmigrated_schema(rendered: Any) -> None:
    check_nothing_runs_on_an_unmigrated_schema(rendered)


def test_every_secret_a_pod_reads_is_rendered_or_named(rendered: Any) -> None:
    check_every_secret_a_pod_reads_is_rendered_or_named(rendered)


def test_test_pods_are_helm_test_hooks(rendered: Any) -> None:
    check_test_pods_are_helm_test_hooks(rendered)


# -- each policy check can fail: the same checks on broken copies of a render ------------------


def _web(rendered: Any, chart: str = "users-fastapi") -> dict[str, Any]:
    for manifest in rendered.of_kind("Deployment"):
        if (
            manifest.labels["app.kubernetes.io/name"] == chart
            and manifest.labels["app.kubernetes.io/component"] == "web"
        ):
            return manifest.obj  # type: ignore[no-any-return]
    raise AssertionError(f"no web Deployment of {chart}")


def _web_container(rendered: Any) -> dict[str, Any]:
    return _web(rendered)["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def _outbox_container(rendered: Any) -> dict[str, Any]:
    for manifest in rendered.of_kind("Deployment"):
        if manifest.labels["app.kubernetes.io/component"] == "outbox":
            return manifest.obj["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]
    raise AssertionError("no outbox Deployment")


def _first(rendered: Any, kind: str) -> dict[str, Any]:
    return rendered.of_kind(kind)[0].obj  # type: ignore[no-any-return]


def _drop(rendered: Any, kind: str) -> None:
    """Remove the render's objects of ``kind``."""
    rendered.manifests[:] = [m for m in rendered.manifests if m.kind != kind]


def _outbox(rendered: Any) -> dict[str, Any]:
    (outbox,) = [
        m
        for m in rendered.of_kind("Deployment")
        if m.labels["app.kubernetes.io/component"] == "outbox"
    ]
    return outbox.obj  # type: ignore[no-any-return]


BREAKAGES: dict[str, tuple[Any, Any]] = {
    "writable root file system": (
        check_every_pod_is_restricted,
        lambda r: _web_container(r)["securityContext"].pop("readOnlyRootFilesystem"),
    ),
    "hostPath volume": (
        check_every_pod_is_restricted,
        lambda r: _web(r)["spec"]["template"]["spec"]["volumes"].append(
            {"name": "h", "hostPath": {"path": "/"}}
        ),
    ),
    "capability added": (
        check_every_pod_is_restricted,
        lambda r: _web_container(r)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
    ),
    "no memory limit": (
        check_every_container_has_requests_and_limits,
        lambda r: _web_container(r)["resources"]["limits"].pop("memory"),
    ),
    "no readiness probe": (
        check_every_long_running_container_has_probes,
        lambda r: _web_container(r).pop("readinessProbe"),
    ),
    "outbox probed where it serves nothing": (
        check_every_long_running_container_has_probes,
        lambda r: _outbox_container(r)["livenessProbe"]["httpGet"].update(path="/healthz"),
    ),
    "outbox alive on /metrics, which answers while its loop is stuck": (
        check_every_long_running_container_has_probes,
        lambda r: _outbox_container(r)["livenessProbe"]["httpGet"].update(path="/metrics"),
    ),
    "short grace period": (
        check_web_pods_terminate_gracefully,
        lambda r: _web(r)["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=10),
    ),
    "default ServiceAccount": (
        check_every_pod_has_its_own_service_account_without_token,
        lambda r: _web(r)["spec"]["template"]["spec"].update(serviceAccountName="default"),
    ),
    "token mounted": (
        check_every_pod_has_its_own_service_account_without_token,
        lambda r: _web(r)["spec"]["template"]["spec"].update(automountServiceAccountToken=True),
    ),
    "selector misses the pods": (
        check_workload_selectors_match_their_pod_labels,
        lambda r: _web(r)["spec"]["template"]["metadata"]["labels"].update(
            {"app.kubernetes.io/component": "api"}
        ),
    ),
    "selector catches the outbox pods": (
        check_workloads_do_not_select_each_others_pods,
        lambda r: _web(r)["spec"]["selector"]["matchLabels"].pop("app.kubernetes.io/component"),
    ),
    "numeric targetPort": (
        check_every_service_targets_a_named_container_port_of_its_pods,
        lambda r: _first(r, "Service")["spec"]["ports"][0].update(targetPort=8000),
    ),
    "budget selects nothing": (
        check_disruption_budgets_and_autoscalers_target_rendered_workloads,
        lambda r: _first(r, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].update(x="y"),
    ),
    "policy selects nothing": (
        check_network_policies_select_rendered_pods,
        lambda r: _first(r, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"].update(x="y"),
    ),
    "monitor scrapes a port the Service lacks": (
        check_service_monitors_select_their_services_and_ports,
        lambda r: _first(r, "ServiceMonitor")["spec"]["endpoints"][0].update(port="nope"),
    ),
    "latest image": (
        check_every_image_names_a_version,
        lambda r: _web_container(r).update(image="polyframe/users-fastapi:latest"),
    ),
    "hard-coded namespace": (
        check_no_object_has_a_namespace,
        lambda r: _first(r, "Service")["metadata"].update(namespace="default"),
    ),
    "Secret as an install hook": (
        check_only_test_pods_are_hooks,
        lambda r: _first(r, "Secret")["metadata"].update(
            annotations={"helm.sh/hook": "pre-install,pre-upgrade"}
        ),
    ),
    "Service kept after uninstall": (
        check_only_test_pods_are_hooks,
        lambda r: _first(r, "Service")["metadata"].update(
            annotations={"helm.sh/resource-policy": "keep"}
        ),
    ),
    "Job named without its revision": (
        check_jobs_belong_to_their_revision,
        lambda r: _first(r, "Job")["metadata"].update(name="polyframe-users-fastapi-migrate"),
    ),
    "Job deleted when it completes": (
        check_jobs_belong_to_their_revision,
        lambda r: _first(r, "Job")["spec"].update(ttlSecondsAfterFinished=0),
    ),
    "evicted Job pod counted as failed": (
        check_jobs_belong_to_their_revision,
        lambda r: _first(r, "Job")["spec"].pop("podFailurePolicy"),
    ),
    "dispatcher starts on any schema": (
        check_nothing_runs_on_an_unmigrated_schema,
        lambda r: _outbox(r)["spec"]["template"]["spec"].pop("initContainers"),
    ),
    "dispatcher waits with other settings": (
        check_nothing_runs_on_an_unmigrated_schema,
        lambda r: _outbox(r)["spec"]["template"]["spec"]["initContainers"][0]["env"].append(
            {"name": "USERS_DATABASE_URL", "value": "sqlite+aiosqlite:///elsewhere.db"}
        ),
    ),
    "migration without waiting for the database": (
        check_nothing_runs_on_an_unmigrated_schema,
        lambda r: _first(r, "Job")["spec"]["template"]["spec"].pop("initContainers"),
    ),
    "pod reads a Secret nobody creates": (
        check_every_secret_a_pod_reads_is_rendered_or_named,
        lambda r: _first(r, "Secret")["metadata"].update(name="renamed"),
    ),
    "forwarded headers believed without a NetworkPolicy": (
        check_forwarded_headers_are_believed_from_anyone_only_behind_network_policies,
        lambda r: _drop(r, "NetworkPolicy"),
    ),
    "test pod not a hook": (
        check_test_pods_are_helm_test_hooks,
        lambda r: _first(r, "Pod")["metadata"]["annotations"].update(
            {"helm.sh/hook": "post-install"}
        ),
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_each_policy_check_fails_on_a_broken_render(render_case: Any, breakage: str) -> None:
    import copy

    check, breaker = BREAKAGES[breakage]
    broken = copy.deepcopy(render_case("users-fastapi", "all-on"))
    check(broken)  # the render itself passes
    breaker(broken)
    with pytest.raises(AssertionError):
        check(broken)


def _named(rendered: Any, kind: str, chart: str, component: str = "web") -> dict[str, Any]:
    for manifest in rendered.of_kind(kind):
        if (
            manifest.labels["app.kubernetes.io/name"] == chart
            and manifest.labels["app.kubernetes.io/component"] == component
        ):
            return manifest.obj  # type: ignore[no-any-return]
    raise AssertionError(f"no {kind} of {chart} ({component})")


def _gunicorn_web(rendered: Any, chart: str) -> dict[str, Any]:
    return _named(rendered, "Deployment", chart)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    (variable,) = [e for e in container["env"] if e["name"] == name]
    variable["value"] = value


def _drop_mount(spec: dict[str, Any], path: str) -> None:
    container = spec["containers"][0]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["mountPath"] != path]


def _add_multiproc_env(spec: dict[str, Any]) -> None:
    spec["containers"][0]["env"].append(
        {"name": MULTIPROC_ENV, "value": "/tmp/prometheus-multiproc"}
    )


#: Breakages of the metrics wiring of the gunicorn services (rendered: chart all-on).
METRICS_BREAKAGES: dict[str, Any] = {
    "monitor scrapes the workers' http port": lambda r, c: _named(r, "ServiceMonitor", c)["spec"][
        "endpoints"
    ][0].update(port="http"),
    "Service without the metrics port": lambda r, c: _named(r, "Service", c)["spec"].update(
        ports=_named(r, "Service", c)["spec"]["ports"][:1]
    ),
    "master binds loopback": lambda r, c: _set_env(
        _gunicorn_web(r, c)["containers"][0],
        f"{GUNICORN_PREFIX[c]}_METRICS_BIND",
        "127.0.0.1:9100",
    ),
    "master binds another port than `metrics`": lambda r, c: _set_env(
        _gunicorn_web(r, c)["containers"][0], f"{GUNICORN_PREFIX[c]}_METRICS_BIND", "0.0.0.0:9999"
    ),
    "multiprocess folder not mounted": lambda r, c: _drop_mount(
        _gunicorn_web(r, c), "/tmp/prometheus-multiproc"
    ),
    "multiprocess folder on the read-only root": lambda r, c: _set_env(
        _gunicorn_web(r, c)["containers"][0], MULTIPROC_ENV, "/var/run/prometheus"
    ),
    "two workers per pod": lambda r, c: _set_env(
        _gunicorn_web(r, c)["containers"][0], f"{GUNICORN_PREFIX[c]}_WORKERS", "2"
    ),
    "dispatcher in multiprocess mode": lambda r, c: _add_multiproc_env(
        _named(r, "Deployment", "legacy-flask", "outbox")["spec"]["template"]["spec"]
    ),
    "users-fastapi in multiprocess mode": lambda r, c: _add_multiproc_env(
        _gunicorn_web(r, "users-fastapi")
    ),
    "users-fastapi scraped on a port it lacks": lambda r, c: _named(
        r, "ServiceMonitor", "users-fastapi"
    )["spec"]["endpoints"][0].update(port="metrics"),
}


@pytest.mark.parametrize("chart", sorted(GUNICORN_PREFIX))
@pytest.mark.parametrize("breakage", sorted(METRICS_BREAKAGES))
def test_the_metrics_check_fails_on_a_broken_render(
    render_case: Any, breakage: str, chart: str
) -> None:
    import copy

    broken = copy.deepcopy(render_case("polyframe", "all-on"))
    check_metrics_are_scraped_where_they_are_served(broken)  # the render itself passes
    METRICS_BREAKAGES[breakage](broken, chart)
    with pytest.raises(AssertionError):
        check_metrics_are_scraped_where_they_are_served(broken)
