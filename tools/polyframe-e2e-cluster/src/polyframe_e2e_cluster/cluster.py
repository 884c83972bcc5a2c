"""The Helm release in a cluster, read through the official ``kubernetes`` client: the rollout
wait and the live checks the cluster-only tests make.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from polyframe_e2e_cluster.describe import (
    ClusterNotReadyError,
    Problem,
    Rollout,
    api_error,
    controller_kind,
    created,
    describe_deployment,
    describe_event,
    describe_pod,
    find_condition,
    selects,
    sorted_events,
)
from polyframe_e2e_cluster.settings import (
    IN_CLUSTER,
    IN_CLUSTER_NAMESPACE_FILE,
    ClusterSettings,
    rbac_text,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

LOG_TAIL_LINES = 5000
#: Seconds (connect, read) any one API call may take: a hung API server is an error, not a hang.
REQUEST_TIMEOUT = (10, 30)
EVENTS_PER_OBJECT = 5
#: The label every object of a Helm release of the Polyframe charts carries.
INSTANCE_LABEL = "app.kubernetes.io/instance"
#: Where the Polyframe charts say which service and which part of it an object is.
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
HOOK_ANNOTATION = "helm.sh/hook"


def connect(settings: ClusterSettings) -> Cluster:
    """A :class:`Cluster` on the API the settings name (kubeconfig context or in-cluster)."""
    from kubernetes import client, config

    if settings.context == IN_CLUSTER:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        api = client.ApiClient(configuration)
        namespace = settings.namespace
        if namespace is None:
            namespace = IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
        return Cluster(api, namespace, settings.release)
    api = config.new_client_from_config(
        config_file=settings.kubeconfig, context=settings.context, persist_config=False
    )
    namespace = settings.namespace
    if namespace is None:
        contexts, _current = config.list_kube_config_contexts(config_file=settings.kubeconfig)
        found: dict[str, Any] = next((c for c in contexts if c["name"] == settings.context), {})
        namespace = (found.get("context") or {}).get("namespace") or "default"
    return Cluster(api, namespace, settings.release)


class Cluster:
    """The Helm release ``release`` in ``namespace``, through the official client."""

    def __init__(self, api: ApiClient, namespace: str, release: str) -> None:
        from kubernetes import client

        self.api = api
        self.namespace = namespace
        self.release = release
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.policy = client.PolicyV1Api(api)

    def __str__(self) -> str:
        return f"release {self.release} in namespace {self.namespace}"

    def close(self) -> None:
        self.api.close()

    @property
    def selector(self) -> str:
        return f"{INSTANCE_LABEL}={self.release}"

    # -- reading ------------------------------------------------------------------------------

    def deployments(self) -> list[Any]:
        found = self.apps.list_namespaced_deployment(
            self.namespace, label_selector=self.selector, _request_timeout=REQUEST_TIMEOUT
        )
        return sorted(found.items, key=lambda d: d.metadata.name)

    def pods(self) -> list[Any]:
        found = self.core.list_namespaced_pod(
            self.namespace, label_selector=self.selector, _request_timeout=REQUEST_TIMEOUT
        )
        return sorted(found.items, key=lambda p: p.metadata.name)

    def jobs(self) -> list[Any]:
        found = self.batch.list_namespaced_job(
            self.namespace, label_selector=self.selector, _request_timeout=REQUEST_TIMEOUT
        )
        return sorted(found.items, key=lambda j: j.metadata.name)

    def disruption_budgets(self) -> list[Any]:
        found = self.policy.list_namespaced_pod_disruption_budget(
            self.namespace, label_selector=self.selector, _request_timeout=REQUEST_TIMEOUT
        )
        return sorted(found.items, key=lambda b: b.metadata.name)

    def events(self) -> list[Any]:
        """Every event of the namespace, oldest first (Kubernetes keeps about an hour's)."""
        return sorted_events(
            self.core.list_namespaced_event(self.namespace, _request_timeout=REQUEST_TIMEOUT).items
        )

    def pod_log(self, pod: str, container: str, *, previous: bool = False) -> str:
        return str(
            self.core.read_namespaced_pod_log(
                pod,
                self.namespace,
                container=container,
                previous=previous,
                tail_lines=LOG_TAIL_LINES,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )

    def web_deployment(self, service: str) -> Any:
        """The web Deployment of ``service`` (its chart's name), or None."""
        for deployment in self.deployments():
            labels = deployment.metadata.labels or {}
            if labels.get(NAME_LABEL) == service and labels.get(COMPONENT_LABEL) == "web":
                return deployment
        return None

    def pods_of(self, deployment: Any) -> list[Any]:
        """The running (not terminating) Pods a Deployment's selector selects."""
        return [
            pod
            for pod in self.pods()
            if pod.metadata.deletion_timestamp is None
            and selects(deployment.spec.selector, pod.metadata.labels or {})
        ]

    # -- rollout ------------------------------------------------------------------------------

    def rollout(self) -> Rollout:
        """One look: every Deployment rolled out, every Pod of the workloads ready?"""
        look = Rollout()
        deployments = self.deployments()
        if not deployments:
            look.problems.append(
                Problem(
                    "Namespace",
                    self.namespace,
                    f"no Deployment labelled {self.selector} in namespace {self.namespace}: is "
                    f"the release installed there? (helm status {self.release} -n "
                    f"{self.namespace})",
                )
            )
        for deployment in deployments:
            problem, hopeless = describe_deployment(deployment)
            if problem is not None:
                look.problems.append(Problem("Deployment", deployment.metadata.name, problem))
                look.hopeless |= hopeless
        for pod in self.pods():
            # Jobs (migrations, hooks) and `helm test` pods are checked by their own tests;
            # a pod on its way out is replaced by the rollout, which is judged above.
            if controller_kind(pod) not in ("ReplicaSet", "StatefulSet"):
                continue
            if pod.metadata.deletion_timestamp is not None:
                continue
            ready = find_condition(pod.status.conditions if pod.status else None, "Ready")
            if ready is None or ready.status != "True":
                look.problems.append(
                    Problem("Pod", pod.metadata.name, "\n".join(describe_pod(pod)))
                )
        return look

    def explain(self, look: Rollout, *, waited: float | None = None) -> str:
        """The rollout's problems and the recent events of the objects they are about."""
        now = datetime.now(UTC)
        head = f"{self} is not ready"
        if waited is not None:
            head += f" after {waited:.0f}s"
        lines = [head + ":"]
        try:
            events = self.events()
        except Exception as exc:  # the problems matter more than the events
            events = []
            lines.append(f"(events unavailable: {api_error(exc)})")
        for problem in look.problems:
            lines.append(f"- {problem.text}")
            # A Deployment's own events, and its ReplicaSets' (which say why no Pod could be
            # created: quota, admission); a Pod's own.
            related = [
                e
                for e in events
                if (e.involved_object.kind, e.involved_object.name) == (problem.kind, problem.name)
                or (
                    problem.kind == "Deployment"
                    and e.involved_object.kind == "ReplicaSet"
                    and (e.involved_object.name or "").startswith(f"{problem.name}-")
                )
            ]
            warnings = [e for e in related if e.type == "Warning"] or related
            for event in warnings[-EVENTS_PER_OBJECT:]:
                lines.append(f"    event: {describe_event(event, now)}")
        return "\n".join(lines)

    def wait_until_ready(
        self,
        timeout: float,
        *,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> float:
        """Wait until :meth:`rollout` finds nothing wrong; return the seconds waited.

        Raises :class:`ClusterNotReadyError` with :meth:`explain`'s message at the deadline, at
        once when Kubernetes has given up on a Deployment, and at once when the API refuses
        (401, 403, 404: waiting cannot fix credentials or RBAC).
        """
        started = clock()
        deadline = started + timeout
        last_error = ""
        while True:
            try:
                look = self.rollout()
            except Exception as exc:  # reported, or retried until the deadline
                status = getattr(exc, "status", None)
                if status in (401, 403, 404):
                    raise ClusterNotReadyError(
                        f"{self}: the Kubernetes API refused: {api_error(exc)}\n"
                        f"This plugin needs, in namespace {self.namespace}: {rbac_text()}"
                    ) from exc
                last_error = api_error(exc)
                look = None
            if look is not None and look.ready:
                return clock() - started
            now = clock()
            if look is not None and (look.hopeless or now >= deadline):
                raise ClusterNotReadyError(self.explain(look, waited=now - started))
            if look is None and now >= deadline:
                raise ClusterNotReadyError(
                    f"{self}: the Kubernetes API did not answer within {timeout:g}s: {last_error}"
                )
            sleep(max(0.0, min(interval, deadline - now)))

    # -- live checks --------------------------------------------------------------------------

    def unfinished_jobs(self) -> list[str]:
        """Jobs of the release that did not complete, each with why (a Job on its way out, the
        previous revision's that Helm deletes after an upgrade, is not judged)."""
        problems = []
        for job in self.jobs():
            if job.metadata.deletion_timestamp is not None:
                continue
            conditions = {c.type: c for c in (job.status.conditions if job.status else None) or []}
            complete = conditions.get("Complete")
            if complete is not None and complete.status == "True":
                continue
            failed = conditions.get("Failed")
            if failed is not None and failed.status == "True":
                why = f"failed: {failed.reason or ''} {failed.message or ''}".rstrip()
            else:
                active = job.status.active if job.status else 0
                why = f"not complete ({active or 0} active, {job.status.failed or 0} failed pods)"
            problems.append(f"Job {job.metadata.name}: {why}")
        return problems

    def migration_jobs(self) -> dict[str, Any]:
        """The release's migration Job of each service (their charts' name label): its newest.

        The charts name each Job after the release revision that created it
        (``<release>-<service>-migrate-<revision>``); an upgrade creates the new one and Helm
        deletes the previous one, which may linger a moment (being deleted, or older).
        """
        newest: dict[str, Any] = {}
        for job in self.jobs():
            labels = job.metadata.labels or {}
            if labels.get(COMPONENT_LABEL) != "migrate" or job.metadata.deletion_timestamp:
                continue
            service = labels.get(NAME_LABEL, "?")
            if service not in newest or created(job) > created(newest[service]):
                newest[service] = job
        return newest

    def services(self) -> list[str]:
        """The services of the release: the charts of its web Deployments."""
        return sorted(
            (d.metadata.labels or {}).get(NAME_LABEL, "?")
            for d in self.deployments()
            if (d.metadata.labels or {}).get(COMPONENT_LABEL) == "web"
        )

    def pods_not_restricted(self) -> list[str]:
        """Every container of every live Pod of the release that may run as root or write its
        root file system, read from the Pod specs (and, where the kubelet reports it, the
        user the container really runs as)."""
        problems = []
        for pod in self.pods():
            pod_context = pod.spec.security_context
            pod_non_root = pod_context.run_as_non_root if pod_context else None
            pod_user = pod_context.run_as_user if pod_context else None
            statuses = {
                s.name: s
                for s in [
                    *((pod.status.init_container_statuses if pod.status else None) or []),
                    *((pod.status.container_statuses if pod.status else None) or []),
                ]
            }
            for container in [*(pod.spec.init_containers or []), *pod.spec.containers]:
                at = f"Pod {pod.metadata.name} container {container.name}"
                context = container.security_context
                non_root = (
                    context.run_as_non_root
                    if context and context.run_as_non_root is not None
                    else pod_non_root
                )
                user = context.run_as_user if context and context.run_as_user is not None else None
                user = pod_user if user is None else user
                if non_root is not True:
                    problems.append(f"{at}: runAsNonRoot is {non_root}")
                if user in (None, 0):
                    problems.append(f"{at}: runAsUser is {user} (the image decides, or root)")
                if not (context and context.read_only_root_filesystem is True):
                    problems.append(f"{at}: the root file system is writable")
                status = statuses.get(container.name)
                linux = status.user.linux if status is not None and status.user else None
                if linux is not None and linux.uid == 0:
                    problems.append(f"{at}: the kubelet reports it runs as uid 0")
        return problems

    def helm_test_pods(self) -> list[Any]:
        return [
            pod
            for pod in self.pods()
            if (pod.metadata.annotations or {}).get(HOOK_ANNOTATION) == "test"
        ]

    def pod_loss_skip_reason(self, service: str) -> str | None:
        """Why losing one web Pod of ``service`` would be an outage (so the check skips), or
        None: two ready replicas or more, and a PodDisruptionBudget that selects them."""
        deployment = self.web_deployment(service)
        if deployment is None:
            return f"no web Deployment of {service} in {self}"
        replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        needs = (
            "the pod-loss check needs two replicas and a PodDisruptionBudget "
            "(replicaCount: 2 and podDisruptionBudget.enabled, as deploy/kind/values.yaml sets)"
        )
        if replicas < 2:
            return f"{service} runs {replicas} replica: losing it is an outage; {needs}"
        labels = deployment.spec.template.metadata.labels or {}
        if not any(selects(b.spec.selector, labels) for b in self.disruption_budgets()):
            return f"{service} has no PodDisruptionBudget; {needs}"
        return None

    def disruption_budget_of(self, deployment: Any) -> Any:
        labels = deployment.spec.template.metadata.labels or {}
        return next(
            (b for b in self.disruption_budgets() if selects(b.spec.selector, labels)), None
        )

    def delete_pod(self, name: str) -> None:
        """Delete a Pod gracefully (its own termination grace period, preStop included)."""
        self.core.delete_namespaced_pod(name, self.namespace, _request_timeout=REQUEST_TIMEOUT)

    def pod_exists(self, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.read_namespaced_pod(name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- diagnostics --------------------------------------------------------------------------
