"""Cluster mode of the e2e suite, on the official ``kubernetes`` client: a pytest plugin.

``tests/e2e/conftest.py`` registers this module (by path: with ``--import-mode=importlib`` no
test folder is importable, and a conftest below the root may not name ``pytest_plugins``).
Outside a cluster it does nothing but hand out skip reasons. When the suite runs against a
cluster, that is with ``E2E_BASE_URL`` (the ingress) and ``E2E_KUBE_CONTEXT`` (a kubeconfig
context, or ``in-cluster`` for the Pod's own ServiceAccount), it:

* waits, before the first test, until every Deployment of the Helm release has rolled out and
  every Pod of its workloads is ready, or fails naming what is not ready and why (Deployment
  conditions, Pod conditions, container states and waiting reasons, restarts, last exit, and
  the objects' recent events) instead of timing out silently;
* on any failing test, collects the release's Pod logs (and the previous container's, after a
  restart), the namespace's recent events and the Deployments', Jobs' and
  PodDisruptionBudgets' status into ``E2E_DIAGNOSTICS_DIR``, for CI to upload;
* hands out the ``cluster`` fixture (a :class:`Cluster`) to the cluster-only tests, which
  skip with a clear reason outside a cluster.

Environment (all optional outside a cluster):

========================  ==========================================================================
``E2E_BASE_URL``          the platform's ingress (the suite starts nothing)
``E2E_KUBE_CONTEXT``      a context of ``$KUBECONFIG`` (or ``~/.kube/config``), or ``in-cluster``
``E2E_KUBE_NAMESPACE``    the release's namespace (default: the context's, or the Pod's own)
``E2E_HELM_RELEASE``      the Helm release (default ``polyframe``)
``E2E_ROLLOUT_TIMEOUT``   seconds to wait for the rollout (default 300)
``E2E_DIAGNOSTICS_DIR``   where diagnostics go on a failure (default ``test-artifacts/e2e-cluster``)
========================  ==========================================================================
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

BASE_URL_ENV = "E2E_BASE_URL"
CONTEXT_ENV = "E2E_KUBE_CONTEXT"
NAMESPACE_ENV = "E2E_KUBE_NAMESPACE"
RELEASE_ENV = "E2E_HELM_RELEASE"
TIMEOUT_ENV = "E2E_ROLLOUT_TIMEOUT"
DIAGNOSTICS_ENV = "E2E_DIAGNOSTICS_DIR"
#: ``E2E_KUBE_CONTEXT=in-cluster``: the ServiceAccount token a Pod mounts.
IN_CLUSTER = "in-cluster"
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_RELEASE = "polyframe"
DEFAULT_TIMEOUT = 300.0
DEFAULT_DIAGNOSTICS = Path("test-artifacts") / "e2e-cluster"
#: Diagnostics snapshots per run: the first failures say the most; later ones are listed only.
MAX_SNAPSHOTS = 5
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
#: What this plugin asks of the Kubernetes API in the release's namespace, as RBAC rules
#: (apiGroup, resources, verbs). The polyframe chart's e2e Role (``e2eRunner``) grants exactly
#: these (tests/deploy checks it); the fake API of the plugin's own tests refuses anything else.
RBAC_RULES = (
    ("", ("pods", "pods/log", "events"), ("get", "list", "watch")),
    ("apps", ("deployments",), ("get", "list", "watch")),
    ("batch", ("jobs",), ("get", "list", "watch")),
    # Whether a service may lose a pod: two replicas and a PodDisruptionBudget allowing it.
    ("policy", ("poddisruptionbudgets",), ("get", "list", "watch")),
    # Only for the pod-loss check, which deletes one web Pod of each service.
    ("", ("pods",), ("delete",)),
)


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSettings:
    """Cluster mode, from the environment."""

    base_url: str
    #: A kubeconfig context, or ``in-cluster``.
    context: str
    #: None: the context's namespace (kubeconfig), or the Pod's own (in-cluster).
    namespace: str | None
    release: str
    rollout_timeout: float
    diagnostics_dir: Path
    #: ``$KUBECONFIG`` (one path or several, ``:``-separated); None: ``~/.kube/config``.
    kubeconfig: str | None = None


def cluster_settings(env: Mapping[str, str]) -> ClusterSettings | None:
    """The cluster mode's settings, or None when the suite does not run against a cluster.

    Raises ValueError, naming the variable, for a contradictory or malformed environment.
    """
    base_url = env.get(BASE_URL_ENV, "").strip().rstrip("/")
    context = env.get(CONTEXT_ENV, "").strip()
    if not context:
        return None
    if not base_url:
        raise ValueError(
            f"{CONTEXT_ENV}={context} names a cluster but {BASE_URL_ENV} is not set: cluster "
            f"mode drives the platform through its ingress; set {BASE_URL_ENV} too "
            "(make kind-e2e sets both)"
        )
    raw_timeout = env.get(TIMEOUT_ENV, "").strip() or str(DEFAULT_TIMEOUT)
    try:
        timeout = float(raw_timeout)
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise ValueError(f"{TIMEOUT_ENV}={raw_timeout!r}: a number of seconds above 0")
    return ClusterSettings(
        base_url=base_url,
        context=context,
        namespace=env.get(NAMESPACE_ENV, "").strip() or None,
        release=env.get(RELEASE_ENV, "").strip() or DEFAULT_RELEASE,
        rollout_timeout=timeout,
        diagnostics_dir=Path(env.get(DIAGNOSTICS_ENV, "").strip() or DEFAULT_DIAGNOSTICS),
        kubeconfig=env.get("KUBECONFIG") or None,
    )


def outside_cluster_reason(env: Mapping[str, str]) -> str:
    """Why a cluster-only check skips in this environment."""
    if not env.get(BASE_URL_ENV, "").strip():
        return (
            "cluster-only check: the suite runs against the local platform (processes, no "
            f"Kubernetes API); set {BASE_URL_ENV} (the ingress) and {CONTEXT_ENV} (a kubeconfig "
            f"context, or {IN_CLUSTER}) to run it against a cluster"
        )
    return (
        f"cluster-only check: {BASE_URL_ENV} is set but {CONTEXT_ENV} is not, so there is no "
        "Kubernetes API to read the release from; set it to a kubeconfig context (kind: "
        f"kind-polyframe), or to {IN_CLUSTER} inside a Pod"
    )


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
        found = next((c for c in contexts if c["name"] == settings.context), {})
        namespace = (found.get("context") or {}).get("namespace") or "default"
    return Cluster(api, namespace, settings.release)


# -- what the API says, in words -----------------------------------------------------------------


class ClusterNotReadyError(Exception):
    """The release did not roll out (or the API refused to say): the message says why."""


@dataclass(frozen=True)
class Problem:
    """What keeps one object of the release from being ready."""

    kind: str
    name: str
    #: One line, or several (a Pod and its containers).
    text: str


@dataclass
class Rollout:
    """One look at the release: what is not ready yet, and whether waiting can still help."""

    problems: list[Problem] = field(default_factory=list)
    #: Kubernetes itself gave up (ProgressDeadlineExceeded): waiting longer cannot help.
    hopeless: bool = False

    @property
    def ready(self) -> bool:
        return not self.problems


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "?"
    seconds = max(0, int((now - moment).total_seconds()))
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago"


def describe_container(status: Any, *, init: bool = False) -> str:
    """``container web: waiting CrashLoopBackOff (back-off …), 4 restarts, last: Error exit 1``."""
    kind = "init container" if init else "container"
    parts = []
    state = status.state
    if state is not None and state.waiting is not None:
        waiting = f"waiting {state.waiting.reason or ''}".rstrip()
        if state.waiting.message:
            waiting += f" ({state.waiting.message})"
        parts.append(waiting)
    elif state is not None and state.terminated is not None:
        ended = state.terminated
        parts.append(f"terminated {ended.reason or ''}, exit code {ended.exit_code}".strip())
        if ended.message:
            parts.append(ended.message.strip()[:300])
    elif state is not None and state.running is not None:
        parts.append("running" + ("" if status.ready else ", not ready"))
    if status.restart_count:
        parts.append(f"{status.restart_count} restart{'s' if status.restart_count != 1 else ''}")
    last = status.last_state.terminated if status.last_state is not None else None
    if last is not None:
        text = f"last: {last.reason or 'terminated'}, exit code {last.exit_code}"
        if last.message:
            text += f" ({last.message.strip()[:300]})"
        parts.append(text)
    pulling = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName")
    waiting = state.waiting if state is not None else None
    if status.image and waiting is not None and waiting.reason in pulling:
        parts.append(f"image {status.image}")
    return f"{kind} {status.name}: {', '.join(parts) or 'no state yet'}"


def _condition(conditions: Iterable[Any] | None, kind: str) -> Any:
    return next((c for c in conditions or () if c.type == kind), None)


def describe_pod(pod: Any) -> list[str]:
    """Why a Pod is not ready: its phase, failing conditions, and every container's state."""
    status = pod.status
    phase = (status.phase if status else None) or "Unknown"
    head = f"Pod {pod.metadata.name}: {phase}"
    if status is not None and status.reason:
        head += f" ({status.reason}: {status.message or ''})".replace(": )", ")")
    ready = _condition(status.conditions if status else None, "Ready")
    if ready is not None and ready.status != "True":
        head += ", not ready"
        if ready.reason:
            head += f" ({ready.reason})"
    lines = [head]
    for condition in (status.conditions if status else None) or []:
        if condition.type in ("PodScheduled", "Initialized") and condition.status != "True":
            lines.append(
                f"  {condition.type} {condition.status}: {condition.reason or ''} "
                f"{condition.message or ''}".rstrip()
            )
    for container in (status.init_container_statuses if status else None) or []:
        if not (container.state and container.state.terminated and not container.restart_count):
            lines.append("  " + describe_container(container, init=True))
    for container in (status.container_statuses if status else None) or []:
        lines.append("  " + describe_container(container))
    return lines


