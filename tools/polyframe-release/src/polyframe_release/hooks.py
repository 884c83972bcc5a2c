"""Helm's side of an install: the order of kinds, the hooks of an event in Helm's order and
their delete policies, and the check of a render against what the release runner implements.
"""

from __future__ import annotations

from typing import Any

from polyframe_release import kinds
from polyframe_release.render import Render

#: Helm's install order of kinds (pkg/release/util/kind_sorter.go); others come last.
INSTALL_ORDER = (
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
)
HOOK = "helm.sh/hook"
HOOK_WEIGHT = "helm.sh/hook-weight"
HOOK_DELETE = "helm.sh/hook-delete-policy"
#: The hook events of an install (upgrade hooks are never due: each run is an install) and of
#: helm test; and the delete policies, as Helm applies them.
HOOK_EVENTS = frozenset(
    {"pre-install", "post-install", "pre-upgrade", "post-upgrade", "test", "test-success"}
)
HOOK_DELETE_POLICIES = frozenset({"before-hook-creation", "hook-succeeded", "hook-failed"})


def kind_rank(kind: str) -> int:
    return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)


def hooks_of(objects: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    """The hooks of ``event`` in the order Helm runs them: by weight, ties by name (a stable
    sort over Helm's kind order)."""
    # Helm reads test-success as test.
    wanted = {event, *({"test-success"} if event == "test" else set())}
    found = [o for o in objects if wanted & set(hook_events(o))]
    found.sort(key=lambda o: kind_rank(o["kind"]))
    found.sort(
        key=lambda o: (
            int((o["metadata"].get("annotations") or {}).get(HOOK_WEIGHT, "0")),
            o["metadata"]["name"],
        )
    )
    return found


def hook_events(obj: dict[str, Any]) -> list[str]:
    text = (obj["metadata"].get("annotations") or {}).get(HOOK) or ""
    return [event.strip() for event in text.split(",") if event.strip()]


def delete_policies(obj: dict[str, Any]) -> set[str]:
    """A hook's delete policies; Helm's default is before-hook-creation."""
    text = (obj["metadata"].get("annotations") or {}).get(HOOK_DELETE) or "before-hook-creation"
    return {policy.strip() for policy in text.split(",") if policy.strip()}


def is_hook(obj: dict[str, Any]) -> bool:
    return HOOK in (obj["metadata"].get("annotations") or {})


def check(render: Render) -> tuple[list[str], list[str]]:
    """(errors, not emulated): every object and field the runner would not run as rendered."""
    errors, skipped = [], []
    for obj in render.objects:
        kind = obj.get("kind", "?")
        if kind in kinds.NOT_EMULATED:
            skipped.append(f"{kinds.describe(obj)}: {kinds.NOT_EMULATED[kind]}")
            continue
        if kind == "Service" and (obj.get("spec") or {}).get("clusterIP") == "None":
            skipped.append(
                f"{kinds.describe(obj)}: headless, served like the others (one address that "
                "reaches a ready pod), not by one DNS record per pod"
            )
        if kind not in kinds.EMULATED:
            errors.append(
                f"{kinds.describe(obj)}: the kind {kind} is not implemented by the release runner"
            )
            continue
        for path in kinds.unsupported_fields(obj):
            errors.append(
                f"{kinds.describe(obj)}: field {path} is not implemented by the release runner"
            )
        for hook in hook_events(obj):
            if hook not in HOOK_EVENTS:
                errors.append(
                    f"{kinds.describe(obj)}: hook {hook} is not implemented by the release runner"
                )
        for policy in delete_policies(obj) - HOOK_DELETE_POLICIES if is_hook(obj) else set():
            errors.append(
                f"{kinds.describe(obj)}: hook delete policy {policy} is not implemented by the "
                "release runner"
            )
    return errors, skipped


def summarize(skipped: list[str]) -> list[str]:
    """``Kind/name: why`` lines grouped by kind and why: ``Kind (n): why — names``."""
    groups: dict[tuple[str, str], list[str]] = {}
    for line in skipped:
        what, _, why = line.partition(": ")
        kind, _, name = what.partition("/")
        groups.setdefault((kind, why), []).append(name)
    return [
        f"{kind} ({len(names)}): {why} — {', '.join(names)}"
        for (kind, why), names in groups.items()
    ]


def pod_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    kind = obj.get("kind")
    if kind == "Pod":
        spec = obj["spec"]
    elif kind in {"Deployment", "StatefulSet", "Job"}:
        spec = obj["spec"]["template"]["spec"]
    else:
        return []
    return [*(spec.get("initContainers") or []), *spec["containers"]]
