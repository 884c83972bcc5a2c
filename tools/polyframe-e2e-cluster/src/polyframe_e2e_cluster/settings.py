"""Cluster mode's settings: the E2E_* environment, read once, and the access the plugin needs.

The variables are listed in this package's README.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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


def rbac_text() -> str:
    """RBAC_RULES in words: what to grant when the API refuses."""
    return "; ".join(
        f"{'/'.join(verbs)} on {', '.join(resources)}" + (f" ({group})" if group else "")
        for group, resources, verbs in RBAC_RULES
    )