def describe_deployment(deployment: Any) -> tuple[str | None, bool]:
    """What keeps a Deployment from having rolled out (as ``kubectl rollout status`` judges),
    or None; and whether Kubernetes has given up on it (ProgressDeadlineExceeded)."""
    name = deployment.metadata.name
    want = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    status = deployment.status
    if status is None:
        return f"Deployment {name}: no status yet", False
    generation = deployment.metadata.generation or 0
    if (status.observed_generation or 0) < generation:
        return (
            f"Deployment {name}: its controller has not seen generation {generation} yet "
            f"(observed {status.observed_generation or 0})",
            False,
        )
    conditions = "; ".join(
        f"{c.type} {c.status}: {c.reason or ''}{' - ' + c.message if c.message else ''}"
        for c in status.conditions or []
        if c.status != "True" or c.type == "Progressing"
    )
    progressing = _condition(status.conditions, "Progressing")
    if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        return f"Deployment {name}: stuck, Kubernetes gave up ({conditions})", True
    updated = status.updated_replicas or 0
    total = status.replicas or 0
    available = status.available_replicas or 0
    if updated < want:
        problem = f"{updated} of {want} replicas updated"
    elif total > updated:
        problem = f"{total - updated} old replica(s) still running"
    elif available < updated:
        problem = f"{available} of {updated} updated replicas available"
    else:
        return None, False
    return f"Deployment {name}: {problem} ({conditions or 'no conditions'})", False


def _event_time(event: Any) -> datetime | None:
    moment = event.last_timestamp or event.event_time or event.first_timestamp
    if moment is None and event.series is not None:
        moment = event.series.last_observed_time
    if moment is None:
        moment = event.metadata.creation_timestamp
    return moment  # type: ignore[no-any-return]


def _event_count(event: Any) -> int:
    if event.series is not None and event.series.count:
        return int(event.series.count)
    return int(event.count or 1)


def describe_event(event: Any, now: datetime) -> str:
    count = _event_count(event)
    times = f" x{count}" if count > 1 else ""
    target = f"{event.involved_object.kind}/{event.involved_object.name}"
    return (
        f"{event.type or 'Normal'} {event.reason or ''}{times} ({_ago(_event_time(event), now)}) "
        f"{target}: {(event.message or '').strip()}"
    )


def _sorted_events(events: Iterable[Any]) -> list[Any]:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return sorted(events, key=lambda e: _event_time(e) or epoch)


def _selects(selector: Any, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (the client's model) against a set of labels."""
    if selector is None:
        return False
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.match_expressions or []:
        present, values = expression.key in labels, expression.values or []
        if expression.operator == "In" and labels.get(expression.key) not in values:
            return False
        if expression.operator == "NotIn" and labels.get(expression.key) in values:
            return False
        if expression.operator == "Exists" and not present:
            return False
        if expression.operator == "DoesNotExist" and present:
            return False
    return True


def _created(obj: Any) -> datetime:
    """When an object was created (the oldest possible moment if the API did not say)."""
    return obj.metadata.creation_timestamp or datetime.min.replace(tzinfo=UTC)


def _controller_kind(pod: Any) -> str | None:
    for owner in pod.metadata.owner_references or []:
        if owner.controller:
            return str(owner.kind)
    return None


# -- the cluster ---------------------------------------------------------------------------------


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
        return _sorted_events(
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
            and _selects(deployment.spec.selector, pod.metadata.labels or {})
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
            if _controller_kind(pod) not in ("ReplicaSet", "StatefulSet"):
                continue
            if pod.metadata.deletion_timestamp is not None:
                continue
            ready = _condition(pod.status.conditions if pod.status else None, "Ready")
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
            lines.append(f"(events unavailable: {_api_error(exc)})")
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
                        f"{self}: the Kubernetes API refused: {_api_error(exc)}\n"
                        f"This plugin needs, in namespace {self.namespace}: {_rbac_text()}"
                    ) from exc
                last_error = _api_error(exc)
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
            if service not in newest or _created(job) > _created(newest[service]):
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
        if not any(_selects(b.spec.selector, labels) for b in self.disruption_budgets()):
            return f"{service} has no PodDisruptionBudget; {needs}"
        return None

    def disruption_budget_of(self, deployment: Any) -> Any:
        labels = deployment.spec.template.metadata.labels or {}
        return next(
            (b for b in self.disruption_budgets() if _selects(b.spec.selector, labels)), None
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

    def collect_diagnostics(self, folder: Path) -> Path:
        """Pod logs, recent events and the workloads' status of the release, into ``folder``.

        Never raises for what the API refuses: each refusal is written to ``errors.txt``.
        """
        folder.mkdir(parents=True, exist_ok=True)
        errors: list[str] = []
        now = datetime.now(UTC)

        def attempt(what: str, action: Callable[[], None]) -> None:
            try:
                action()
            except Exception as exc:  # diagnostics must never hide the failure
                errors.append(f"{what}: {_api_error(exc)}")

        def dump(name: str, objects: list[Any]) -> None:
            data = self.api.sanitize_for_serialization(objects)
            (folder / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

        def summary() -> None:
            look = self.rollout()
            text = "ready" if look.ready else self.explain(look)
            (folder / "summary.txt").write_text(
                f"{self}, at {now.isoformat(timespec='seconds')}\n{text}\n"
            )

        def deployments() -> None:
            found = self.deployments()
            dump("deployments.json", found)
            lines = []
            for deployment in found:
                problem, _ = describe_deployment(deployment)
                status = deployment.status
                lines.append(
                    f"{deployment.metadata.name}: {deployment.spec.replicas} wanted, "
                    f"{status.updated_replicas or 0} updated, {status.ready_replicas or 0} ready, "
                    f"{status.available_replicas or 0} available"
                    + (f"\n  {problem}" if problem else "")
                )
                for condition in status.conditions or []:
                    lines.append(
                        f"  {condition.type} {condition.status}: {condition.reason or ''} "
                        f"{condition.message or ''}".rstrip()
                    )
            (folder / "deployments.txt").write_text("\n".join(lines) + "\n")

        def pods() -> None:
            found = self.pods()
            dump("pods.json", found)
            lines = [line for pod in found for line in describe_pod(pod)]
            (folder / "pods.txt").write_text("\n".join(lines) + "\n")
            for pod in found:
                statuses = [
                    *((pod.status.init_container_statuses if pod.status else None) or []),
                    *((pod.status.container_statuses if pod.status else None) or []),
                ]
                for status in statuses:
                    logs = folder / "logs" / pod.metadata.name
                    logs.mkdir(parents=True, exist_ok=True)
                    name = status.name
                    if (
                        status.state is not None
                        and status.state.waiting is not None
                        and not (status.restart_count)
                    ):
                        continue  # never started: nothing to read
                    attempt(
                        f"log of {pod.metadata.name}/{name}",
                        lambda p=pod.metadata.name, c=name, d=logs: (d / f"{c}.log").write_text(
                            self.pod_log(p, c)
                        ),
                    )
                    if status.restart_count:
                        attempt(
                            f"previous log of {pod.metadata.name}/{name}",
                            lambda p=pod.metadata.name, c=name, d=logs: (
                                d / f"{c}.previous.log"
                            ).write_text(self.pod_log(p, c, previous=True)),
                        )

        def events() -> None:
            found = self.events()
            dump("events.json", found)
            text = "\n".join(describe_event(e, now) for e in found[-500:])
            (folder / "events.txt").write_text(text + "\n")

        def jobs() -> None:
            dump("jobs.json", self.jobs())

        def budgets() -> None:
            dump("poddisruptionbudgets.json", self.disruption_budgets())

        for what, action in (
            ("summary", summary),
            ("deployments", deployments),
            ("pods and logs", pods),
            ("events", events),
            ("jobs", jobs),
            ("poddisruptionbudgets", budgets),
        ):
            attempt(what, action)
        if errors:
            (folder / "errors.txt").write_text("\n".join(errors) + "\n")
        return folder


def _api_error(exc: BaseException) -> str:
    """An ApiException as ``403 Forbidden: <the server's message>``; anything else as repr."""
    status = getattr(exc, "status", None)
    if status is None:
        return repr(exc)
    message = getattr(exc, "body", None) or ""
    with contextlib.suppress(ValueError, TypeError):
        message = json.loads(message).get("message", message)
    return f"{status} {getattr(exc, 'reason', '')}: {message}".strip()


def _rbac_text() -> str:
    return "; ".join(
        f"{'/'.join(verbs)} on {', '.join(resources)}" + (f" ({group})" if group else "")
        for group, resources, verbs in RBAC_RULES
    )


# -- the plugin ------------------------------------------------------------------------------------


@dataclass
class _State:
    settings: ClusterSettings | None
    reason: str
    cluster: Cluster | None = None
    snapshots: int = 0
    failures: list[str] = field(default_factory=list)
    #: The rollout did not finish: every test errors with it; one snapshot is enough.
    rollout_failed: bool = False
    rollout_snapshot: str | None = None


_STATE = pytest.StashKey[_State]()


def pytest_configure(config: pytest.Config) -> None:
    try:
        settings = cluster_settings(os.environ)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.stash[_STATE] = _State(settings, outside_cluster_reason(os.environ))


def pytest_report_header(config: pytest.Config) -> str | None:
    state = config.stash.get(_STATE, None)
    if state is None or state.settings is None:
        return None
    s = state.settings
    namespace = s.namespace or "(the context's)"
    return (
        f"cluster mode: {s.base_url}, kube context {s.context}, namespace {namespace}, "
        f"release {s.release}; diagnostics on failure into {s.diagnostics_dir}"
    )


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Cluster:
    """The release in the cluster, every Deployment rolled out and every Pod ready.

    Skips, with the reason, outside a cluster; fails, naming what is not ready and why, when
    the rollout does not finish within ``E2E_ROLLOUT_TIMEOUT``.
    """
    state = pytestconfig.stash[_STATE]
    if state.settings is None:
        pytest.skip(state.reason)
    if state.cluster is None:
        try:
            state.cluster = connect(state.settings)
        except Exception as exc:  # any configuration error, said plainly
            pytest.fail(
                f"cannot reach the Kubernetes API of context {state.settings.context}: "
                f"{_api_error(exc)}",
                pytrace=False,
            )
    try:
        state.cluster.wait_until_ready(state.settings.rollout_timeout)
    except ClusterNotReadyError as exc:
        state.rollout_failed = True
        pytest.fail(str(exc), pytrace=False)
    return state.cluster


@pytest.fixture(autouse=True)
def _cluster_rolled_out(request: pytest.FixtureRequest) -> None:
    """In cluster mode, no test starts before the release has rolled out."""
    state = request.config.stash.get(_STATE, None)
    if state is not None and state.settings is not None:
        request.getfixturevalue("cluster")


@pytest.fixture(scope="session")
def cluster_mode(pytestconfig: pytest.Config) -> ClusterSettings | None:
    """The cluster mode's settings, or None outside a cluster."""
    return pytestconfig.stash[_STATE].settings


@pytest.fixture(scope="session")
def cluster_plugin() -> ModuleType:
    """This module (its :class:`Cluster`, settings and descriptions), for the plugin's own
    tests: test modules cannot import it."""
    return sys.modules[__name__]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On any failure in cluster mode: the release's logs, events and status, for CI."""
    report: pytest.TestReport = yield
    state = item.config.stash.get(_STATE, None)
    if report.failed and state is not None and state.settings is not None:
        where = _snapshot(state, item.nodeid, report.when)
        report.sections.append(("cluster diagnostics", where))
    return report


def _snapshot(state: _State, nodeid: str, when: str) -> str:
    assert state.settings is not None
    root = state.settings.diagnostics_dir
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    if state.cluster is None:
        where = "not collected: the Kubernetes API was never reached (see the failure)"
    elif when == "setup" and state.rollout_failed and state.rollout_snapshot is not None:
        where = f"the rollout failure, collected into {state.rollout_snapshot}"
    elif state.snapshots >= MAX_SNAPSHOTS:
        where = f"not collected: {MAX_SNAPSHOTS} snapshots taken already (see {root})"
    else:
        state.snapshots += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[-120:].strip("_")
        folder = state.cluster.collect_diagnostics(root / f"{state.snapshots:02d}-{safe}")
        where = f"collected into {folder}"
        if when == "setup" and state.rollout_failed:
            state.rollout_snapshot = str(folder)
    state.failures.append(f"{stamp} {nodeid} ({when}): {where}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "failures.txt").write_text("\n".join(state.failures) + "\n")
    return where


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None and state.cluster is not None:
        state.cluster.close()
        state.cluster = None
